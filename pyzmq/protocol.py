"""The directory protocol (``zmq_server``), carried as ZeroMQ messages; see docs/directory.md.

This module is pure: it turns messages into frames and frames into messages
and does no I/O.  The server, the client and the wiring layer share it.

A request is a two-frame ZeroMQ message sent by a DEALER: a header
(``ZMQW``, the protocol version, a 4-byte request id the client picks) and
a body (one command byte, then the command's fields).  The server's ROUTER
answers with the same header and a reply body.  ZeroMQ delimits and sizes
the messages (``ZMQ_MAXMSGSIZE``), so there is no length prefix of our own.

:func:`encode_header`/:func:`decode_header` handle the header,
:func:`encode_request`/:func:`decode_request` and
:func:`encode_reply`/:func:`decode_reply` the bodies.  Decoding failures
raise :class:`ProtocolError`, a :class:`ValueError` that carries the error
code the server answers with.

The validators (:func:`validate_name`, :func:`validate_address`,
:func:`validate_key`, :func:`validate_kind`, :func:`validate_lease`) are
public so the wiring layer can check user input with the same rules and
messages the directory applies.
"""

import re
import struct
from typing import NamedTuple, Union

DEFAULT_PORT = 5682

# Message and field limits.
MAGIC = b"ZMQW"
VERSION = 2
HEADER_SIZE = 9          # MAGIC, version byte, 4-byte request id
MAX_BODY = 4096
MAX_MESSAGE = HEADER_SIZE + MAX_BODY   # the server's ZMQ_MAXMSGSIZE (per frame)
MAX_REPLY = 65536       # a reply body (LIST pages, WATCH event batches) is at most this
MAX_REPLY_MESSAGE = HEADER_SIZE + MAX_REPLY   # the client's ZMQ_MAXMSGSIZE
MAX_PATTERN = 255       # bytes of UTF-8 of a LIST/WATCH glob pattern
MAX_PAGE = 1000         # entries a LIST page may ask for
MAX_WATCHES_PER_LEASE = 100
MAX_NAME = 255          # bytes of UTF-8
MAX_ADDRESS = 255       # bytes of UTF-8
MAX_HOST = 255          # owner host name, bytes of UTF-8
MAX_PROGRAM = 255       # owner program name, bytes of UTF-8
KEY_LENGTH = 40         # Z85 characters of a CURVE public key
LEASE_LENGTH = 32       # hex digits of a lease id (128 random bits)
MAX_STR_FIELD = 0xFFFF  # what a 2-byte length prefix can express
MAX_ERROR_TEXT = 1024   # bytes; longer error messages are cut

# Server limits.
MAX_NAMES_PER_LEASE = 10_000
MAX_NAMES_PER_CONNECTION = MAX_NAMES_PER_LEASE   # the old name of the limit
MAX_RECORDS = 250_000   # names in the whole directory (sized for 10,000 clients of 10 to 25 names)
MAX_LEASES = 50_000     # leases in the whole directory
MAX_PER_SOURCE = 4096   # connections from one source address (one host may run thousands of instances)
MAX_HANDSHAKING = 256   # connections from one source address still in the ZeroMQ handshake
# A DirectoryClient keeps at most this many requests in flight; the server
# must be able to queue their replies for it, with room as much again for
# watch events, or it shuts the client's connection again at each burst.
CLIENT_MAX_IN_FLIGHT = 100
MIN_QUEUED = 2 * CLIENT_MAX_IN_FLIGHT   # the smallest --max-queued

# Leases (seconds).
DEFAULT_TTL = 4.0       # what a client asks for unless told otherwise
MIN_TTL = 1.0           # the server raises shorter requests to this
MAX_TTL = 300.0         # ... and lowers longer ones to this
RENEW_FRACTION = 4      # a client renews every ttl / RENEW_FRACTION

# ZMTP heartbeats and TCP keepalive on the directory link (both sides).
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
KEEPALIVE_IDLE = 2
KEEPALIVE_INTERVAL = 1
KEEPALIVE_COUNT = 3

# Request command bytes.
LEASE = 0x01
REGISTER = 0x02
LOOKUP = 0x03
UNREGISTER = 0x04
PING = 0x05
KEEPALIVE = 0x06
REVOKE = 0x07
LIST = 0x08
INFO = 0x09
WATCH = 0x0A
UNWATCH = 0x0B

# Reply command bytes.
OK = 0x80
FOUND = 0x81
ERROR = 0x82
PONG = 0x83
GRANTED = 0x84
LISTED = 0x85
INFO_REPLY = 0x86
EVENTS = 0x87

# WATCH modes and event types.
GLOB = 0
EXACT = 1
ADDED = "+"
REMOVED = "-"
CHANGED = "~"
EVENT_TYPES = (ADDED, REMOVED, CHANGED)

# Error codes carried by ERROR replies.
MALFORMED = 1
UNKNOWN_COMMAND = 2
DUPLICATE = 3
NOT_FOUND = 4
NOT_OWNER = 5
BAD_VERSION = 6
BAD_HELLO = BAD_VERSION  # the code's name before the protocol was carried by ZeroMQ
LIMIT = 7
AUTH = 8
NO_LEASE = 9

ERROR_NAMES = {
    MALFORMED: "MALFORMED",
    UNKNOWN_COMMAND: "UNKNOWN_COMMAND",
    DUPLICATE: "DUPLICATE",
    NOT_FOUND: "NOT_FOUND",
    NOT_OWNER: "NOT_OWNER",
    BAD_VERSION: "BAD_VERSION",
    LIMIT: "LIMIT",
    AUTH: "AUTH",
    NO_LEASE: "NO_LEASE",
}

# Kinds of global objects.
EXCHANGE = "E"
QUEUE = "Q"
KINDS = (EXCHANGE, QUEUE)

Z85_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_SET = frozenset(Z85_ALPHABET)

_HEADER = struct.Struct(">4sBI")
_HEADER_START = MAGIC + bytes([VERSION])   # what every valid header starts with
_STRLEN = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class ProtocolError(ValueError):
    """Bytes that break the protocol.  ``code`` is the ERROR code to answer with."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# Messages

class Lease(NamedTuple):
    """Ask for a lease of ``ttl_ms``; ``host``, ``pid``, ``program`` say who owns it."""
    ttl_ms: int
    host: str = ""
    pid: int = 0
    program: str = ""


class Register(NamedTuple):
    lease: str
    kind: str
    name: str
    address: str
    key: str = ""


class Lookup(NamedTuple):
    name: str


class Unregister(NamedTuple):
    lease: str
    name: str


class Ping(NamedTuple):
    pass


class KeepAlive(NamedTuple):
    lease: str


class Revoke(NamedTuple):
    lease: str


class List(NamedTuple):
    """A page of the names matching glob ``pattern`` that sort after ``after``."""
    pattern: str = "*"
    after: str = ""
    limit: int = MAX_PAGE


class Info(NamedTuple):
    name: str


class Watch(NamedTuple):
    """Watch ``pattern`` (a glob, or with EXACT one name) under ``lease``;
    events come with this request's header until UNWATCH or the lease ends."""
    lease: str
    pattern: str
    mode: int = GLOB


class Unwatch(NamedTuple):
    lease: str
    watch: int      # the request id of the WATCH


class Ok(NamedTuple):
    pass


class Found(NamedTuple):
    kind: str
    address: str
    key: str = ""


class ErrorReply(NamedTuple):
    code: int
    message: str


class Pong(NamedTuple):
    pass


class Granted(NamedTuple):
    lease: str
    ttl_ms: int


class Entry(NamedTuple):
    """A record as LIST and WATCH carry it: the name, what LOOKUP gives, and
    what the owner's lease said about it (for people: it proves nothing)."""
    name: str
    kind: str
    address: str
    key: str = ""
    host: str = ""
    pid: int = 0
    program: str = ""
    registered_ms: int = 0  # milliseconds since the epoch


class Listed(NamedTuple):
    """A LIST page: ``entries`` sorted by name; ``more`` when a next page exists
    (ask again with ``after`` the last name)."""
    more: bool
    entries: tuple = ()


class InfoReply(NamedTuple):
    kind: str
    address: str
    key: str
    host: str
    pid: int
    program: str
    registered_ms: int      # milliseconds since the epoch


class Event(NamedTuple):
    type: str               # ADDED, REMOVED, CHANGED
    entry: Entry


class Events(NamedTuple):
    """A batch of WATCH events; ``synced`` marks the end of the snapshot
    (the snapshot's entries come as ADDED events before it)."""
    synced: bool
    events: tuple = ()


Request = Union[Lease, Register, Lookup, Unregister, Ping, KeepAlive, Revoke, List, Info, Watch, Unwatch]
Reply = Union[Ok, Found, ErrorReply, Pong, Granted, Listed, InfoReply, Events]


# ---------------------------------------------------------------------------
# Validators

def _utf8(value, what):
    """Return ``value`` (a str) as UTF-8 bytes, or raise TypeError/ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} cannot be encoded as UTF-8") from None


def validate_kind(kind):
    """Check an object kind: ``"E"`` (exchange) or ``"Q"`` (queue).  Return it."""
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, not {type(kind).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not 'E' (exchange) or 'Q' (queue)")
    return kind


def validate_name(name):
    """Check a global object name and return it.

    A name is a str of 1 to 255 bytes once encoded as UTF-8, with no control
    characters (code points below 0x20, and 0x7f).  Raises TypeError when
    ``name`` is not a str and ValueError, saying what is wrong, otherwise.
    """
    raw = _utf8(name, "name")
    if not raw:
        raise ValueError("name is empty; a global name needs 1 to 255 bytes")
    if len(raw) > MAX_NAME:
        raise ValueError(f"name is {len(raw)} bytes long in UTF-8; the limit is {MAX_NAME}")
    for i, ch in enumerate(name):
        if ord(ch) < 0x20 or ch == "\x7f":
            raise ValueError(f"name {name!r} holds control character {ch!r} at position {i}")
    return name


_HOSTNAME = re.compile(r"[A-Za-z0-9._-]+\Z")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9._-]+)?\]\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
_WILDCARDS = ("*", "0.0.0.0", "[::]", "[0:0:0:0:0:0:0:0]")
_LEASE = re.compile(r"[0-9a-f]{32}\Z")


def validate_address(address):
    """Check the ``host:port`` address of a global object and return it.

    The host is a host name, an IPv4 address or a bracketed IPv6 address
    (``[::1]:5555``); it may not be a wildcard (``*``, ``0.0.0.0``, ``[::]``)
    since peers must be able to connect to it.  The port is 1-65535 and the
    whole address 1 to 255 bytes.  Raises TypeError when ``address`` is not a
    str and ValueError, saying what is wrong, otherwise.
    """
    raw = _utf8(address, "address")
    if not raw:
        raise ValueError("address is empty; expected host:port")
    if len(raw) > MAX_ADDRESS:
        raise ValueError(f"address is {len(raw)} bytes long; the limit is {MAX_ADDRESS}")
    if "://" in address:
        raise ValueError(f"address {address!r} must be host:port, without a transport prefix such as tcp://")
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address!r} has no port; expected host:port")
    if not host:
        raise ValueError(f"address {address!r} has no host; expected host:port")
    if host in _WILDCARDS:
        raise ValueError(f"address {address!r} has wildcard host {host!r}; "
                         "register an address that peers can connect to")
    if host.startswith("["):
        if not _IPV6.match(host):
            raise ValueError(f"address {address!r} has a malformed bracketed IPv6 host")
    elif ":" in host:
        raise ValueError(f"address {address!r}: an IPv6 host must be written in brackets, e.g. [::1]:5555")
    elif not _HOSTNAME.match(host):
        raise ValueError(f"address {address!r}: host {host!r} may only hold letters, digits, '.', '-' and '_'")
    if not _PORT.match(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: port {port!r} is not a number from 1 to 65535")
    return address


def validate_key(key):
    """Check a CURVE public key: empty (no encryption) or 40 Z85 characters.  Return it."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    if key == "":
        return key
    if len(key) != KEY_LENGTH:
        raise ValueError(f"key is {len(key)} characters long; a Z85 CURVE key has {KEY_LENGTH} (or empty for none)")
    bad = next((ch for ch in key if ch not in _Z85_SET), None)
    if bad is not None:
        raise ValueError(f"key holds {bad!r}, which is not a Z85 character")
    return key


def validate_lease(lease):
    """Check a lease id: 32 lowercase hex digits.  Return it."""
    if not isinstance(lease, str):
        raise TypeError(f"lease must be a str, not {type(lease).__name__}")
    if not _LEASE.match(lease):
        raise ValueError(f"lease {lease[:40]!r} is not {LEASE_LENGTH} lowercase hex digits")
    return lease


def validate_pattern(pattern):
    """Check a LIST/WATCH glob pattern (``*``, ``?``, ``[...]``): 1 to 255
    bytes of UTF-8, no control characters.  Return it."""
    raw = _utf8(pattern, "pattern")
    if not raw:
        raise ValueError("pattern is empty; '*' matches every name")
    if len(raw) > MAX_PATTERN:
        raise ValueError(f"pattern is {len(raw)} bytes long; the limit is {MAX_PATTERN}")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in pattern):
        raise ValueError(f"pattern {pattern!r} holds a control character")
    return pattern


def _validate_label(value, what, limit):
    raw = _utf8(value, what)
    if len(raw) > limit:
        raise ValueError(f"{what} is {len(raw)} bytes long; the limit is {limit}")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
        raise ValueError(f"{what} {value!r} holds a control character")
    return value


def _validate_u32(value, what):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} {value} does not fit 32 bits")
    return value


# ---------------------------------------------------------------------------
# Encoding

def pack_str(value):
    """Encode a ``str`` field (a str or bytes) with its 2-byte length prefix.

    Only the prefix limit is enforced here; field limits are the validators' job.
    """
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > MAX_STR_FIELD:
        raise ValueError(f"string field is {len(raw)} bytes; at most {MAX_STR_FIELD} fit")
    return _STRLEN.pack(len(raw)) + raw


def encode_header(request_id):
    """The header frame of a message with ``request_id`` (0 to 2**32-1)."""
    return _HEADER.pack(MAGIC, VERSION, request_id)


def decode_header(frame):
    """Return the request id of a header frame.

    Raises ProtocolError: BAD_VERSION when the magic or version is not ours,
    MALFORMED when the frame has the wrong size.
    """
    frame = bytes(frame)
    if len(frame) != HEADER_SIZE:
        raise ProtocolError(MALFORMED, f"a header frame is {HEADER_SIZE} bytes, got {len(frame)}")
    magic, version, request_id = _HEADER.unpack(frame)
    if magic != MAGIC:
        raise ProtocolError(BAD_VERSION, f"header magic is {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(BAD_VERSION, f"protocol version {version} is not supported (only {VERSION})")
    return request_id


def encode_request(request):
    """Return the body of a request message, after checking its fields."""
    if isinstance(request, Lease):
        return (bytes([LEASE]) + _U32.pack(_validate_u32(request.ttl_ms, "ttl_ms"))
                + pack_str(_validate_label(request.host, "host", MAX_HOST))
                + _U32.pack(_validate_u32(request.pid, "pid"))
                + pack_str(_validate_label(request.program, "program", MAX_PROGRAM)))
    if isinstance(request, Register):
        return _body(bytes([REGISTER]), validate_lease(request.lease)) + _body(
            bytes([ord(validate_kind(request.kind))]), validate_name(request.name),
            validate_address(request.address), validate_key(request.key))
    if isinstance(request, Lookup):
        return _body(bytes([LOOKUP]), validate_name(request.name))
    if isinstance(request, Unregister):
        return _body(bytes([UNREGISTER]), validate_lease(request.lease), validate_name(request.name))
    if isinstance(request, Ping):
        return bytes([PING])
    if isinstance(request, KeepAlive):
        return _body(bytes([KEEPALIVE]), validate_lease(request.lease))
    if isinstance(request, Revoke):
        return _body(bytes([REVOKE]), validate_lease(request.lease))
    if isinstance(request, List):
        after = request.after
        if after:
            validate_name(after)
        limit = _validate_u32(request.limit, "limit")
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit {limit} is not 1 to {MAX_PAGE}")
        return _body(bytes([LIST]), validate_pattern(request.pattern), after) + _U32.pack(limit)
    if isinstance(request, Info):
        return _body(bytes([INFO]), validate_name(request.name))
    if isinstance(request, Watch):
        if request.mode not in (GLOB, EXACT):
            raise ValueError(f"watch mode {request.mode!r} is not GLOB (0) or EXACT (1)")
        pattern = (validate_name if request.mode == EXACT else validate_pattern)(request.pattern)
        return _body(bytes([WATCH]), validate_lease(request.lease), pattern) + bytes([request.mode])
    if isinstance(request, Unwatch):
        return _body(bytes([UNWATCH]), validate_lease(request.lease)) + _U32.pack(
            _validate_u32(request.watch, "watch"))
    raise TypeError(f"not a request message: {request!r}")


def encode_entry(entry, event_type=None):
    """One LIST entry or WATCH event (with its type byte first)."""
    head = b"" if event_type is None else event_type.encode("ascii")
    return (head + pack_str(entry.name) + bytes([ord(entry.kind)]) + pack_str(entry.address) + pack_str(entry.key)
            + pack_str(entry.host) + _U32.pack(entry.pid) + pack_str(entry.program)
            + _U64.pack(entry.registered_ms))


def encode_reply(reply):
    """Return the body of a reply message.  An overlong error text is cut."""
    if isinstance(reply, Ok):
        return bytes([OK])
    if isinstance(reply, Found):
        return _body(bytes([FOUND, ord(validate_kind(reply.kind))]),
                     validate_address(reply.address), validate_key(reply.key))
    if isinstance(reply, ErrorReply):
        if not 0 <= reply.code <= 255:
            raise ValueError(f"error code {reply.code} does not fit a byte")
        text = reply.message.encode("utf-8", "replace")[:MAX_ERROR_TEXT]
        return _body(bytes([ERROR, reply.code]), text.decode("utf-8", "ignore"))
    if isinstance(reply, Pong):
        return bytes([PONG])
    if isinstance(reply, Granted):
        return _body(bytes([GRANTED]), validate_lease(reply.lease)) + _U32.pack(
            _validate_u32(reply.ttl_ms, "ttl_ms"))
    if isinstance(reply, Listed):
        return (bytes([LISTED, 1 if reply.more else 0]) + _U32.pack(len(reply.entries))
                + b"".join(encode_entry(e) for e in reply.entries))
    if isinstance(reply, InfoReply):
        return (_body(bytes([INFO_REPLY, ord(validate_kind(reply.kind))]), validate_address(reply.address),
                      validate_key(reply.key), reply.host) + _U32.pack(_validate_u32(reply.pid, "pid"))
                + pack_str(reply.program) + _U64.pack(reply.registered_ms))
    if isinstance(reply, Events):
        return (bytes([EVENTS, 1 if reply.synced else 0]) + _U32.pack(len(reply.events))
                + b"".join(encode_entry(e.entry, e.type) for e in reply.events))
    raise TypeError(f"not a reply message: {reply!r}")


def _body(head, *strings):
    return head + b"".join(pack_str(s) for s in strings)


# ---------------------------------------------------------------------------
# Decoding

class _Fields:
    """Reads fields off a body; every shortfall is a MALFORMED ProtocolError."""

    def __init__(self, body, what):
        self.body = bytes(body)
        self.pos = 1  # past the command byte
        self.what = what

    def _take(self, n, field):
        end = self.pos + n
        if end > len(self.body):
            raise ProtocolError(MALFORMED, f"{self.what} body ends inside its {field}")
        chunk = self.body[self.pos:end]
        self.pos = end
        return chunk

    def u8(self, field):
        return self._take(1, field)[0]

    def u32(self, field):
        return _U32.unpack(self._take(4, field))[0]

    def u64(self, field):
        return _U64.unpack(self._take(8, field))[0]

    def entry(self, what):
        name = _checked(validate_name, self.text("name"), what)
        kind = _kind(self.u8("kind"), what)
        address = _checked(validate_address, self.text("address"), what)
        key = _checked(validate_key, self.text("key"), what)
        host = self.text("host")
        pid = self.u32("pid")
        program = self.text("program")
        registered = self.u64("registered")
        return Entry(name, kind, address, key, host, pid, program, registered)

    def raw(self, n, field):
        return self._take(n, field)

    def text(self, field):
        (n,) = _STRLEN.unpack(self._take(2, f"{field} length"))
        raw = self._take(n, field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(MALFORMED, f"{self.what} {field} is not valid UTF-8") from None

    def end(self):
        extra = len(self.body) - self.pos
        if extra:
            raise ProtocolError(MALFORMED, f"{self.what} body has {extra} unexpected trailing bytes")


def _checked(validator, value, what, *args):
    try:
        return validator(value, *args)
    except ValueError as exc:
        raise ProtocolError(MALFORMED, f"{what}: {exc}") from None


def _kind(byte, what):
    return _checked(validate_kind, chr(byte), what)


_NAMES = {LEASE: "LEASE", REGISTER: "REGISTER", LOOKUP: "LOOKUP", UNREGISTER: "UNREGISTER",
          PING: "PING", KEEPALIVE: "KEEPALIVE", REVOKE: "REVOKE", LIST: "LIST", INFO: "INFO",
          WATCH: "WATCH", UNWATCH: "UNWATCH"}


def command_name(body):
    """The name of the request a body holds (for metrics and logs), or "?"."""
    return _NAMES.get(body[0], "?") if body else "?"


def lookup_name(header, body):
    """The name a well-formed LOOKUP asks for, or None.

    A shortcut for the server's hot path: it needs no decoded message, only
    the name to find.  None means "not obviously a valid LOOKUP": decode
    the message in full (``decode_header``, ``decode_request``), which says
    what is wrong.  A name returned here may still break the name rules
    (control characters); only names that passed them are ever registered,
    so looking it up is safe either way.
    """
    if len(header) != HEADER_SIZE or header[:5] != _HEADER_START or len(body) < 4 or body[0] != LOOKUP:
        return None
    if len(body) != 3 + ((body[1] << 8) | body[2]):
        return None
    try:
        return body[3:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def decode_request(body):
    """Parse a request body into a message.

    Raises ProtocolError: UNKNOWN_COMMAND for a command byte that is not a
    request, MALFORMED for anything else that breaks the protocol.
    """
    if not body:
        raise ProtocolError(MALFORMED, "empty body")
    if len(body) > MAX_BODY:
        raise ProtocolError(MALFORMED, f"body is {len(body)} bytes; the limit is {MAX_BODY}")
    command = body[0]
    what = _NAMES.get(command)
    if what is None:
        raise ProtocolError(UNKNOWN_COMMAND, f"command byte 0x{command:02x} is not a request")
    f = _Fields(body, what)
    if command == LEASE:
        ttl_ms = f.u32("ttl")
        host = f.text("host")
        pid = f.u32("pid")
        program = f.text("program")
        f.end()
        return Lease(ttl_ms, _checked(_validate_label, host, what, "host", MAX_HOST), pid,
                     _checked(_validate_label, program, what, "program", MAX_PROGRAM))
    if command == REGISTER:
        lease = f.text("lease")
        kind = f.u8("kind")
        name = f.text("name")
        address = f.text("address")
        key = f.text("key")
        f.end()
        return Register(_checked(validate_lease, lease, what), _kind(kind, what),
                        _checked(validate_name, name, what), _checked(validate_address, address, what),
                        _checked(validate_key, key, what))
    if command == LOOKUP:
        name = f.text("name")
        f.end()
        return Lookup(_checked(validate_name, name, what))
    if command == UNREGISTER:
        lease = f.text("lease")
        name = f.text("name")
        f.end()
        return Unregister(_checked(validate_lease, lease, what), _checked(validate_name, name, what))
    if command == PING:
        f.end()
        return Ping()
    if command == LIST:
        pattern = _checked(validate_pattern, f.text("pattern"), what)
        after = f.text("after")
        limit = f.u32("limit")
        f.end()
        if after:
            _checked(validate_name, after, what)
        if not 1 <= limit <= MAX_PAGE:
            raise ProtocolError(MALFORMED, f"LIST limit {limit} is not 1 to {MAX_PAGE}")
        return List(pattern, after, limit)
    if command == INFO:
        name = f.text("name")
        f.end()
        return Info(_checked(validate_name, name, what))
    if command == WATCH:
        lease = _checked(validate_lease, f.text("lease"), what)
        pattern = f.text("pattern")
        mode = f.u8("mode")
        f.end()
        if mode not in (GLOB, EXACT):
            raise ProtocolError(MALFORMED, f"WATCH mode {mode} is not 0 (glob) or 1 (exact)")
        return Watch(lease, _checked(validate_name if mode == EXACT else validate_pattern, pattern, what), mode)
    if command == UNWATCH:
        lease = _checked(validate_lease, f.text("lease"), what)
        watch = f.u32("watch")
        f.end()
        return Unwatch(lease, watch)
    # KEEPALIVE, REVOKE
    lease = f.text("lease")
    f.end()
    lease = _checked(validate_lease, lease, what)
    return KeepAlive(lease) if command == KEEPALIVE else Revoke(lease)


def decode_reply(body):
    """Parse a reply body into a message; raises ProtocolError(MALFORMED) if it does not parse."""
    if not body:
        raise ProtocolError(MALFORMED, "empty body")
    command = body[0]
    if command == OK:
        _Fields(body, "OK").end()
        return Ok()
    if command == FOUND:
        f = _Fields(body, "FOUND")
        kind = f.u8("kind")
        address = f.text("address")
        key = f.text("key")
        f.end()
        return Found(_kind(kind, "FOUND"), _checked(validate_address, address, "FOUND"),
                     _checked(validate_key, key, "FOUND"))
    if command == ERROR:
        f = _Fields(body, "ERROR")
        code = f.u8("code")
        message = f.text("message")
        f.end()
        return ErrorReply(code, message)
    if command == PONG:
        _Fields(body, "PONG").end()
        return Pong()
    if command == GRANTED:
        f = _Fields(body, "GRANTED")
        lease = f.text("lease")
        ttl_ms = f.u32("ttl")
        f.end()
        return Granted(_checked(validate_lease, lease, "GRANTED"), ttl_ms)
    if command == LISTED:
        f = _Fields(body, "LISTED")
        more = f.u8("more")
        count = f.u32("count")
        if count > len(body):
            raise ProtocolError(MALFORMED, f"LISTED claims {count} entries in {len(body)} bytes")
        entries = tuple(f.entry("LISTED") for _ in range(count))
        f.end()
        return Listed(bool(more), entries)
    if command == INFO_REPLY:
        f = _Fields(body, "INFO")
        kind = _kind(f.u8("kind"), "INFO")
        address = _checked(validate_address, f.text("address"), "INFO")
        key = _checked(validate_key, f.text("key"), "INFO")
        host = f.text("host")
        pid = f.u32("pid")
        program = f.text("program")
        registered = f.u64("registered")
        f.end()
        return InfoReply(kind, address, key, host, pid, program, registered)
    if command == EVENTS:
        f = _Fields(body, "EVENTS")
        synced = f.u8("synced")
        count = f.u32("count")
        if count > len(body):
            raise ProtocolError(MALFORMED, f"EVENTS claims {count} events in {len(body)} bytes")
        events = []
        for _ in range(count):
            kind = chr(f.u8("event type"))
            if kind not in EVENT_TYPES:
                raise ProtocolError(MALFORMED, f"EVENTS: event type {kind!r} is not one of {EVENT_TYPES}")
            events.append(Event(kind, f.entry("EVENTS")))
        f.end()
        return Events(bool(synced), tuple(events))
    raise ProtocolError(MALFORMED, f"command byte 0x{command:02x} is not a reply")
