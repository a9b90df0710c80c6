"""The client of the name directory (``zmq_server``), see docs/directory.md.

:class:`DirectoryBackend` is the interface the wiring layer uses: register
and unregister names under this client's lease, look names up, follow
names in the background.  :class:`DirectoryClient` implements it over the
directory protocol: a ZeroMQ DEALER (the pyzmq binding) talking to
``zmq_server``'s ROUTER, secured by libzmq's CurveZMQ when given the
directory's public key.  Another backend (etcd) can implement the same
interface.

A :class:`DirectoryClient` holds one lease with a TTL (a few seconds) and
one thread of its own, the keeper, which owns the socket: it sends the
requests of every application thread (several may be in flight at once),
renews the lease, and when the lease is lost (the directory restarted, or
could not be reached for longer than the TTL) takes a new one and
registers the client's names again by itself.  Closing the client revokes
the lease, which frees its names at once.
"""

import collections
import fnmatch
import itertools
import logging
import math
import os
import socket
import sys
import threading
import time
import weakref
from dataclasses import dataclass

from pyzmq import protocol as p
from pyzmq._zmq import check_seconds
from pyzmq.errors import Error, Timeout
from pyzmq.location import format_hostport

log = logging.getLogger("pyzmq.directory")

_clients: "weakref.WeakSet[DirectoryClient]" = weakref.WeakSet()   # every DirectoryClient of this process (who holds a name)

ROUND_MAX = 0.25      # the keeper looks at its clock at least this often while not idle (seconds)
WATCH_FIRST = 1.0     # a watched name is looked up again at most this often at first,
WATCH_MAX = 30.0      # then less often, doubling up to this while its record stays the same
RECONNECT_IVL_MS = 200
RECONNECT_IVL_MAX_MS = 2000
CLOSE_WAIT = 1.0      # at most this long for the REVOKE of a clean close (seconds)
MAX_SOCKETS = 32768   # of the directory clients' context (3 per client)
# The keeper has at most this many requests in flight (the names it registers
# again under a new lease go in waves of it): the server queues at most
# --max-queued messages for a client (default 100,000) and shuts the
# connection of one whose reply does not fit, so a burst must stay below it.
MAX_IN_FLIGHT = p.CLIENT_MAX_IN_FLIGHT      # (100; zmq_server refuses a --max-queued below twice it)
# A client that holds names (lease=True) and was refused a new lease asks
# again this long after (seconds), doubling up to LEASE_RETRY_MAX.
LEASE_RETRY = 1.0
LEASE_RETRY_MAX = 10.0


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


def _printable(text):
    """``text`` with control characters escaped: it may come from anyone
    and must not rewrite a log."""
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


WATCH_MAX_UNREAD = 10_000      # events a Watch holds unread (beyond its first snapshot), then it ends


class DirectoryBackend:
    """What the wiring layer needs from a directory.

    A backend holds one lease for its instance: names registered through it
    live as long as the lease, which the backend renews in the background;
    :meth:`close` gives it up, freeing the names at once.  Lookups and the
    background following (:meth:`watch`, :meth:`watched`) never depend on
    the lease.  Every method may be called from any thread.

    Implementations: :class:`DirectoryClient` (``zmq_server``) and
    :class:`pyzmq.etcd_directory.EtcdDirectory` (an etcd cluster; its
    :meth:`list` and :meth:`info` give :func:`entry_dict` objects, which
    the wiring layer takes too, and so do the events of its :class:`Watch`).
    """

    address = None    # where the directory is, for messages
    local_ip = None   # this host's address on the route to the directory

    def register(self, kind, name, address, key=""):
        """Publish ``name`` (kind "E" or "Q") at ``address`` with CURVE key ``key``
        under this client's lease.  DirectoryError(DUPLICATE) when another
        lease holds it; registering a held name again replaces its record."""
        raise NotImplementedError

    def unregister(self, name):
        """Withdraw ``name``, which this client registered."""
        raise NotImplementedError

    def lookup(self, name):
        """``(kind, address, key)`` of ``name``; DirectoryError(NOT_FOUND) if nobody holds it."""
        raise NotImplementedError

    def names(self):
        """The names this client holds, sorted."""
        raise NotImplementedError

    def list(self, pattern="*"):
        """Every record whose name matches glob ``pattern``, sorted by name
        (a list of :class:`pyzmq.protocol.Entry`)."""
        raise NotImplementedError

    def info(self, name):
        """The record of ``name`` with its owner: a :class:`pyzmq.protocol.Entry`."""
        raise NotImplementedError

    def subscribe(self, pattern="*", exact=False, max_unread=WATCH_MAX_UNREAD):
        """A :class:`Watch` of the names matching ``pattern`` (or, ``exact``,
        the one name): the current records first, then every change; it
        ends (:class:`WatchOverflow`) when it holds ``max_unread`` unread events."""
        raise NotImplementedError

    def wait_for(self, name, timeout):
        """``(kind, address, key)`` of ``name`` once it is registered, waiting
        up to ``timeout`` seconds for it (through a watch, not by polling)."""
        raise NotImplementedError

    def ping(self):
        """Raise Error unless the directory answers."""
        raise NotImplementedError

    def watch(self, names):
        """Look ``names`` up again soon in the background; never blocks."""
        raise NotImplementedError

    def watched(self, name):
        """``(serial, record or None)`` of the latest background lookup, or None."""
        raise NotImplementedError

    def watch_serial(self):
        """The serial the next background lookup will exceed."""
        raise NotImplementedError

    def close(self):
        """Give up the lease (the names go at once) and stop.  Idempotent."""
        raise NotImplementedError


def _identity(entry):
    """What a record says to a binder: ``(kind, address, key)``, of an
    Entry or of a dict (the etcd backend's records); a watch reports a
    change only when this changes."""
    if isinstance(entry, dict):
        return entry.get("kind"), entry.get("address"), entry.get("key") or ""
    return entry.kind, entry.address, entry.key


def entry_dict(entry):
    """A :class:`pyzmq.protocol.Entry` as the JSON object ``zmq_names`` and
    ``ZMQ.info`` give: name, kind, address, key, owner, registered.  (The
    etcd backend's records are such objects already: passed through.)"""
    if isinstance(entry, dict):
        return dict(entry, key=entry.get("key") or None)
    registered = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(entry.registered_ms // 1000))
    return {
        "name": entry.name,
        "kind": {"E": "exchange", "Q": "queue"}[entry.kind],
        "address": entry.address,
        "key": entry.key or None,
        "owner": {"host": entry.host, "pid": entry.pid, "program": entry.program},
        "registered": f"{registered}.{entry.registered_ms % 1000:03d}Z",
    }


def connect(hostname, **kw):
    """The backend for ``hostname``: today always a :class:`DirectoryClient`."""
    return DirectoryClient(hostname, **kw)


_context = None
_context_pid = None
_monitor_ids = itertools.count(1)
_context_lock = threading.Lock()


def _zmq_context():
    """The pyzmq context of this process's directory clients (made again after a fork)."""
    global _context, _context_pid
    import zmq
    with _context_lock:
        if _context is None or _context_pid != os.getpid():
            _context = zmq.Context(io_threads=1)
            _context.setsockopt(zmq.BLOCKY, 0) if hasattr(zmq, "BLOCKY") else None
            try:
                _context.set(zmq.MAX_SOCKETS, MAX_SOCKETS)
            except zmq.ZMQError:
                pass
            _context_pid = os.getpid()
        return _context


@dataclass
class _Watch:
    """What the keeper last learned of a watched name: the ``record``
    ``(kind, address, key)``, or None while the name is not registered;
    ``serial`` of that lookup (serials grow across names), and when to look
    again (``due``, monotonic) after ``interval`` seconds."""
    serial: int
    record: "tuple | None"
    interval: float
    due: float


class WatchOverflow(Error):
    """A :class:`Watch` fell behind: it held ``max_unread`` events nobody had
    read, so it ended (the events it held are still given first).  Subscribe
    again: a new watch starts from the current records."""


class Watch:
    """The events of a watch: ``(type, entry)`` with type "added", "removed"
    or "changed"; the records present when it starts come first as "added"
    (``snapshot_size`` of them, counted once ``synced`` is set; the watch
    keeps no other copy of them).  The entries are what
    the backend's :meth:`list` gives: a :class:`pyzmq.protocol.Entry` from
    :class:`DirectoryClient`, a dict (as :func:`entry_dict` makes) from
    :class:`pyzmq.etcd_directory.EtcdDirectory`.  After a reconnection the
    backend reads the records again and the watch reports what changed
    meanwhile.  Iterate, or call :meth:`get`; :meth:`close` ends it.

    It holds at most ``max_unread`` events not read yet beyond those of its
    first snapshot: one more ends it, the backend stops feeding it, and
    :meth:`get` gives the events it held, then raises :class:`WatchOverflow`.

    A backend feeds it from one thread: :meth:`_resync` when a snapshot
    begins, :meth:`_seen` and :meth:`_gone` per record, :meth:`_synced` at
    the end of a snapshot; :meth:`_fail` ends it with an error."""

    MAX_UNREAD = WATCH_MAX_UNREAD

    def __init__(self, client, pattern, exact, max_unread=MAX_UNREAD):
        import queue
        if isinstance(max_unread, bool) or not isinstance(max_unread, int) or max_unread < 1:
            raise ValueError(f"max_unread must be a whole number of events, at least 1, not {max_unread!r}")
        self.pattern = pattern
        self.exact = exact
        self.max_unread = max_unread
        self.synced = threading.Event()
        self.snapshot_size = 0  # how many of the first events are the first snapshot's records
        self.error = None
        self.closed = False
        self._client = client
        self._events = queue.Queue()
        self._room = max_unread  # events it may hold (the first snapshot's come on top)
        self._known = {}        # name -> entry, as of the events delivered
        self._fresh = None      # during a (re)snapshot: the names it has held so far
        self.rid = None

    def matches(self, name):
        """Whether ``name`` is one this watch reports."""
        return name == self.pattern if self.exact else fnmatch.fnmatchcase(name, self.pattern)

    def _feed(self, reply):
        """From DirectoryClient's keeper: one EVENTS batch."""
        if self._fresh is None and not self.synced.is_set():
            self._fresh = {}
        for event in reply.events:
            if event.type == p.REMOVED:
                self._gone(event.entry.name, event.entry)
            else:
                self._seen(event.entry.name, event.entry)
        if reply.synced and self._fresh is not None:
            self._synced()

    def _put(self, event):
        """Queue ``event`` for the reader, or end the watch if it holds as
        many as it may (the first snapshot is not counted)."""
        if self.synced.is_set() and self._events.qsize() >= self._room:
            self.error = WatchOverflow(
                f"the watch of {self.pattern!r} fell behind: {self.max_unread} events were not read "
                f"(max_unread), so it ended after them; read it sooner (or give subscribe() a larger "
                f"max_unread), or subscribe again: a new watch starts from the current records")
            self._events.put(None)
            self._client._unwatch(self)
            return
        self._events.put(event)

    def _seen(self, name, entry):
        """``name`` is registered with ``entry``: added, changed, or as it was."""
        if self.error is not None:
            return
        if self._fresh is not None:
            self._fresh[name] = entry
        previous = self._known.get(name)
        self._known[name] = entry
        if previous is None:
            self._put(("added", entry))
        elif _identity(previous) != _identity(entry):
            self._put(("changed", entry))

    def _gone(self, name, entry=None):
        """``name`` is no longer registered (``entry``: its last record, if known)."""
        if self.error is not None:
            return
        previous = self._known.pop(name, None)
        if previous is not None:
            self._put(("removed", previous if entry is None else entry))

    def _synced(self):
        """The end of a snapshot: what a re-snapshot lacks is gone."""
        if self.error is not None:
            return
        if self._fresh is not None:
            for name in [n for n in self._known if n not in self._fresh]:
                self._put(("removed", self._known.pop(name)))
            self._fresh = None
        if not self.synced.is_set():
            self.snapshot_size = self._events.qsize()
            self._room = self.max_unread + self.snapshot_size
        self.synced.set()

    def _resync(self):
        self._fresh = {}

    def _wait_synced(self, timeout, timed_out):
        """What ``subscribe`` returns: this watch once its first snapshot is
        in, within ``timeout`` seconds (else it is closed and ``timed_out()``
        raised); the backend's refusal is raised; Ctrl-C closes it."""
        try:
            synced = self.synced.wait(timeout)
        except BaseException:
            self.close()        # nobody will read it
            raise
        if not synced:
            self.close()
            raise timed_out()
        if self.error is not None:
            raise self.error
        return self

    def _fail(self, error):
        if self.error is None:
            self.error = error
            self._events.put(None)
        self.synced.set()

    def get(self, timeout=None):
        """The next ``(type, entry)``; None when ``timeout`` passes first.
        Raises the directory's error if the watch was refused or ended
        (:class:`WatchOverflow` when it fell behind)."""
        import queue
        if self.closed:
            raise Error("the watch is closed")
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self._events.put(None)
            raise self.error or Error("the watch is closed")
        return item

    def __iter__(self):
        while True:
            item = self.get()
            if item is not None:
                yield item

    def records(self):
        """``{name: Entry}`` as of the events delivered so far."""
        return dict(self._known)

    def close(self):
        if not self.closed:
            self.closed = True
            self._client._unwatch(self)
            if self.error is None:
                self.error = Error("the watch is closed")
                self._events.put(None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Call:
    """One request: what to send (``make(lease)`` builds it; ``needs_lease``
    says whether it names the lease), and its outcome."""

    __slots__ = ("make", "needs_lease", "deadline", "done", "reply", "error", "abandoned",
                 "on_reply", "lease", "rid", "keeper", "handle", "waker", "sends")

    def __init__(self, make, needs_lease, deadline, on_reply=None, keeper=False, done=None):
        self.make = make
        self.needs_lease = needs_lease
        self.deadline = deadline
        self.done = threading.Event() if done is None else done
        self.reply = None
        self.error = None
        self.abandoned = False
        self.on_reply = on_reply    # run in the keeper thread with the reply (internal calls)
        self.lease = None
        self.rid = None
        self.keeper = keeper        # the keeper's own (lease) call: goes first after a reconnection
        self.handle = None          # the Watch a WATCH call feeds
        self.waker = None           # a direct call's _Waker (its thread polls it while it waits)
        self.sends = 0              # how many times it went out (more than one: sent again after a reconnection)

    def complete(self):
        """The outcome is set: wake whoever waits for it."""
        self.done.set()
        if self.waker is not None and self.waker.ident != threading.get_ident():
            self.waker.wake()


class _Flag:
    """``done`` of a direct call: its own thread polls for it, nobody waits
    on it (cheaper than a threading.Event)."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = False

    def set(self):
        self.value = True

    def is_set(self):
        return self.value


class _Waker:
    """A pipe a thread polls beside the DEALER's signalling fd while it
    waits for the reply of a request it sent itself (a direct call), so that
    another thread that read that reply can wake it.  One per thread
    (``_thread_waker``), made on its first direct call."""

    def __init__(self):
        self.ident = threading.get_ident()
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def wake(self):
        try:
            os.write(self.w, b"x")
        except OSError:
            pass    # full: it is awake already

    def drain(self):
        try:
            while os.read(self.r, 4096):
                pass
        except OSError:
            pass

    def __del__(self):
        for fd in (getattr(self, "r", None), getattr(self, "w", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


_wakers = threading.local()
if hasattr(os, "register_at_fork"):
    # a forked child makes its own (the parent's pipe is the parent's)
    os.register_at_fork(after_in_child=lambda: _wakers.__dict__.pop("waker", None))


def _thread_waker():
    waker = getattr(_wakers, "waker", None)
    if waker is None:
        waker = _wakers.waker = _Waker()
    return waker


_EXPECTED = {p.Lookup: p.Found, p.Ping: p.Pong, p.Lease: p.Granted, p.List: p.Listed, p.Info: p.InfoReply}


def _local_ip(host, port):
    """This host's address on the route to ``host`` (no packet is sent)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class DirectoryClient(DirectoryBackend):
    """A client of the directory at ``hostname`` ("host" or "host:port").

    Connecting (and every later request) is bounded by ``timeout`` seconds;
    an unreachable directory raises :class:`pyzmq.errors.Error` naming it.
    ``ttl`` is the lease asked for (seconds; the directory may clamp it):
    names of a client that stops renewing are freed that long after its
    last renewal.  Safe to share between threads.

    ``server_key`` (the directory's CURVE public key, Z85) secures the link
    with CurveZMQ: the directory must hold the matching secret key, and
    this client authenticates with ``secret_key`` (Z85; a key made for this
    client when None).

    ``on_lost(name, reason)`` is called from the keeper thread (never with
    a lock held) for each name the directory refused when this client
    registered it again under a new lease; such names are also kept in
    ``lost``.

    ``lease=False`` makes a client that holds no lease until one is needed
    (what ``zmq_names`` uses): ``lookup``, ``list``, ``info`` and ``ping``
    need none, so opening only checks that the directory answers (a PING);
    ``subscribe`` (and ``wait_for``) take one then, since a WATCH lives
    under a lease; ``register`` raises, as on an ``EtcdDirectory`` made
    with ``lease=False``.
    """

    def __init__(self, hostname, timeout=5.0, server_key=None, secret_key=None, ttl=p.DEFAULT_TTL,
                 on_lost=None, lease=True):
        import zmq
        from pyzmq.curve import check_key, curve_keypair, curve_public
        if on_lost is not None and not callable(on_lost):
            raise TypeError(f"on_lost must be a callable(name, reason), not {type(on_lost).__name__}")
        self._on_lost = on_lost
        self.lost = {}    # name -> reason: names the directory refused on re-registration
        self._lost_news = []   # (name, reason) for on_lost, called by the keeper outside the lock
        self._host, self._port = parse_hostname(hostname)
        timeout = check_seconds(timeout, "timeout", positive=True)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
        if not (ttl > 0 and math.isfinite(ttl)) or ttl > 4_000_000:
            raise ValueError(f"ttl must be a positive number of seconds (a few are usual), not {ttl!r}")
        self._server_key = self._secret_key = self.public_key = None
        if server_key is not None:
            self._server_key = check_key(server_key, "directory_key")
            if secret_key is None:
                self.public_key, self._secret_key = curve_keypair()
            else:
                self._secret_key = check_key(secret_key, "secret_key")
                self.public_key = curve_public(self._secret_key)
        elif secret_key is not None:
            raise ValueError("secret_key for the directory needs server_key, the directory's public key")
        self.timeout = float(timeout)
        self.ttl = float(ttl)
        self.address = format_hostport(self._host, self._port)
        self.reconnects = 0
        self._local_ip = _local_ip(self._host, self._port)
        self._owner = (socket.gethostname()[:p.MAX_HOST],
                       os.getpid(),
                       os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else sys.executable)[:p.MAX_PROGRAM])

        self._lock = threading.RLock()     # guards the state below; the keeper takes it each round
        self._closed = False
        self._queue = collections.deque()  # calls to send
        self._pending = {}                 # request id -> call sent, awaiting its reply
        self._ids = itertools.count(1)
        self._lease = None                 # lease id, or None while (re)acquiring
        self._lease_ttl = None
        self._leasing = False              # a LEASE request is in flight
        self._lease_refusal = None         # why the last LEASE failed (refused, or no answer in time)
        self._lease_retry_at = None        # (lease=True) when to ask again after that (monotonic)
        self._lease_backoff = LEASE_RETRY
        self._renew_at = 0.0
        self._names = {}                   # name -> (kind, address, key) registered by this client
        self._connected = False
        self._ever_connected = False
        self._hold = False                 # after a reconnection: only the keeper's calls go,
                                           # until the lease is known good (or renewed and the names
                                           # registered again), so no request sees a half-empty directory
        self._tcp_up = False               # TCP connected, ZeroMQ handshake not yet done
        self._refusal = None               # DirectoryError of the last refused handshake
        self._last_failure = "not connected yet"
        self._opened = threading.Event()   # the first lease was granted (or PING answered), or opening failed
        self._lease_at_open = bool(lease)  # False: no lease until subscribe() needs one
        self._want_lease = bool(lease)     # a lease is held, or asked for
        self._answered = False             # (lease=False) the PING of the opening was answered
        self._seen = collections.deque(maxlen=6)   # the last socket events (for error messages)
        self._rounds = 0
        self._open_error = None
        # names whose records the keeper looks up in the background (watch())
        self._watch_lock = threading.Lock()
        self._wanted = set()
        self._watched = {}    # name -> _Watch
        self._watch_serial = 0
        self._looking = set()  # watched names with a lookup in flight
        self._subscriptions = {}   # request id of the live WATCH -> Watch

        ctx = _zmq_context()
        try:
            sock = ctx.socket(zmq.DEALER)
        except zmq.ZMQError as exc:
            raise Error(f"cannot make a socket for the directory client: {exc.strerror}; "
                        f"this process holds too many (the limit is {MAX_SOCKETS}, "
                        "or the open-files limit, `ulimit -n`)") from None
        sock.linger = 0
        # No ZMQ_IMMEDIATE: with it, libzmq ends the socket's pipe when the
        # connection drops (its "hiccup"), and a reply read at that moment
        # between its two frames aborts the process (libzmq 4.3.5's
        # `!_more` assertion in fq.cpp: its recv handles pending commands
        # every 100th call, which with two-frame replies is always a second
        # frame).  Requests go only while the monitor says the handshake is
        # done (_send, _send_direct); one sent in the moment before a
        # DISCONNECTED is read may reach the next connection, where its
        # answer is dropped by its request id (it was sent again under a new
        # one).
        sock.reconnect_ivl = RECONNECT_IVL_MS
        sock.reconnect_ivl_max = RECONNECT_IVL_MAX_MS
        sock.setsockopt(zmq.HEARTBEAT_IVL, p.HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, p.HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, p.KEEPALIVE_IDLE)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, p.KEEPALIVE_INTERVAL)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, p.KEEPALIVE_COUNT)
        sock.maxmsgsize = p.MAX_REPLY_MESSAGE
        if ":" in self._host:
            sock.ipv6 = True
        if self._server_key is not None:
            sock.curve_serverkey = self._server_key.encode("ascii")
            sock.curve_publickey = self.public_key.encode("ascii")
            sock.curve_secretkey = self._secret_key.encode("ascii")
        # (our own endpoint name: pyzmq's default one is made of the socket's
        # fd, which a new socket may reuse before libzmq has let go of it)
        endpoint = f"inproc://pyzmq-directory-monitor-{os.getpid()}-{next(_monitor_ids)}"
        sock.monitor(endpoint, zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED
                     | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        monitor = ctx.socket(zmq.PAIR)
        monitor.connect(endpoint)
        monitor.linger = 0
        self._sock = sock
        self._sock_fd = sock.FD            # its signalling fd (ZMQ_FD), which the keeper and direct calls poll
        self._raw = (sock, zmq.backend.Socket, int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK),
                     int(zmq.RCVMORE))
        self._zmq = zmq
        self._more = int(zmq.NOBLOCK | zmq.SNDMORE)
        self._direct = None                # the call a thread sent itself and waits for (_send_direct)
        self._monitor = monitor
        self._wake_r, self._wake_w = socket.socketpair()   # other threads wake the keeper
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        self._stop = threading.Event()
        host = f"[{self._host}]" if ":" in self._host else self._host
        sock.connect(f"tcp://{host}:{self._port}")
        self._keeper = threading.Thread(target=_keep_alive, args=(weakref.ref(self), self._stop),
                                        name=f"pyzmq-directory-{self.address}", daemon=True)
        self._keeper.start()
        deadline = time.monotonic() + self.timeout
        if lease:
            self._acquire_lease(deadline)
        else:
            self._submit(_Call(lambda current: p.Ping(), False, deadline, on_reply=self._pinged, keeper=True))
        self._opened.wait(self.timeout)
        with self._lock:
            error = self._open_error or (None if self._lease or self._answered else self._open_timeout())
        if error is not None:
            self._shutdown()
            raise error
        _clients.add(self)

    # -- public API --------------------------------------------------------

    @property
    def connected(self):
        """True while the link to the directory is up (handshake done)."""
        return self._connected and not self._closed

    @property
    def local_ip(self):
        """This host's IP address on the route to the directory."""
        return self._local_ip

    @property
    def closed(self):
        return self._closed

    @property
    def secure(self):
        """True when the link is secured by CurveZMQ."""
        return self._server_key is not None

    @property
    def lease_ttl(self):
        """The TTL the directory granted (seconds), or None while there is no lease."""
        return self._lease_ttl

    def register(self, kind, name, address, key=""):
        """Publish global ``name`` as an object of ``kind`` ("E" or "Q") at ``address``.

        ``key`` is the owner's CURVE public key in Z85, or "".  Registering a
        name this client already holds replaces its record.  The name lives
        as long as this client's lease and is registered again by itself
        when the lease had to be renewed from scratch.
        """
        p.validate_kind(kind), p.validate_name(name), p.validate_address(address), p.validate_key(key)
        self._check_may_hold(name)
        self._request(lambda lease: p.Register(lease, kind, name, address, key), name, True,
                      on_ok=lambda: self._names.__setitem__(name, (kind, address, key)))

    def lookup(self, name):
        """Return ``(kind, address, key)`` of global object ``name``."""
        p.validate_name(name)
        reply = self._request(lambda lease: p.Lookup(name), name, False)
        return reply.kind, reply.address, reply.key

    def unregister(self, name):
        """Withdraw global ``name``, which this client must have registered."""
        p.validate_name(name)
        self._check_may_hold(name)
        with self._lock:
            was_mine = self._names.pop(name, None) is not None
            if was_mine and (self._lease is None or not self._connected):
                return  # the directory drops it with the lease (or never had it again)
        # Sent again after a reconnection, its first copy may have withdrawn
        # the name already: NOT_FOUND, or NOT_OWNER once another client took
        # it meanwhile, then says the name is no longer ours, as asked.
        try:
            self._request(lambda lease: p.Unregister(lease, name), name, True,
                          resent_ok=(p.NOT_FOUND, p.NOT_OWNER) if was_mine else ())
        except DirectoryError as exc:
            if not (was_mine and exc.code == p.NOT_FOUND):
                raise

    def _check_may_hold(self, name):
        if not self._lease_at_open:
            raise Error(f"cannot register or unregister {name!r}: this client of the directory at "
                        f"{self.address} was made without a lease (lease=False), so it holds no names; "
                        "make one without lease=False")

    def ping(self):
        """Check that the directory answers; raise Error if it does not."""
        self._request(lambda lease: p.Ping(), None, False)

    def list(self, pattern="*"):
        """Every record whose name matches glob ``pattern`` (``*``, ``?``,
        ``[...]``), sorted by name: a list of :class:`pyzmq.protocol.Entry`.
        Pages through LIST; each page is one request within ``timeout``."""
        p.validate_pattern(pattern)
        entries, after = [], ""
        while True:
            page = self._request(lambda lease, a=after: p.List(pattern, a, p.MAX_PAGE), pattern, False)
            entries.extend(page.entries)
            if not page.more or not page.entries:
                return entries
            after = page.entries[-1].name

    def info(self, name):
        """The record of ``name`` and what its owner's lease says (host, pid,
        program) and when it was registered: a :class:`pyzmq.protocol.Entry`."""
        p.validate_name(name)
        reply = self._request(lambda lease: p.Info(name), name, False)
        return p.Entry(name, reply.kind, reply.address, reply.key, reply.host, reply.pid, reply.program,
                       reply.registered_ms)

    def subscribe(self, pattern="*", exact=False, max_unread=Watch.MAX_UNREAD):
        """A :class:`Watch` of the names matching glob ``pattern`` (or,
        ``exact``, the one name ``pattern``), holding at most ``max_unread``
        events not read yet (then it ends: :class:`WatchOverflow`).  Returns
        once the directory has sent the current records (within ``timeout``)."""
        (p.validate_name if exact else p.validate_pattern)(pattern)
        handle = Watch(self, pattern, exact, max_unread)
        self._watch_call(handle)
        return handle._wait_synced(self.timeout, self._timed_out)

    def wait_for(self, name, timeout):
        """``(kind, address, key)`` of ``name``, waiting up to ``timeout``
        seconds for it to be registered (through an exact WATCH, not by
        polling); DirectoryError(NOT_FOUND) when it does not come."""
        p.validate_name(name)
        deadline = time.monotonic() + timeout
        with self.subscribe(name, exact=True) as handle:
            while True:
                entry = handle.records().get(name)
                if entry is not None:
                    return entry.kind, entry.address, entry.key
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DirectoryError(f"no global object named {name!r} in the directory at {self.address} "
                                         f"(waited {timeout:g} s for it)", p.NOT_FOUND)
                handle.get(timeout=min(remaining, 0.5))

    def _watch_call(self, handle):
        mode = p.EXACT if handle.exact else p.GLOB
        call = _Call(lambda lease: p.Watch(lease, handle.pattern, mode), True, math.inf,
                     on_reply=lambda call, reply: None, keeper=False)
        call.handle = handle
        with self._lock:    # (the WATCH is queued before any answer to the LEASE can be read)
            if not self._want_lease and not self._closed:
                self._want_lease = True     # (lease=False: a WATCH lives under a lease)
                self._acquire_lease(time.monotonic() + self.timeout)
            self._submit(call)

    def _unwatch(self, handle):
        with self._lock:
            rid, handle.rid = handle.rid, None
            if rid is not None:
                self._subscriptions.pop(rid, None)
            if self._closed or rid is None or self._lease is None:
                return
            lease = self._lease
            self._queue.append(_Call(lambda current: p.Unwatch(lease, rid), False, time.monotonic() + self.timeout,
                                     on_reply=lambda call, reply: None))
        self._wakeup()

    def _rewatch(self):
        """With the lock held (keeper): watch again after a reconnection or a
        new lease (the directory's watches went with the old connection or
        lease); each Watch reports what changed meanwhile."""
        handles = list(self._subscriptions.values())
        self._subscriptions.clear()
        for handle in handles:
            if handle.closed:
                continue
            handle.rid = None
            handle._resync()
            mode = p.EXACT if handle.exact else p.GLOB
            call = _Call(lambda lease, h=handle, m=mode: p.Watch(lease, h.pattern, m), True, math.inf,
                         on_reply=lambda call, reply: None, keeper=True)
            call.handle = handle
            self._queue.append(call)

    def names(self):
        """The names this client has registered, sorted."""
        with self._lock:
            return sorted(self._names)

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
            self._wakeup()

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

    def close(self):
        """Revoke the lease (the directory frees this client's names at
        once), close the socket and stop the background thread.  Idempotent.
        Waits at most a second for the directory to confirm."""
        with self._lock:
            if self._closed:
                return
            lease = self._lease if self._connected else None
        if lease is not None and threading.current_thread() is not self._keeper:
            call = _Call(lambda current: p.Revoke(lease), False, time.monotonic() + min(self.timeout, CLOSE_WAIT))
            self._submit(call)
            call.done.wait(min(self.timeout, CLOSE_WAIT))
        self._shutdown()

    def _shutdown(self):
        with self._lock:
            self._closed = True
            self._connected = False
            calls = list(self._queue) + list(self._pending.values())
            handles = set(self._subscriptions.values()) | {c.handle for c in calls if c.handle is not None}
            self._queue.clear()
            self._pending.clear()
            self._subscriptions.clear()
        for call in calls:
            call.error = Error(f"the directory client for {self.address} is closed")
            call.complete()
        for handle in handles:
            handle._fail(Error(f"the watch of {handle.pattern!r} ended: the directory client for "
                               f"{self.address} is closed"))
        self._stop.set()
        self._wakeup()
        if self._keeper is not threading.current_thread():
            self._keeper.join(2.0)  # it closes the sockets on its way out

    def _abandon(self):
        """Close without waiting for anything and without a word to the
        directory: for an owner collected while open.  The keeper thread is
        told to stop, not joined: it closes the sockets on its way out.  The
        lease is not revoked, so the names go when it expires (one TTL)."""
        self._closed = True
        self._connected = False
        self._stop.set()
        self._wakeup()

    def __del__(self):
        # Dropped without close(): stop the keeper, which closes the sockets.
        if hasattr(self, "_stop"):
            self._stop.set()
            self._wakeup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else "connected" if self._connected else "reconnecting"
        return f"<DirectoryClient {self.address} {state}>"

    # -- requests (application threads) -------------------------------------

    def _wakeup(self):
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass    # full (the keeper will wake anyway) or closed

    def _submit(self, call):
        with self._lock:
            if self._closed:
                raise Error(f"the directory client for {self.address} is closed")
            self._queue.append(call)
        self._wakeup()

    def _request(self, make, name, needs_lease, on_ok=None, resent_ok=()):
        """Send a request built by ``make(lease)`` and wait for its reply (at
        most ``timeout``); return it, or raise Error.  ``on_ok`` runs under
        the lock after a successful reply, in the keeper thread.  An error
        whose code is in ``resent_ok`` answering a request that went out more
        than once counts as success (its first copy did the work)."""
        deadline = time.monotonic() + self.timeout
        box = {}

        def checked(call, reply):
            # in the keeper: check the reply and record the success atomically with it
            if isinstance(reply, p.ErrorReply) and call.sends > 1 and reply.code in resent_ok:
                call.reply = reply = p.Ok()
            if isinstance(reply, p.ErrorReply):
                box["error"] = DirectoryError(self._error_text(make(self._lease or "0" * 32), reply, name),
                                              reply.code)
            elif on_ok is not None:
                if call.abandoned:
                    self._undo(make(self._lease or "0" * 32))
                else:
                    on_ok()

        call = _Call(make, needs_lease, deadline, on_reply=checked, done=_Flag())
        try:
            if self._send_direct(call):
                finished = self._wait_direct(call)
            else:
                call.done = threading.Event()
                self._submit(call)
                finished = call.done.wait(max(0.0, deadline - time.monotonic()))
        except BaseException:
            call.abandoned = True   # interrupted: its reply, if it comes, is dropped
            raise
        if not finished:
            call.abandoned = True
            raise self._timed_out()
        if call.error is not None:
            raise call.error
        if "error" in box:
            raise box["error"]
        return self._expect(make(self._lease or "0" * 32), call.reply)

    def _send_direct(self, call):
        """Send ``call`` from the calling thread itself, when the link is in
        its steady state (connected, lease known good, nothing queued) and
        no other thread of this client is doing the same; False to leave it
        to the keeper.  Saves the two hand-offs between threads of the
        keeper path (about 0.3 ms of CPU a request)."""
        zmq = self._zmq
        with self._lock:
            if (self._closed or self._direct is not None or not self._connected or self._hold or self._queue
                    or (call.needs_lease and self._lease is None)):
                return False
            call.lease = self._lease
            try:
                body = p.encode_request(call.make(call.lease))
            except (TypeError, ValueError):
                return False        # (the keeper's path says what is wrong)
            rid = next(self._ids) & 0xFFFFFFFF
            try:
                self._send_message(p.encode_header(rid), body)
            except zmq.Again:
                return False
            call.rid = rid
            call.sends += 1
            call.waker = _thread_waker()
            self._direct = call
            self._pending[rid] = call
            self._read_for_others(zmq)
        return True

    def _wait_direct(self, call):
        """Wait (within the call's deadline) for the reply of a call this
        thread sent itself, reading the DEALER whenever its signalling fd
        says something came; True once the call is done.  The keeper, or
        another thread, may read that reply first: it then completes the
        call and wakes this thread through its waker."""
        import select
        zmq = self._zmq
        waker = call.waker
        poll = select.poll()
        poll.register(self._sock_fd, select.POLLIN)
        poll.register(waker.r, select.POLLIN)
        try:
            while not call.done.is_set():
                remaining = call.deadline - time.monotonic()
                if remaining <= 0:
                    return False
                for fd, _ in poll.poll(min(remaining, ROUND_MAX) * 1000):
                    if fd == waker.r:
                        waker.drain()
                with self._lock:
                    if self._closed:
                        break
                    self._read_for_others(zmq)
            return call.done.is_set()
        finally:
            with self._lock:
                if self._direct is call:
                    self._direct = None
            if not call.done.is_set():
                # abandoned (the deadline, Ctrl-C): the keeper takes it over
                # (its late reply, its expiry and undo), and may be asleep
                # until its next renewal
                self._wakeup()

    def _read_for_others(self, zmq):
        """Lock held, from a thread other than the keeper: read every reply
        there is (libzmq's fd signals only new activity, so each turn with
        the socket reads it empty), then wake the keeper if that left it
        work (a request to send again, a lost name to report)."""
        self._receive(zmq)
        if self._queue or self._lost_news:
            self._wakeup()

    def _send_message(self, header, body):
        """Lock held: send one request without waiting (zmq.Again when the
        link does not take it)."""
        sock, base = self._raw[:2]
        base.send(sock, header, self._more)
        base.send(sock, body, self._raw[4])

    def _undo(self, request):
        """A REGISTER whose caller gave up succeeded after all: withdraw it."""
        if isinstance(request, p.Register):
            name = request.name
            self._queue.append(_Call(lambda lease: p.Unregister(lease, name), True,
                                     time.monotonic() + self.timeout))

    def _timed_out(self):
        with self._lock:
            if self._closed:
                return Error(f"the directory client for {self.address} is closed")
            if self._refusal is not None:
                if not isinstance(self._refusal, DirectoryError):    # (not the directory protocol)
                    return Error(f"{self._refusal}; retrying in the background")
                return DirectoryError(f"{self._refusal}; retrying in the background", self._refusal.code)
            if not self._connected:
                return Error(f"the directory at {self.address} is gone ({self._last_failure}); "
                             "reconnecting in the background")
            refusal = self._lease_refusal
            if self._lease is None and refusal is not None and self._lease_at_open:
                text = f"{refusal}; asking again in the background"
                if isinstance(refusal, DirectoryError):
                    return DirectoryError(text, refusal.code)
                return Timeout(text)
        return Timeout(f"the directory at {self.address} did not answer within {self.timeout:g} s")

    def _open_timeout(self):
        with self._lock:
            if self._refusal is not None:
                return self._refusal
            if self._tcp_up and not self._connected:
                if self.secure:
                    return Timeout(f"the directory at {self.address} accepted the connection but did not "
                                   f"complete the CURVE handshake within {self.timeout:g} s (is directory_key "
                                   "its public key?)")
                return Timeout(f"the directory at {self.address} accepted the connection but did not "
                               f"answer the ZeroMQ greeting within {self.timeout:g} s")
            if self._connected:
                return Timeout(f"the directory at {self.address} did not " +
                               ("grant a lease" if self._lease_at_open else "answer a PING") +
                               f" within {self.timeout:g} s")
        reason = (f"no answer within {self.timeout:g} s" if self._last_failure == "not connected yet"
                  else self._last_failure)
        if not self._seen:
            reason += (f" (no TCP connection was made; keeper {'alive' if self._keeper.is_alive() else 'dead'}, "
                       f"{self._rounds} rounds)")
        return _UnreachableTimeout(_unreachable_text(self.address, reason), reason)

    def _expect(self, request, reply):
        expected = _EXPECTED.get(type(request), p.Ok)
        if not isinstance(reply, expected):
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
        if code == p.NOT_FOUND and isinstance(request, (p.Lookup, p.Info)):
            return f"no global object named {name!r} in the directory at {self.address}"
        if code == p.NOT_FOUND:
            return f"cannot unregister {name!r}: no global object of that name in the directory at {self.address}"
        if code == p.NOT_OWNER:
            return f"cannot unregister {name!r}: it is registered by another process"
        if code == p.LIMIT:
            return f"the directory at {self.address} refused {name!r}: {_printable(reply.message)}"
        what = p.ERROR_NAMES.get(code, f"error {code}")
        return f"the directory at {self.address} answered {what}: {_printable(reply.message)}"

    def _held_here(self, name):
        """True when another open client of this process holds ``name`` in
        the same directory (an instance made again, as by a notebook cell
        run twice, while the first one is still open)."""
        for other in list(_clients):
            if other is not self and not other._closed and name in other._names \
                    and other.address == self.address:
                return True
        return False

    # -- the lease (keeper thread, lock held) ----------------------------------

    def _acquire_lease(self, deadline=None):
        """Queue a LEASE request unless one is in flight; on its grant,
        register every remembered name again."""
        with self._lock:
            if self._leasing or self._closed:
                return
            self._leasing = True
            self._lease_retry_at = None
            host, pid, program = self._owner
            ttl_ms = int(self.ttl * 1000)
            call = _Call(lambda lease: p.Lease(ttl_ms, host, pid, program), False,
                         deadline or math.inf, on_reply=self._granted, keeper=True)
            self._queue.appendleft(call)
        self._wakeup()

    def _pinged(self, call, reply):
        """(lease=False) The opening's PING was answered: the directory is there."""
        self._answered = True
        self._opened.set()

    def _granted(self, call, reply):
        self._leasing = False
        self._hold = False      # the re-registrations queued below go before any later request
        if not isinstance(reply, p.Granted):
            if isinstance(reply, p.ErrorReply):
                error = DirectoryError(f"the directory at {self.address} refused a lease: "
                                       f"{_printable(reply.message)}", reply.code)
            else:
                error = Error(f"the directory at {self.address} answered {type(reply).__name__} to LEASE")
            if not self._opened.is_set():
                self._open_error = error
            elif self._lease is None:
                self._lease_failed(error)
            self._opened.set()
            return
        first = self._lease is None and not self._opened.is_set()
        self._lease_refusal = None
        self._lease_backoff = LEASE_RETRY
        self._lease = reply.lease
        self._lease_ttl = reply.ttl_ms / 1000.0
        self._renew_at = time.monotonic() + self._lease_ttl / p.RENEW_FRACTION
        self._opened.set()
        if first:
            return
        if self._subscriptions:
            self._rewatch()
        if not self._names:
            return
        log.warning("registering %d name(s) again at the directory at %s under a new lease",
                    len(self._names), self.address)
        for name, (kind, address, key) in list(self._names.items()):
            self._queue.appendleft(_Call(lambda lease, k=kind, n=name, a=address, c=key: p.Register(lease, k, n, a, c),
                                         True, math.inf, on_reply=self._reregistered, keeper=True))

    def _lease_failed(self, error):
        """Lock held (keeper), after the opening: a LEASE was refused or not
        answered in time, and no lease is held.  Nothing would ask for one
        again, so the calls waiting for it (and the watches they feed, which
        would block for ever) fail with ``error``.  A client made with
        ``lease=False`` then holds none until the next ``subscribe`` asks;
        one that holds names asks again after a back-off (1 s, doubling up to
        10 s), and registers its names again once it has one."""
        self._lease_refusal = error
        self._refuse_lease_calls(error)
        if self._lease_at_open:
            # (no caller sees this one: its names are off the directory until then)
            log.warning("%s; asking again in %g s (%d name(s) to register again)", error, self._lease_backoff,
                        len(self._names))
            self._lease_retry_at = time.monotonic() + self._lease_backoff
            self._lease_backoff = min(LEASE_RETRY_MAX, self._lease_backoff * 2)

    def _refuse_lease_calls(self, error):
        """The lease the calls needing one wait for is refused: they fail
        with ``error``, their watches too.  (lease=False) The next
        subscribe() asks again."""
        if not self._lease_at_open:
            self._want_lease = False
        keep = collections.deque()
        for call in self._queue:
            if not call.needs_lease:
                keep.append(call)
                continue
            call.error = error
            call.complete()
            if call.handle is not None:
                call.handle._fail(error)
        self._queue = keep

    def _reregistered(self, call, reply):
        if isinstance(reply, p.ErrorReply) and reply.code != p.NO_LEASE:
            request = call.make(call.lease)
            name = request.name
            if self._names.get(name) == (request.kind, request.address, request.key):
                del self._names[name]
            why = ("another process registered it while this client's lease at the directory "
                   f"at {self.address} was lost" if reply.code == p.DUPLICATE
                   else f"the directory at {self.address} refused it: {_printable(reply.message)}")
            self.lost[name] = why
            self._lost_news.append((name, why))
            log.warning("global name %r is no longer registered by this process: the directory at %s "
                        "refused it when registering it again (%s)", name, self.address, why)

    def _renewed(self, call, reply):
        if isinstance(reply, p.ErrorReply) and reply.code == p.NO_LEASE and call.lease == self._lease:
            self._lost_lease()
        elif isinstance(reply, p.Ok):
            self._hold = False

    def _renew(self, now):
        """Queue a KEEPALIVE of the lease, first in line."""
        lease = self._lease
        self._renew_at = now + self._lease_ttl / p.RENEW_FRACTION
        call = _Call(lambda current: p.KeepAlive(lease), False, now + self._lease_ttl,
                     on_reply=self._renewed, keeper=True)
        call.lease = lease
        self._queue.appendleft(call)

    def _lost_lease(self):
        if self._lease is not None:
            log.info("the lease at the directory at %s is gone; asking for a new one", self.address)
            self._lease = None
            self._lease_ttl = None
        self._acquire_lease()

    # -- the keeper's round ------------------------------------------------

    def _round(self, poller, zmq):
        """One round of the keeper: wait (at most ROUND_MAX) for anything
        to do, then do it.  Returns False when the client is closed."""
        self._rounds += 1
        with self._lock:
            if self._closed:
                return False
            # The DEALER's signalling fd is watched while the keeper expects
            # something there: calls to send (the fd says when a full queue
            # takes more), replies to calls other than a direct one (whose
            # thread reads its own), events of watches.
            direct = 1 if self._direct is not None and self._direct.rid in self._pending else 0
            watch_fd = bool(self._queue) or bool(self._subscriptions) or len(self._pending) > direct
            # Idle (leased, connected, no call queued or in flight, no name to
            # look up): nothing is due before the renewal, and whatever comes
            # wakes the keeper (a call, watch(), the monitor, close), so it
            # sleeps until then rather than every ROUND_MAX: 2,000 instances
            # in a process make 2,000 keepers.
            idle = ((self._lease is not None or not self._want_lease) and self._connected and not self._queue
                    and not self._pending and not self._wanted)
        now = time.monotonic()
        timeout = ROUND_MAX
        if self._lease is not None:
            timeout = max(0.0, self._renew_at - now if idle else min(timeout, self._renew_at - now))
        elif idle:
            timeout = None      # (no lease to renew: only what wakes it)
        poller.register(self._sock_fd, zmq.POLLIN if watch_fd else 0)
        events = dict(poller.poll(None if timeout is None else timeout * 1000))
        if self._wake_fd in events or self._wake_r in events:   # (zmq.Poller answers the fd)
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass
        with self._lock:
            if self._closed:
                return False
            if self._monitor in events:
                self._monitor_events(zmq)
            # (the socket is used raw, so every turn with it reads it empty:
            # its fd signals only what comes after)
            self._receive(zmq)
            now = time.monotonic()
            if self._lease is not None and now >= self._renew_at:
                self._renew(now)
            elif (self._lease is None and self._lease_retry_at is not None and now >= self._lease_retry_at
                    and self._want_lease and not self._leasing):
                self._acquire_lease()
            self._look_up_wanted(now)
            if self._queue:
                self._send(zmq)
                self._receive(zmq)
            self._expire_calls(now)
            news, self._lost_news = self._lost_news, []
        for name, why in news:          # outside the lock: the callback may call us
            if self._on_lost is not None:
                try:
                    self._on_lost(name, why)
                except Exception:
                    log.exception("the on_lost callback failed for global name %r", name)
        return True

    def _send(self, zmq):
        """Send queued calls while the link is up (the monitor saw the
        handshake and no disconnection since) and takes them."""
        if not self._connected:
            return
        kept = collections.deque()
        while self._queue and len(self._pending) < MAX_IN_FLIGHT:
            call = self._queue.popleft()
            if call.abandoned and call.on_reply is None:
                continue
            if call.handle is not None and call.handle.closed:
                call.complete()     # (its watch was closed before it went: nobody would read it)
                continue
            if self._hold and not call.keeper:
                kept.append(call)
                continue
            if call.needs_lease:
                if self._lease is None:
                    kept.append(call)       # waits for the new lease
                    continue
                call.lease = self._lease
            elif call.lease is None:
                call.lease = self._lease
            try:
                body = p.encode_request(call.make(call.lease))
            except (TypeError, ValueError) as exc:
                call.error = Error(f"cannot encode a directory request: {exc}")
                call.complete()
                continue
            rid = call.rid = next(self._ids) & 0xFFFFFFFF
            try:
                self._send_message(p.encode_header(rid), body)
            except zmq.Again:
                self._queue.appendleft(call)
                break
            call.sends += 1
            self._pending[rid] = call
            if call.handle is not None:
                if call.handle.closed:
                    continue
                call.handle.rid = rid
                self._subscriptions[rid] = call.handle
        self._queue.extendleft(reversed(kept))

    def _receive(self, zmq):
        """Read every reply there is (the binding's base-class calls, with
        integer flags: no exception for the usual empty socket)."""
        sock, base, events, pollin, noblock, rcvmore = self._raw
        recv, get = base.recv, base.get
        while get(sock, events) & pollin:
            frames = [recv(sock, noblock)]
            while get(sock, rcvmore):
                frames.append(recv(sock, noblock))
            if len(frames) != 2:
                continue
            try:
                rid = p.decode_header(frames[0])
                reply = p.decode_reply(frames[1])
            except p.ProtocolError as exc:
                log.warning("the directory at %s sent a malformed reply: %s", self.address, exc)
                continue
            handle = self._subscriptions.get(rid)
            if handle is not None:
                call = self._pending.pop(rid, None)
                if isinstance(reply, p.Events):
                    handle._feed(reply)
                    if call is not None and not reply.synced:
                        self._pending[rid] = call       # more snapshot batches to come
                    continue
                del self._subscriptions[rid]
                handle.rid = None
                if isinstance(reply, p.ErrorReply) and reply.code == p.NO_LEASE and call is not None:
                    if call.lease == self._lease:
                        self._lost_lease()
                    self._queue.append(call)
                    continue
                handle._fail(DirectoryError(f"the directory at {self.address} refused to watch "
                                            f"{handle.pattern!r}: {_printable(getattr(reply, 'message', str(reply)))}",
                                            getattr(reply, "code", p.MALFORMED)))
                continue
            call = self._pending.pop(rid, None)
            if call is None:
                continue        # the answer to a request sent before a reconnection
            if (isinstance(reply, p.ErrorReply) and reply.code == p.NO_LEASE and call.needs_lease):
                # the lease is gone: send it again under the new one
                if call.lease == self._lease:
                    self._lost_lease()
                self._queue.append(call)
                continue
            self._finish(call, reply)

    def _finish(self, call, reply):
        call.reply = reply
        if call.on_reply is not None:
            try:
                call.on_reply(call, reply)
            except Exception:
                log.exception("directory client %s: handling a reply failed", self.address)
        call.complete()

    def _expire_calls(self, now):
        for rid, call in list(self._pending.items()):
            if call.deadline <= now:
                del self._pending[rid]
                self._expired(call)
        if self._queue and any(c.deadline <= now for c in self._queue):
            keep = collections.deque()
            for call in self._queue:
                (self._expired(call) if call.deadline <= now else keep.append(call))
            self._queue = keep

    def _expired(self, call):
        call.abandoned = True
        if call.on_reply == self._granted:
            self._leasing = False
            if self._opened.is_set() and self._lease is None:
                # (after the opening) the calls waiting for this lease, and
                # the watches they would feed, would wait for ever
                self._lease_failed(Timeout(f"the directory at {self.address} did not grant a lease "
                                           f"within {self.timeout:g} s") if self._connected
                                   else self._timed_out())
            self._opened.set()
        elif call.on_reply == self._renewed and self._connected:
            # (an unanswered KEEPALIVE on a live link must not hold requests
            # forever; one that expired while the link was down lifts nothing)
            self._hold = False
        call.error = self._timed_out()
        call.complete()

    def _monitor_events(self, zmq):
        from zmq.utils.monitor import recv_monitor_message
        while True:
            try:
                event = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = event["event"]
            self._seen.append(kind)
            if kind == zmq.EVENT_CONNECTED:
                self._tcp_up = True
            elif kind == zmq.EVENT_CONNECT_RETRIED:
                self._tcp_up = False
                if not self._ever_connected and self._last_failure == "not connected yet":
                    self._last_failure = "connection refused"
                    if not self._opened.is_set():
                        self._open_error = _Unreachable(_unreachable_text(self.address, "Connection refused"),
                                                        "Connection refused")
                        self._opened.set()
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self._ever_connected:
                    log.info("connected to the directory at %s again", self.address)
                    self.reconnects += 1
                    if self._lease is not None:
                        # is the lease still there (or did the directory restart)?
                        self._hold = True
                        self._renew(time.monotonic())
                    elif not self._leasing:
                        self._hold = False      # (lease=False: no lease to check, nothing to wait for)
                    self._rewatch()
                self._connected = self._ever_connected = True
                self._refusal = None
                self._last_failure = None
            elif kind == zmq.EVENT_DISCONNECTED:
                was = self._connected
                self._connected = self._tcp_up = False
                if self._ever_connected:
                    # Hold application requests from now on, not from the next
                    # HANDSHAKE_SUCCEEDED: libzmq attaches the new connection's
                    # pipe (the DEALER turns writable) before this monitor may
                    # report it, and a request sent in that gap could reach a
                    # restarted directory before the names are registered again.
                    # The lease check (a KEEPALIVE, or a new lease and the
                    # re-registrations) lifts the hold.
                    self._hold = True
                if was:
                    self._last_failure = "the connection closed"
                    log.info("lost the directory at %s", self.address)
                    # requests sent on the old connection go again on the next
                    for call in sorted(self._pending.values(), key=lambda c: c.rid, reverse=True):
                        self._queue.appendleft(call)
                    self._pending.clear()
                elif self._refusal is None and not self._opened.is_set() and not self.secure:
                    self._open_error = Error(f"the server at {self.address} does not speak the directory "
                                             "protocol: it closed the connection in the ZeroMQ handshake")
                    self._opened.set()
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                          zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    text = (f"the directory at {self.address} refused this client's CURVE key "
                            f"{self.public_key} (ZAP status {event['value']}): it is not allowed by the "
                            "directory's allow list (--curve-allow), or this address holds too many "
                            "connections" if self.secure else
                            f"the directory at {self.address} refused this client (ZAP status {event['value']}: "
                            "this address may hold too many connections to it)")
                    error = DirectoryError(text, p.AUTH)
                elif self.secure:
                    error = DirectoryError(f"the directory at {self.address} failed the CURVE handshake: "
                                           "it does not hold the secret key of directory_key, or it does "
                                           "not use CURVE", p.AUTH)
                else:
                    error = Error(f"the server at {self.address} does not speak the directory protocol "
                                  "(the ZeroMQ handshake failed; a secure directory needs directory_key)")
                if self._refusal is None or str(self._refusal) != str(error):
                    if self._opened.is_set():
                        log.warning("%s", error)
                self._refusal = error
                self._last_failure = str(error)
                if not self._opened.is_set():
                    self._open_error = error
                    self._opened.set()

    def _look_up_wanted(self, now):
        """Queue LOOKUPs for the names watch() asked for whose turn has come."""
        if not self._connected:
            return
        with self._watch_lock:
            due = [n for n in self._wanted
                   if n not in self._looking and (n not in self._watched or self._watched[n].due <= now)]
            self._looking.update(due)
        for name in due:
            self._queue.append(_Call(lambda lease, n=name: p.Lookup(n), False, now + self.timeout,
                                     on_reply=self._looked_up))

    def _looked_up(self, call, reply):
        name = call.make(None).name
        if isinstance(reply, p.Found):
            record = (reply.kind, reply.address, reply.key)
        elif isinstance(reply, p.ErrorReply) and reply.code == p.NOT_FOUND:
            record = None           # gone for now: its owner may come back
        else:
            record = False          # refused: do not keep asking
        with self._watch_lock:
            self._looking.discard(name)
            self._wanted.discard(name)
            if record is False:
                return
            previous = self._watched.get(name)
            interval = WATCH_FIRST
            if record is not None and previous is not None and previous.record == record:
                interval = min(WATCH_MAX, previous.interval * 2)    # unchanged: ask less often
            self._watch_serial += 1
            self._watched[name] = _Watch(self._watch_serial, record, interval, time.monotonic() + interval)


def _keep_alive(ref, stop):
    """Body of the keeper thread: it owns the client's sockets.

    It holds the client only weakly between rounds, so a client dropped
    without close() is collected and the thread ends (closing the sockets).
    """
    import zmq
    client = ref()
    sock, monitor, wake, wake_w = client._sock, client._monitor, client._wake_r, client._wake_w
    poller = zmq.Poller()
    poller.register(client._sock_fd, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    poller.register(wake, zmq.POLLIN)
    del client
    try:
        while not stop.is_set():
            client = ref()
            if client is None:
                break
            try:
                if not client._round(poller, zmq):
                    break
            except Exception:  # never let the keeper die silently
                log.exception("directory keeper for %s failed", client.address)
                time.sleep(ROUND_MAX)
            del client
    finally:
        # stop the monitor before closing anything: closing a monitored
        # socket (or its monitor's reader) first can wedge libzmq's I/O thread
        try:
            sock.disable_monitor()
        except Exception:
            pass
        for s in (monitor, sock):
            try:
                s.close(linger=0)
            except Exception:
                pass
        wake.close()
        wake_w.close()
