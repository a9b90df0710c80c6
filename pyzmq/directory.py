"""The client of the name directory (``zmq_server``), see docs/directory.md.

A :class:`DirectoryClient` keeps one TCP connection to the directory.  It
remembers the names it registered and a background thread watches the
connection: when the directory goes away the thread reconnects (every half
second, until :meth:`DirectoryClient.close`; after a refusal the interval
doubles up to 30 s) and registers those names again,
so a restarted ``zmq_server`` is repopulated without the application doing
anything.
"""

import logging
import socket
import threading
import time
import weakref
from dataclasses import dataclass

from pyzmq import protocol as p
from pyzmq._zmq import check_seconds
from pyzmq.errors import Error, Timeout

log = logging.getLogger("pyzmq.directory")

_clients = weakref.WeakSet()   # every DirectoryClient of this process (to tell who holds a name)

PING_INTERVAL = 1.0   # seconds between liveness PINGs on an idle connection
RETRY_INTERVAL = 0.5  # seconds between reconnection attempts
REFUSED_RETRY_MAX = 30.0  # after refusals (e.g. key not allowed) the interval doubles up to this
WATCH_FIRST = 1.0     # a watched name is looked up again at most this often at first,
WATCH_MAX = 30.0      # then less often, doubling up to this while its record stays the same
DROP_GRACE = 0.2      # seconds between losing a connection and the first reconnection attempt,
                      # so that a live server has seen the old one close (and freed its names)


class DirectoryError(Error):
    """The directory refused a request.  ``code`` is the protocol error code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class DirectoryUnreachable(Error):
    """No directory answers at the address: nothing listens there, or the
    connection attempt timed out.  ``reason`` says why in a few words; the
    message also says what to do (start ``zmq_server``, or run one inside
    the program with ``pyzmq.Directory()``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_Unreachable = DirectoryUnreachable


class _UnreachableTimeout(DirectoryUnreachable, Timeout):
    pass


def _unreachable_text(address, reason):
    return (f"cannot reach the directory at {address}: {reason}; start one there with "
            f"`zmq_server` (e.g. `zmq_server --port {address.rsplit(':', 1)[-1]}`), or run "
            "one inside this program: `with pyzmq.Directory() as d: pyzmq.ZMQ(d.address)`")


class _Lost(Exception):
    """The connection broke (EOF, reset, garbage); the request may be retried."""


class _Garbage(_Lost):
    """The peer sent bytes that are not a valid reply."""


def _printable(text):
    """``text`` with control characters escaped: refusals come before any
    authentication, so their text may be anyone's and must not rewrite a log."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def parse_hostname(hostname):
    """Split ``"host"``, ``"host:port"`` or ``"[v6]:port"`` into ``(host, port)``.

    The port defaults to 5682.  Raises TypeError for a non-str and ValueError,
    saying what is wrong, for a malformed string.
    """
    if not isinstance(hostname, str):
        raise TypeError(f"directory hostname must be a str such as 'host:5682', not {type(hostname).__name__}")
    text = hostname.strip()
    if not text:
        raise ValueError("directory hostname is empty; expected 'host' or 'host:port'")
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() == "tcp":
            raise ValueError(f"directory hostname {hostname!r}: a hostname takes no scheme; "
                             f"write {rest!r}")
        raise ValueError(f"directory hostname {hostname!r}: unknown scheme {scheme + sep!r}; "
                         "the directory is reached over TCP at 'host' or 'host:port', "
                         "written without a scheme")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"directory hostname {hostname!r} is malformed; expected '[ipv6]:port'")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError(f"directory hostname {hostname!r}: write an IPv6 address in brackets, e.g. '[::1]:5682'")
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
        if not host:
            raise ValueError(f"directory hostname {hostname!r} has no host")
    if any(ch.isspace() or ch in "/@" for ch in host):
        raise ValueError(f"directory hostname {hostname!r} has an invalid host {host!r}")
    if port_text is None:
        return host, p.DEFAULT_PORT
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"directory hostname {hostname!r}: port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _recv_exactly(sock, n, deadline):
    chunks = []
    while n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        sock.settimeout(remaining)
        chunk = sock.recv(n)
        if not chunk:
            raise _Lost("the directory closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class _Link:
    """One connection to the directory: the TCP socket and, on a secure
    directory, the channel that seals and opens its frames."""

    def __init__(self, sock, channel=None):
        self.sock = sock
        self.channel = channel

    def close(self):
        self.sock.close()


def _send_receive(sock, body, deadline):
    """Send one frame body and return the body of the frame that answers it.

    Raises _Lost when the connection breaks, socket.timeout past ``deadline``.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise socket.timeout("timed out")
    sock.settimeout(remaining)
    try:
        sock.sendall(p.encode_frame(body))
        header = _recv_exactly(sock, p.HEADER_SIZE, deadline)
        return _recv_exactly(sock, p.body_length(header), deadline)
    except socket.timeout:
        raise
    except p.ProtocolError as exc:
        raise _Garbage(f"the directory sent a malformed reply ({exc})") from None
    except OSError as exc:
        raise _Lost(exc.strerror or str(exc)) from None


@dataclass
class _Watch:
    """What the keeper last learned of a watched name: the ``record``
    ``(kind, address, key)``, or None while the name is not registered;
    ``serial`` of that lookup (serials grow across names), and when to look
    again (``due``, monotonic) after ``interval`` seconds."""
    serial: int
    record: tuple
    interval: float
    due: float


def _round_trip(link, request, deadline):
    """One request round trip on ``link``: send it, return the decoded reply.

    Raises _Lost when the connection breaks (or, secure, a frame was
    tampered with), socket.timeout past ``deadline``.
    """
    body = p.encode_request(request)
    if link.channel is not None:
        body = link.channel.seal(body)
    reply = _send_receive(link.sock, body, deadline)
    try:
        if link.channel is not None:
            reply = link.channel.open(reply)
        return p.decode_reply(reply)
    except p.ProtocolError as exc:
        raise _Garbage(f"the directory sent a malformed reply ({exc})") from None


class DirectoryClient:
    """A connection to the directory at ``hostname`` ("host" or "host:port").

    Connecting (and every later request) is bounded by ``timeout`` seconds;
    an unreachable directory raises :class:`pyzmq.errors.Error` naming it.
    Safe to share between threads.

    ``server_key`` (the directory's CURVE public key, Z85) makes the
    connection secure: the directory must prove it holds the matching secret
    key, this client proves it holds ``secret_key`` (Z85; a key made for
    this client when None), and every frame is encrypted and authenticated.

    ``on_lost(name, reason)`` is called from the background thread (never
    with a lock held) for each name that could not be registered again
    after a reconnection; such names are also kept in ``lost``.
    """

    def __init__(self, hostname, timeout=5.0, server_key=None, secret_key=None, on_lost=None):
        if on_lost is not None and not callable(on_lost):
            raise TypeError(f"on_lost must be a callable(name, reason), not {type(on_lost).__name__}")
        self._on_lost = on_lost
        self.lost = {}    # name -> reason: names the directory refused on re-registration
        self._host, self._port = parse_hostname(hostname)
        self._server_key = self._secret_key = None
        if server_key is not None:
            from pyzmq import dirsecure
            self._server_key = dirsecure.decode_key(server_key, "directory_key")
            if secret_key is None:
                self._secret_key = dirsecure.keypair()[1]
            else:
                self._secret_key = dirsecure.decode_key(secret_key, "secret_key")
        elif secret_key is not None:
            raise ValueError("secret_key for the directory needs server_key, the directory's public key")
        self.timeout = check_seconds(timeout, "timeout", positive=True)
        self.address = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        self.reconnects = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._link = None     # the _Link to the directory while connected
        self._local_ip = None
        self._closed = False
        self._last_failure = None
        self._refusal = None  # the DirectoryError of the last reconnection attempt, if refused
        # names whose records the keeper looks up in the background (watch())
        self._watch_lock = threading.Lock()
        self._wanted = set()
        self._watched = {}    # name -> _Watch
        self._watch_serial = 0
        self._names = {}  # name -> (kind, address, key) registered by this client
        self._stop = threading.Event()   # set by close(): the keeper must exit
        self._wake = threading.Event()   # set to make the keeper act now
        self._dropped_at = 0.0

        sock = self._open(time.monotonic() + self.timeout)
        self._install(sock)
        _clients.add(self)
        self._keeper = threading.Thread(target=_keep_alive, args=(weakref.ref(self), self._stop, self._wake),
                                        name=f"pyzmq-directory-{self.address}", daemon=True)
        self._keeper.start()

    # -- public API --------------------------------------------------------

    @property
    def connected(self):
        """True while the connection to the directory is up."""
        return self._link is not None and not self._closed

    @property
    def local_ip(self):
        """This host's IP address on the route to the directory."""
        return self._local_ip

    @property
    def closed(self):
        return self._closed

    def register(self, kind, name, address, key=""):
        """Publish global ``name`` as an object of ``kind`` ("E" or "Q") at ``address``.

        ``key`` is the owner's CURVE public key in Z85, or "".  Registering a
        name this client already holds replaces its record.  The name is
        registered again automatically after a reconnection.
        """
        request = p.Register(p.validate_kind(kind), p.validate_name(name),
                             p.validate_address(address), p.validate_key(key))
        self._request(request, name, on_ok=lambda: self._names.__setitem__(name, (kind, address, key)))

    def lookup(self, name):
        """Return ``(kind, address, key)`` of global object ``name``."""
        reply = self._request(p.Lookup(p.validate_name(name)), name)
        return reply.kind, reply.address, reply.key

    def unregister(self, name):
        """Withdraw global ``name``, which this client must have registered."""
        p.validate_name(name)
        with self._lock:
            was_mine = self._names.pop(name, None) is not None
            if was_mine and self._link is None and not self._closed:
                return  # its connection is gone, and the directory dropped it with it
        try:
            self._request(p.Unregister(name), name)
        except DirectoryError as exc:
            # After a reconnection the name was simply not registered again.
            if not (was_mine and exc.code == p.NOT_FOUND):
                raise

    def watch(self, names):
        """Ask the background thread to look ``names`` up (again) soon; never
        blocks.  A name is looked up at most once a second at first, less
        often (up to every 30 s) while its record does not change.  Read the
        answers with :meth:`watched`."""
        now = time.monotonic()
        with self._watch_lock:
            fresh = set(names) - self._wanted
            self._wanted.update(fresh)
            due = any(n not in self._watched or self._watched[n].due <= now for n in fresh)
        if due:
            self._wake.set()    # else the keeper's regular round takes them

    def watched(self, name):
        """``(serial, (kind, address, key) or None)`` of the latest background
        lookup of ``name`` (serials grow with each lookup, across names), or
        None if it has not been looked up yet.  Never blocks."""
        with self._watch_lock:
            entry = self._watched.get(name)
            return None if entry is None else (entry.serial, entry.record)

    def watch_serial(self):
        """The serial the next background lookup will exceed: answers with a
        serial up to this one are older than now."""
        with self._watch_lock:
            return self._watch_serial

    def ping(self):
        """Check that the directory answers; raise Error if it does not."""
        self._request(p.Ping(), None)

    def names(self):
        """The names this client has registered, sorted."""
        with self._lock:
            return sorted(self._names)

    def close(self):
        """Close the connection and stop the background thread.  Idempotent.

        Waits for a request in flight in another thread (at most its timeout).
        """
        self._stop.set()
        self._wake.set()
        with self._lock:
            self._closed = True
            if self._link is not None:
                self._link.close()
                self._link = None
            self._cond.notify_all()
        if self._keeper is not threading.current_thread():
            self._keeper.join(1.0)  # it is a daemon: do not hold up an exit for a slow connect

    def _abandon(self):
        """Close without waiting for anything and without a word to the
        directory (which drops this client's names with the connection):
        for an owner collected while open.  The keeper thread is told to
        stop, not joined; a link in use by it closes when it is collected."""
        self._stop.set()
        self._wake.set()
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                if self._link is not None:
                    self._link.close()
                    self._link = None
            finally:
                self._lock.release()

    def __del__(self):
        # Dropped without close(): stop the keeper; the socket closes with its object.
        if hasattr(self, "_wake"):
            self._stop.set()
            self._wake.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else "connected" if self._link else "reconnecting"
        return f"<DirectoryClient {self.address} {state}>"

    # -- requests ----------------------------------------------------------

    def _request(self, request, name, on_ok=None):
        """Send ``request``, retrying on a fresh connection if the link breaks, all
        within ``timeout``; return the reply, or raise Error.  ``on_ok`` runs
        under the lock after a successful reply."""
        deadline = time.monotonic() + self.timeout
        if not self._lock.acquire(timeout=self.timeout):
            raise Timeout(f"the directory client for {self.address} stayed busy for {self.timeout:g} s")
        try:
            while True:
                if self._closed:
                    raise Error(f"the directory client for {self.address} is closed")
                if self._link is None:
                    self._wait_connected(deadline)
                    continue
                try:
                    reply = _round_trip(self._link, request, deadline)
                except socket.timeout:
                    self._drop("no reply in time")
                    raise Timeout(f"the directory at {self.address} did not answer within "
                                  f"{self.timeout:g} s") from None
                except _Lost as exc:
                    self._drop(str(exc))
                    continue  # a fresh connection is a fresh start: retry on it
                except BaseException:
                    # interrupted (Ctrl-C) between sending and reading: the
                    # reply would be read as the answer to the next request
                    self._drop("a request was interrupted")
                    raise
                reply = self._check_reply(request, reply, name)
                if on_ok is not None:
                    on_ok()
                return reply
        finally:
            self._lock.release()

    def _wait_connected(self, deadline):
        """With the lock held, wait for the keeper thread to reconnect."""
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self._cond.wait_for(lambda: self._link is not None or self._closed, remaining)
        if self._link is None and not self._closed:
            if self._refusal is not None:
                raise DirectoryError(f"{self._refusal}; retrying in the background", self._refusal.code)
            raise Error(f"the directory at {self.address} is gone ({self._last_failure}); "
                        "reconnecting in the background")

    def _check_reply(self, request, reply, name):
        if isinstance(reply, p.ErrorReply):
            raise DirectoryError(self._error_text(request, reply, name), reply.code)
        expected = p.Found if isinstance(request, p.Lookup) else p.Pong if isinstance(request, p.Ping) else p.Ok
        if not isinstance(reply, expected):
            self._drop(f"unexpected reply {type(reply).__name__}")
            raise Error(f"the directory at {self.address} answered {type(reply).__name__} "
                        f"to {type(request).__name__.upper()}")
        return reply

    def _error_text(self, request, reply, name):
        code = reply.code
        if code == p.DUPLICATE:
            if self._held_here(name):
                return (f"global name {name!r} is already registered by another instance "
                        "(in this process: close it first)")
            return f"global name {name!r} is already registered by another process"
        if code == p.NOT_FOUND and isinstance(request, p.Lookup):
            return f"no global object named {name!r} in the directory at {self.address}"
        if code == p.NOT_FOUND:
            return f"cannot unregister {name!r}: no global object of that name in the directory at {self.address}"
        if code == p.NOT_OWNER:
            return f"cannot unregister {name!r}: it is registered by another process"
        if code == p.LIMIT:
            return f"the directory at {self.address} refused {name!r}: {reply.message}"
        what = p.ERROR_NAMES.get(code, f"error {code}")
        return f"the directory at {self.address} answered {what}: {reply.message}"

    def _held_here(self, name):
        """True when another open client of this process holds ``name`` in
        the same directory (an instance made again, as by a notebook cell
        run twice, while the first one is still open)."""
        for other in list(_clients):
            if other is not self and not other._closed and name in other._names \
                    and other.address == self.address:
                return True
        return False

    # -- connection management ---------------------------------------------

    @property
    def secure(self):
        """True when the connection is (to be) authenticated and encrypted."""
        return self._server_key is not None

    def _open(self, deadline):
        """Connect and say HELLO (or run the secure handshake); return the
        _Link.  Touches no shared state."""
        try:
            sock = socket.create_connection((self._host, self._port),
                                            timeout=max(0.001, deadline - time.monotonic()))
        except socket.timeout:
            reason = f"no answer within {self.timeout:g} s"
            raise _UnreachableTimeout(_unreachable_text(self.address, reason), reason) from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise DirectoryUnreachable(_unreachable_text(self.address, reason), reason) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._server_key is not None:
                return _Link(sock, self._handshake(sock, deadline))
            reply = _round_trip(_Link(sock), p.Hello(), deadline)
        except socket.timeout:
            sock.close()
            raise Timeout(f"the directory at {self.address} accepted the connection but did not answer "
                          f"HELLO within {self.timeout:g} s") from None
        except _Garbage as exc:
            sock.close()
            raise Error(f"the server at {self.address} does not speak the directory protocol: {exc}") from None
        except (_Lost, OSError) as exc:
            sock.close()
            raise Error(f"cannot talk to the directory at {self.address}: {exc}") from None
        except Error:
            sock.close()
            raise
        if isinstance(reply, p.ErrorReply):
            sock.close()
            raise DirectoryError(f"the directory at {self.address} refused this client: "
                                 f"{_printable(reply.message)}", reply.code)
        if not isinstance(reply, p.Ok):
            sock.close()
            raise Error(f"the directory at {self.address} answered HELLO with {type(reply).__name__}")
        return _Link(sock)

    def _handshake(self, sock, deadline):
        """Run the secure handshake on a fresh socket; return its channel.

        Raises Error when the directory refuses this client or fails to prove
        its key (wrong ``server_key``, or someone in between).
        """
        from pyzmq import dirsecure
        shake = dirsecure.ClientHandshake(self._server_key, self._secret_key)
        try:
            welcome = _send_receive(sock, shake.hello(), deadline)
            self._refused(welcome, p.WELCOME)
            ready = _send_receive(sock, shake.initiate(welcome), deadline)
            self._refused(ready, p.READY, shake.public_key)
            return shake.ready(ready)
        except p.ProtocolError as exc:
            raise DirectoryError(f"the directory at {self.address} failed the CURVE handshake: {exc}",
                                 exc.code) from None

    def _refused(self, body, expected, own_key=None):
        """Raise Error unless ``body`` is the handshake step ``expected``."""
        if body[0] == expected:
            return
        try:
            reply = p.decode_reply(body)
        except p.ProtocolError:
            reply = None
        if isinstance(reply, p.ErrorReply):
            text = _printable(reply.message)
            if own_key is not None and reply.code == p.AUTH:
                text += f" (this client's public key: {own_key})"
            raise DirectoryError(f"the directory at {self.address} refused this client: {text}", reply.code)
        raise _Garbage(f"the directory answered the CURVE handshake with command 0x{body[0]:02x}")

    def _install(self, link):
        """With the lock held (or before the keeper exists), adopt a fresh connection."""
        self._link = link
        self._local_ip = link.sock.getsockname()[0]
        self._last_failure = None

    def _drop(self, why):
        """With the lock held, forget a broken connection; the keeper will reconnect."""
        if self._link is not None:
            log.warning("lost the directory at %s: %s", self.address, why)   # as "reconnected"
            try:
                self._link.close()
            except OSError:
                pass
            self._link = None
            self._dropped_at = time.monotonic()
            self._wake.set()
        self._last_failure = why

    def _reconnect(self):
        """One reconnection attempt from the keeper thread.  Returns True when connected."""
        try:
            link = self._open(time.monotonic() + self.timeout)
        except DirectoryError as exc:
            # refused (e.g. this key is no longer allowed): say so once, and
            # back off, rather than making the directory run a handshake
            # twice a second for nothing
            if self._refusal is None or str(self._refusal) != str(exc):
                log.warning("%s", exc)
            self._refusal = exc
            self._last_failure = str(exc)
            return False
        except Error as exc:
            self._refusal = None
            self._last_failure = getattr(exc, "reason", str(exc))
            return False
        self._refusal = None
        with self._lock:
            if self._closed:
                link.close()
                return False
            self._install(link)
            lost = self._reregister()
            if self._link is not None:
                self.reconnects += 1
                log.warning("reconnected to the directory at %s; registered %d name(s) again",
                            self.address, len(self._names))
            self._cond.notify_all()
            connected = self._link is not None
        for name, why in lost:
            if self._on_lost is not None:
                try:
                    self._on_lost(name, why)
                except Exception:
                    log.exception("the on_lost callback failed for global name %r", name)
        return connected

    def _reregister(self):
        """With the lock held, register every remembered name on the new
        connection; returns [(name, reason)] of those the directory refused."""
        lost = []
        for name, (kind, address, key) in list(self._names.items()):
            try:
                reply = _round_trip(self._link, p.Register(kind, name, address, key),
                                  time.monotonic() + self.timeout)
            except (socket.timeout, _Lost) as exc:
                self._drop(f"while registering names again: {exc or 'timed out'}")
                return lost
            if isinstance(reply, p.ErrorReply):
                del self._names[name]
                why = ("another process registered it while the connection to the directory "
                       f"at {self.address} was down" if reply.code == p.DUPLICATE
                       else f"the directory at {self.address} refused it: {_printable(reply.message)}")
                self.lost[name] = why
                lost.append((name, why))
                log.warning("global name %r is no longer registered by this process: the directory at %s "
                            "refused it on reconnection (%s)", name, self.address, why)
        return lost

    def _look_up_wanted(self):
        """From the keeper thread: look up the names watch() asked for whose
        turn has come.  Like the PINGs, never waits for a connection (the
        keeper is what reconnects) nor for a busy client."""
        now = time.monotonic()
        with self._watch_lock:
            due = [n for n in self._wanted if n not in self._watched or self._watched[n].due <= now]
        for name in due:
            reply = self._keeper_request(p.Lookup(name), "a LOOKUP", (p.Found, p.ErrorReply))
            if reply is None:
                return              # busy, down or broken: next round
            refused = False
            record = None               # not registered now: its owner may come back
            if isinstance(reply, p.Found):
                record = (reply.kind, reply.address, reply.key)
            elif not (isinstance(reply, p.ErrorReply) and reply.code == p.NOT_FOUND):
                refused = True          # the directory refused the lookup: do not keep asking
            with self._watch_lock:
                self._wanted.discard(name)
                if refused:
                    continue
                previous = self._watched.get(name)
                interval = WATCH_FIRST
                if record is not None and previous is not None and previous.record == record:
                    interval = min(WATCH_MAX, previous.interval * 2)    # unchanged: ask less often
                self._watch_serial += 1
                self._watched[name] = _Watch(self._watch_serial, record, interval,
                                             time.monotonic() + interval)

    def _ping_idle(self):
        """From the keeper thread: PING if nobody is using the connection."""
        self._keeper_request(p.Ping(), "PING", (p.Pong,))

    def _keeper_request(self, request, what, expected):
        """From the keeper thread: one request on the connection if it is up
        and idle (the keeper never waits for a connection: it is what makes
        one).  Returns the reply, or None: busy, down, or broken (dropped,
        as is a connection that answers with none of ``expected``)."""
        if not self._lock.acquire(timeout=0.1):
            return None     # a request is in flight: the connection is being exercised anyway
        try:
            if self._link is None or self._closed:
                return None
            try:
                reply = _round_trip(self._link, request, time.monotonic() + self.timeout)
            except socket.timeout:
                self._drop(f"no answer to {what}")
                return None
            except _Lost as exc:
                self._drop(str(exc))
                return None
            if not isinstance(reply, expected):
                self._drop(f"unexpected reply {type(reply).__name__} to {what}")
                return None
            return reply
        finally:
            self._lock.release()


def _keep_alive(ref, stop, wake):
    """Body of the keeper thread: PING while connected, reconnect while not.

    It holds the client only weakly between rounds, so a client dropped
    without close() is collected and the thread ends.
    """
    delay = PING_INTERVAL
    while True:
        wake.wait(delay)
        wake.clear()
        if stop.is_set():
            return
        client = ref()
        if client is None or client._closed:
            return
        try:
            if client._link is None:
                grace = client._dropped_at + DROP_GRACE - time.monotonic()
                if grace > 0:
                    stop.wait(grace)
                    if stop.is_set():
                        return
                if client._reconnect():
                    delay = PING_INTERVAL
                elif client._refusal is not None:
                    delay = min(REFUSED_RETRY_MAX, max(RETRY_INTERVAL, delay * 2))
                else:
                    delay = RETRY_INTERVAL
            else:
                client._ping_idle()
                if client._link is not None:
                    client._look_up_wanted()
                delay = PING_INTERVAL if client._link is not None else 0
        except Exception:  # never let the keeper die silently
            log.exception("directory keeper for %s failed", client.address)
            delay = RETRY_INTERVAL
        del client
