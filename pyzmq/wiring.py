"""The wiring API: named exchanges and queues, bound by name, as in ØMQ 0.3.

``ZMQ`` keeps the names, scopes and bindings of one instance and asks the
directory (``zmq_server``) about global names; the sockets and the hot path
(``send``, ``receive`` and their batch forms) live in the C core,
``pyzmq._zmq.Engine``, which ``ZMQ`` extends.
"""

from __future__ import annotations

import atexit
import difflib
import errno
import itertools
import logging
import os
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Tuple, TypedDict

from pyzmq import _zmq
from pyzmq.curve import strip_key
from pyzmq._zmq import check_hwm, check_scope, check_seconds, check_style
from pyzmq.errors import Error
from pyzmq.location import parse_location
from pyzmq.protocol import validate_name

if TYPE_CHECKING:
    from typing_extensions import Self

    from pyzmq.directory import DirectoryClient
    from pyzmq.etcd_directory import EtcdDirectory

SCOPE_LOCAL = _zmq.SCOPE_LOCAL
SCOPE_GLOBAL = _zmq.SCOPE_GLOBAL
_SCOPE_NAMES = _zmq.SCOPE_NAMES

STYLE_DATA_DISTRIBUTION = _zmq.STYLE_DATA_DISTRIBUTION
STYLE_LOAD_BALANCING = _zmq.STYLE_LOAD_BALANCING

_KIND_CODE = {"exchange": "E", "queue": "Q"}
_KIND_NAME = {"E": "exchange", "Q": "queue"}

log = logging.getLogger("pyzmq.wiring")

# bind(follow=...): whether a binding follows its name to a new directory
# record (an owner that restarted elsewhere or with another key)
FOLLOW_SAME_KEY = "same-key"    # only to a record with the key it was bound with
FOLLOW_ANY_KEY = "any-key"      # to a record with any CURVE key, never a keyless one
FOLLOW_ANY = "any"              # to any record, keyless too (plain bindings' default)
FOLLOW_NEVER = "never"          # stay where bind() connected
_FOLLOW = (FOLLOW_SAME_KEY, FOLLOW_ANY_KEY, FOLLOW_ANY, FOLLOW_NEVER)

_live: weakref.WeakSet[ZMQ] = weakref.WeakSet()

# Global objects owned by instances of this process, by registered address:
# a binder in this process connects to them through inproc, not TCP.
# "IP:port" -> (weakref to owner, inproc endpoint)
_here: Dict[str, Tuple[weakref.ref[ZMQ], str]] = {}
_here_lock = threading.Lock()

_zap_serial = itertools.count(1)


@dataclass
class _Object:
    kind: str                 # "exchange" or "queue"
    id: int
    name: str
    scope: int
    location: str             # as the user gave it
    style: int = STYLE_DATA_DISTRIBUTION
    hwm: Optional[int] = None     # the queue's own mark, if given
    address: Optional[str] = None # "IP:port" registered in the directory (global only)

    def describe(self):
        where = f" at {self.address}" if self.address else ""
        return f"{self.name}({_SCOPE_NAMES[self.scope]}{where})"


class ExchangeStats(TypedDict):
    """One exchange's counters in ZMQ.stats()."""
    id: int
    sent: int           # messages sent (once each, whatever the fan-out)
    bytes: int          # their bytes
    dropped: int        # messages sent while nothing was bound (dropped, as in 0.3)
    blocked: float      # seconds send() waited for room (a bound queue at its mark)
    bound: int          # queues bound now: bindings + binders
    bindings: int       # bindings made by this instance's bind()
    binders: int        # wiring binders attached to its listener (remote subscribers)


class QueueStats(TypedDict):
    """One queue's counters in ZMQ.stats()."""
    id: int
    received: int       # messages receive() and its kin handed out from it
    stashed: int        # messages a bind() read early, handed out first
    ready: bool         # a message is waiting in one of its sockets (libzmq does not say how many)


class Stats(TypedDict):
    exchanges: Dict[str, ExchangeStats]
    queues: Dict[str, QueueStats]


def _a(noun):
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _check_name(name, what):
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, not {type(name).__name__}")
    validate_name(name)


class ZMQ(_zmq.Engine):
    """One wiring instance: its exchanges, queues and bindings.

    ``ZMQ("host[:port]")`` connects to the directory ``zmq_server`` (default
    port 5682) so global names work; ``ZMQ()`` is standalone (local scope
    only).  An instance belongs to the thread that created it.

    Keyword arguments:
      timeout: seconds to wait for the directory (connect and each request).
      hwm: high-water mark, in messages, of each binding's pipe (and of each
        queue's incoming side); send blocks when a bound queue is full.
      linger: the close timeout: seconds close() and the exit handler wait
        for queued outgoing messages to leave this process (default 10).
      bind_timeout: seconds bind() waits for a remote exchange's owner to
        confirm the binding, and, for CURVE bindings, for the handshake.
      secret_key: this instance's CURVE secret key (Z85, 40 characters); its
        global objects' listeners then encrypt, and their public key is
        registered in the directory (see docs/security.md).
      allowed_keys: client public keys (Z85) allowed to connect to this
        instance's listeners; None allows any CURVE client.
      directory_key: the CURVE public key (Z85) of a secure zmq_server; the
        directory connection is then authenticated both ways and encrypted,
        this instance proving `secret_key` (or a key made for it).
      require_curve: every global object this instance binds to must be
        registered with a CURVE key; bind() refuses a keyless one
        (pyzmq.Error, EACCES) and no binding follows a name to one.
      on_lost: called as on_lost(name, reason) from the directory client's
        thread when a global name of this instance could not be registered
        again after a directory reconnection (another process took it);
        whether or not it is given, the next call that uses the object
        raises pyzmq.Error naming it.
      etcd_options: with ``ZMQ("etcd://h1:2379,h2:2379,h3:2379[/prefix]")``
        (the directory on an etcd cluster, docs/etcd.md), keyword arguments
        of pyzmq.etcd_directory.EtcdDirectory: ttl, user, password, ca,
        cert, key.
    """

    def __init__(self, hostname: Optional[str] = None, *, timeout: float = 5.0,
                 hwm: int = 1000, linger: float = 10.0, bind_timeout: float = 10.0,
                 secret_key: Optional[str] = None, allowed_keys: Optional[Iterable[str]] = None,
                 directory_key: Optional[str] = None, require_curve: bool = False,
                 on_lost: Optional[Callable[[str, str], None]] = None,
                 etcd_options: Optional[Dict[str, object]] = None) -> None:
        if on_lost is not None and not callable(on_lost):
            raise TypeError(f"on_lost must be a callable(name, reason) or None, "
                            f"not {type(on_lost).__name__}")
        self._require_curve = bool(require_curve)
        self._on_lost = on_lost
        self._lost: Dict[str, str] = {}     # name -> reason: global names this instance lost
        self._timeout = check_seconds(timeout, "timeout", at_most=86400)
        self._bind_timeout = check_seconds(bind_timeout, "bind_timeout")
        linger = check_seconds(linger, "linger", at_most=86400)
        self._linger = linger
        check_hwm(hwm)
        secret_key, allowed = _zmq.check_curve_args(secret_key, allowed_keys)
        self._configure(hwm, int(linger * 1000))
        self._objects: Dict[str, _Object] = {}
        self._bindings: List[Tuple[str, str]] = []
        self._remote: List[_Remote] = []    # per binding that connects to another owner
        self._directory: Optional[DirectoryClient | EtcdDirectory] = None
        if hostname is not None:
            self._directory = self._open_directory(hostname, directory_key, secret_key,
                                                   etcd_options)
        elif directory_key is not None:
            raise ValueError("directory_key needs a directory: give the hostname of its zmq_server")
        if secret_key is not None:
            domain = f"pyzmq-wiring/{os.getpid()}/{next(_zap_serial)}"
            self._curve_setup(secret_key, domain)
            zap_domain = self._zap_domain
            assert zap_domain is not None       # _curve_setup just set it
            try:
                _zmq._zap_allow(zap_domain, allowed)
            except BaseException:
                if self._directory is not None:
                    self._directory.close()
                raise
        _live.add(self)

    def _open_directory(self, hostname, directory_key, secret_key, etcd_options=None):
        """The instance's directory client, connected (blocks up to
        `timeout`; asyncio.ZMQ.connect runs it in an executor thread: the
        client is thread-safe and touches no socket of the instance):
        an etcd cluster for an etcd:// address (docs/etcd.md), else zmq_server."""
        if not isinstance(hostname, str):
            from pyzmq.embedded import Directory
            if isinstance(hostname, Directory):
                raise TypeError("hostname must be a str: for an embedded directory give its "
                                "address, pyzmq.ZMQ(directory.address)")
            raise TypeError(f"hostname must be a str such as 'localhost:5682', "
                            f"not {type(hostname).__name__}")
        from pyzmq.etcd_directory import is_etcd_url
        if is_etcd_url(hostname):
            if directory_key is not None:
                raise ValueError("directory_key is for zmq_server; secure an etcd directory "
                                 "with etcd+tls:// and its options (docs/etcd.md)")
            from pyzmq.etcd_directory import EtcdDirectory
            return EtcdDirectory(hostname, timeout=self._timeout, on_lost=_LostHook(self),
                                 **(etcd_options or {}))
        from pyzmq.directory import DirectoryClient
        from pyzmq.location import check_directory_host
        check_directory_host(hostname)
        return DirectoryClient(
            hostname, timeout=self._timeout, server_key=directory_key,
            secret_key=secret_key if directory_key is not None else None,
            on_lost=_LostHook(self))

    # ---- context manager, closing -----------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: Optional[float] = None) -> int:
        """Wait until every message queued for another process has left this
        one, up to timeout seconds (None: the instance's `linger`, default
        10 s), then remove this instance's global names from the directory
        and close its sockets.  First of all, binders in this process stop
        sending to this instance's queues (their send waits and follows the
        name to its next owner); what the queues still hold is dropped.
        Returns the number of messages that had not left when the wait ran
        out (0: all did), after logging a WARNING with it.  Ctrl-C
        interrupts the wait (the instance is closed all the same).
        Idempotent; any other call afterwards raises pyzmq.Error."""
        if self.closed:
            return 0
        self._check_usable()
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout", at_most=86400)
        return self._shutdown(timeout)

    def _shutdown(self, timeout=None):
        """close() without the checks; also at exit.  In a forked child the
        sockets and the directory connection are the parent's: only this
        process's records of them are dropped."""
        left = 0
        if self.pid == os.getpid() and not self.closed:
            # binders of this process stop sending to its queues at once
            # (they wait and follow the names, as TCP binders do), then
            # names: nobody should find and bind to an instance that is
            # going; then wait for what is queued to leave
            self._withdraw()
            self._unregister()
            left = self._wait_drained(timeout)
        self._close_now()
        return left

    def _wait_drained(self, timeout):
        """Wait (up to timeout, None: `linger`) for what is queued to leave;
        the count that did not, after a WARNING.  Interrupted, the instance
        is closed and the exception goes on."""
        seconds = self._linger if timeout is None else timeout
        try:
            left, late, departed = _zmq._drain(self, seconds)
        except BaseException:
            self._close_now()
            raise
        return self._report_drained(left, late, departed, seconds)

    def _report_drained(self, left, late, departed, seconds):
        """What a close's wait found: the count left, after a WARNING naming
        their exchanges when there are any, and one per binding whose
        consumer was gone, which close() did not wait for (asyncio's close
        shares it).  The count does not include what was queued for those:
        libzmq does not say how much that is (docs/reliability.md)."""
        names = {o.id: o.name for o in self._objects.values() if o.kind == "exchange"}
        # what relays given up had received (said with their consumer below)
        late_left = left - sum(d.get("dropped", 0) for d in departed)
        if late_left:
            # a relay (both objects remote) is named by its label, "'E' -> 'Q'"
            log.warning("close(): %d messages had not left this process after %g s "
                        "(%s: their consumers are slow or stalled); "
                        "they are dropped", late_left, seconds,
                        ", ".join(f"relay {e}" if isinstance(e, str) else
                                  f"exchange {names.get(e, e)!r}" for e in late))
        for d in departed:
            if d["full"]:
                what = "its pipe was full: messages queued for it were not delivered"
            else:
                what = ("messages may still have been queued for it (libzmq does not "
                        "say; there may be none)")
            log.warning("close(): the consumer of %s at %s %s, so close() did not "
                        "wait for it; %s, and they are kept only for the socket's linger",
                        f"relay {d['relay']}" if d.get("relay") else
                        f"exchange {names.get(d['exchange'], d['exchange'])!r}", d["endpoint"],
                        ("had gone when close() began" if d["connected"] else
                         "was not reachable when close() began") if d["when"] == "before"
                        else "went while close() waited", what)
            if d.get("dropped"):
                log.warning("close(): relay %s had received %d messages it could not pass "
                            "on to its consumer at %s, which was gone; they are dropped",
                            d["relay"], d["dropped"], d["endpoint"])
        return left

    def _unregister(self):
        """Remove this instance's global names from the directory and close
        the connection to it (in a forked child: only forget it)."""
        directory, self._directory = self._directory, None
        if directory is not None and self.pid == os.getpid():
            for obj in self._objects.values():
                if obj.address is not None:
                    try:
                        directory.unregister(obj.name)
                    except Error:
                        pass    # the directory drops them with the connection anyway
            directory.close()

    def _close_now(self):
        try:
            self._unregister()
        finally:
            self._forget()
            self._close()

    def _forget(self):
        """Drop this process's records of the instance (never blocks)."""
        with _here_lock:
            for address in [a for a, (ref, _) in _here.items() if ref() is self]:
                del _here[address]
        if self._zap_domain is not None and self.pid == os.getpid():
            _zmq._zap_forget(self._zap_domain)
        _live.discard(self)

    def __del__(self):
        # Collected while open: warn, as files and sockets do, and close
        # without blocking or any directory I/O.  The directory drops this
        # instance's names when its connection closes; its keeper thread
        # ends on its own (it holds the client weakly).
        if self.closed:
            return
        if "_objects" not in self.__dict__:     # __init__ failed early: made nothing
            self._close(False)
            return
        if self.pid == os.getpid():
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
        directory, self._directory = self._directory, None
        if directory is not None and self.pid == os.getpid():
            directory._abandon()
        self._forget()
        self._close(False)      # closes the sockets, waiting for nothing

    # ---- creating ---------------------------------------------------------

    def create_exchange(self, name: str, scope: int = SCOPE_LOCAL, location: str = "", *,
                        style: int = STYLE_DATA_DISTRIBUTION) -> int:
        """Create (or get) the exchange `name`; returns its id for send().

        SCOPE_GLOBAL registers it in the directory, listening at `location`
        ('host:port', 'eth0:5555', '*:port' or '' for any interface and port).
        style: STYLE_DATA_DISTRIBUTION (every bound queue gets a copy, the
        default) or STYLE_LOAD_BALANCING (each message goes to one bound queue
        with room, round-robin).
        """
        check_style(style)
        return self._create("exchange", name, scope, location, style)

    def create_queue(self, name: str, scope: int = SCOPE_LOCAL, location: str = "", *,
                     hwm: Optional[int] = None) -> int:
        """Create (or get) the queue `name`; returns its id.

        receive() takes messages from every queue of this instance.
        SCOPE_GLOBAL registers it in the directory, listening at `location`.
        hwm: this queue's high-water mark in messages (its incoming side;
        default: the instance's hwm).
        """
        if hwm is not None:
            check_hwm(hwm)
        return self._create("queue", name, scope, location, STYLE_DATA_DISTRIBUTION, hwm)

    def _create(self, kind, name, scope, location, style, hwm=None):
        return run_steps(self._creating(kind, name, scope, location, style, hwm))

    def _creating(self, kind, name, scope, location, style, hwm):
        """create_*() as a generator: it yields its one directory request,
        a (function, *args) tuple, for the caller to run (run_steps here,
        in this thread; asyncio.ZMQ in an executor) and send back, or throw
        back what it raised; it returns the object's id."""
        made = self._create_object(kind, name, scope, location, style, hwm)
        if isinstance(made, int):
            return made
        obj, where = made
        if where is not None:
            try:
                bound, address = self._listen(obj, where)
                try:
                    yield (self._register, obj, address)
                except BaseException:
                    self._unlisten(obj, bound)
                    raise
                if name in self._objects:       # (asyncio: another task made it meanwhile)
                    self._unlisten(obj, bound)
                    raise Error(f"{name!r} was created by another task meanwhile")
            except BaseException:
                self._drop_unborn(obj)
                raise
            self._published(obj, address)
        self._objects[name] = obj
        return obj.id

    # the steps of _creating

    def _create_object(self, kind, name, scope, location, style, hwm):
        """Check the arguments; the id of the same object made before, or
        (the new _Object, its parsed location or None when local)."""
        self._check_usable()
        _check_name(name, kind)
        check_scope(scope)
        if not isinstance(location, str):
            raise TypeError(f"location must be a str such as 'eth0:5555', not "
                            f"{type(location).__name__}")
        if scope == SCOPE_LOCAL and location:
            raise ValueError(f"{kind} {name!r}: a location is only meaningful for "
                             "SCOPE_GLOBAL objects (local ones do not listen)")
        old = self._objects.get(name)
        if old is not None:
            self._check_not_lost(name)
            if (old.kind, old.scope, old.location, old.style, old.hwm) == (
                    kind, scope, location, style, hwm):
                return old.id
            raise Error(f"{name!r} already exists in this instance as a "
                        f"{_SCOPE_NAMES[old.scope]} {old.kind}"
                        + (f" at {old.location!r}" if old.location else "")
                        + "; a name can be created again only with the same arguments")
        where = None
        if scope == SCOPE_GLOBAL:
            if self._directory is None:
                raise Error(f"{kind} {name!r}: SCOPE_GLOBAL needs the directory; create "
                            "the instance with pyzmq.ZMQ('host[:port]') of a running zmq_server")
            where = parse_location(location)
        if kind == "exchange":
            oid = self._new_exchange(style)
        else:
            oid = self._new_queue(hwm)
        return _Object(kind, oid, name, scope, location, style, hwm), where

    def _drop_unborn(self, obj):
        """A failed create: the id was never handed out, so make it unknown
        again (a send() on it raises instead of going nowhere)."""
        try:
            self._drop_new(obj.id, obj.kind == "queue")
        except Error:
            pass    # another object came after it (asyncio): its slot stays, unused

    def _listen(self, obj, where):
        """Listen at the location: (endpoint bound, address to advertise)."""
        listen = self._exchange_listen if obj.kind == "exchange" else self._queue_listen
        try:
            bound = listen(obj.id, where.endpoint)
        except Error as e:
            raise Error(f"{obj.kind} {obj.name!r}: cannot listen at {obj.location!r} "
                        f"({e})", e.errno) from None
        return bound, where.advertised(bound, self._directory.local_ip)

    def _register(self, obj, address):
        """Register the object in the directory (blocks up to `timeout`;
        thread-safe: asyncio.ZMQ runs it in an executor)."""
        self._directory.register(_KIND_CODE[obj.kind], obj.name, address,
                                 key=self._curve_public_key())

    def _unlisten(self, obj, bound):
        if obj.kind == "exchange":
            self._exchange_unlisten(obj.id)
        else:
            self._queue_unlisten(obj.id, bound)

    def _published(self, obj, address):
        obj.address = address
        inproc = (self._exchange_inproc(obj.id) if obj.kind == "exchange"
                  else self._queue_endpoint(obj.id))
        with _here_lock:
            _here[address] = (weakref.ref(self), inproc)

    # ---- binding ----------------------------------------------------------

    def bind(self, exchange_name: str, queue_name: str, *, hwm: Optional[int] = None,
             follow: Optional[str] = None, key: Optional[str] = None,
             wait: Optional[float] = None) -> None:
        """Wire exchange `exchange_name` to queue `queue_name`.

        Either may be this instance's own object or a global name owned by
        another process or box; at least one must be this instance's own, or
        both global.  No message goes through the directory: the binder
        connects to the global side's listener.  Once bind() returns, every
        message sent on the exchange reaches the queue.  Binding a pair
        twice does nothing the second time.  hwm: this binding's high-water
        mark in messages (default: the queue's, else the instance's); a send
        waits when it is reached.  wait: seconds to wait for a remote name
        that is not registered yet (watched in the directory, not polled),
        so a consumer may start before its producer; then pyzmq.Error.

        follow: whether the binding follows the remote object's name when
        its owner comes back elsewhere: FOLLOW_SAME_KEY ("same-key", the
        default for a binding made over CURVE: only to a record with the
        same key), FOLLOW_ANY_KEY ("any-key": the key may change, but never
        to a keyless record), FOLLOW_ANY ("any", the default for a plain
        binding) or FOLLOW_NEVER ("never").  A refused follow leaves the
        binding where it was, so a waiting send/receive ends with its
        Timeout, which says why.
        key: the CURVE public key (Z85) the remote object must be
        registered with; another key, or none, raises pyzmq.Error (EACCES)
        here, and the binding then follows only to that key.  Binding a
        pair again checks key= and follow= against the binding there is:
        key= pins it if it was made over CURVE with that key and does not
        follow other keys (else pyzmq.Error, EACCES); another follow= is a
        ValueError.
        """
        plan = self._bind_plan(exchange_name, queue_name, hwm, follow, key, wait)
        if plan is None:
            return
        if not plan.ex:
            plan.ex_rec = self._lookup(exchange_name, "exchange", plan.wait)
        if not plan.q:
            plan.q_rec = self._lookup(queue_name, "queue", plan.wait)
        self._bind_checked(plan)
        ex, q, mark = plan.ex, plan.q, plan.mark
        if ex and q:
            self._exchange_connect(ex.id, self._queue_connectable(q.id), None, mark)
        elif ex:
            q_ep, q_ckey, q_owner = _connect_target(*plan.q_rec)
            handle = self._exchange_connect(ex.id, q_ep, q_ckey, mark, self._bind_timeout,
                                            q_owner)
            self._bind_remote(plan, handle, q_ep, q_ckey, q_owner)
        elif q:
            ex_ep, ex_ckey = _target(*plan.ex_rec)
            handle = self._queue_subscribe(q.id, ex_ep, self._bind_timeout,
                                           _owner_here(plan.ex_rec[0]), ex_ckey, mark,
                                           exchange_name)
            self._bind_remote(plan, handle, ex_ep, ex_ckey)
        else:
            q_ep, q_key = _target(*plan.q_rec)
            ex_ep, ex_key = _target(*plan.ex_rec)
            self._relay(ex_ep, q_ep, self._bind_timeout, _owner_here(plan.ex_rec[0]),
                        ex_key, q_key, mark, exchange_name, f"{exchange_name!r} -> {queue_name!r}")
        self._bind_done(plan)

    # bind() in steps, shared with asyncio.ZMQ.bind (which looks names up
    # in an executor and waits for the remote side on the loop)

    def _bind_plan(self, exchange_name, queue_name, hwm, follow, key, wait=None):
        """Check bind()'s arguments; a _BindPlan, or None when the pair is
        bound already."""
        self._check_usable()
        mark = -1 if hwm is None else check_hwm(hwm)
        if wait is not None and (isinstance(wait, bool) or not isinstance(wait, (int, float))
                                 or not 0 <= wait < float("inf")):
            raise (TypeError if isinstance(wait, bool) or not isinstance(wait, (int, float)) else ValueError)(
                f"wait must be a number of seconds (0 or more), not {wait!r}")
        _check_name(exchange_name, "exchange")
        _check_name(queue_name, "queue")
        if follow is not None and follow not in _FOLLOW:
            raise ValueError(f"follow must be one of {', '.join(map(repr, _FOLLOW))} "
                             f"or None, not {follow!r}")
        if key is not None:
            key = _zmq._check_z85_key(strip_key(key), "key")
            if follow in (FOLLOW_ANY_KEY, FOLLOW_ANY):
                raise ValueError(f"key= pins the name to one key; follow={follow!r} would "
                                 "let it change: use follow='same-key' or 'never'")
        ex = self._own(exchange_name, "exchange")
        q = self._own(queue_name, "queue")
        self._check_not_lost(exchange_name if ex else None, queue_name if q else None)
        if key is not None and not ex and not q:
            raise ValueError("key= pins one remote object, but both of "
                             f"{exchange_name!r} and {queue_name!r} are remote")
        if key is not None and ex and q:
            raise ValueError(f"key= pins a remote object, but {exchange_name!r} and "
                             f"{queue_name!r} are both this instance's own")
        if (exchange_name, queue_name) in self._bindings:
            self._check_rebind(exchange_name, queue_name, follow, key)
            return None
        if ex and q and mark < 0 and q.hwm is not None:
            mark = q.hwm
        return _BindPlan(exchange_name, queue_name, ex, q, mark, follow, key, wait)

    def _bind_checked(self, plan):
        """The looked-up records' keys against the plan's pinned key."""
        for name, kind, rec, mine in ((plan.exchange, "exchange", plan.ex_rec, plan.ex),
                                      (plan.queue, "queue", plan.q_rec, plan.q)):
            if not mine:
                self._check_record_key(name, kind, rec[1], plan.key)

    def _bind_remote(self, plan, handle, endpoint, ckey, owner=None):
        """Keep the binding's socket, to follow its peer when it moves
        (owner: the instance of this process it reaches through inproc)."""
        if plan.ex:
            name, kind, eid, rec_key = plan.queue, "queue", plan.ex.id, plan.q_rec[1]
        else:
            name, kind, eid, rec_key = plan.exchange, "exchange", 0, plan.ex_rec[1]
        self._remote.append(_Remote(name, kind, eid, handle, endpoint, ckey,
                                    self._directory.watch_serial(),
                                    *self._follow_rule(plan.follow, plan.key, rec_key)))
        self._remote[-1].binding = (plan.exchange, plan.queue)
        self._remote[-1].owner = weakref.ref(owner) if owner is not None else None

    def _bind_done(self, plan):
        self._bindings.append((plan.exchange, plan.queue))
        self.following = bool(self._remote)

    def _check_rebind(self, exchange_name, queue_name, follow, key):
        """bind() of a pair already bound: key= and follow= must hold for
        the binding there is (key= may pin the key it was made with), never
        be ignored."""
        remote = next((r for r in self._remote if r.binding == (exchange_name, queue_name)), None)
        if remote is None:
            return      # both this instance's own, or a relay: neither follows
        if key is not None:
            if remote.expected != key or remote.follow in (FOLLOW_ANY_KEY, FOLLOW_ANY):
                has = f"key {remote.expected}" if remote.expected else "no CURVE key"
                raise Error(f"{exchange_name!r} is already bound to {queue_name!r}, whose global "
                            f"{remote.kind} {remote.name!r} was registered with {has} "
                            f"(follow={remote.follow!r}), not pinned to the key {key}: refusing "
                            "to pin it now", errno.EACCES)
            remote.pinned = True
        if follow is not None and follow != remote.follow:
            raise ValueError(f"{exchange_name!r} is already bound to {queue_name!r} with "
                             f"follow={remote.follow!r}; binding again cannot change it to "
                             f"{follow!r}")

    def _follow_rule(self, follow, pinned, record_key):
        """(policy, key a new record must carry) of a new binding to a remote
        object whose bind()-time record had record_key ("" or None: none)."""
        record_key = record_key or None
        if follow is None:
            follow = FOLLOW_SAME_KEY if (record_key or pinned) else FOLLOW_ANY
        return follow, pinned or record_key, None, None, pinned is not None

    def _check_record_key(self, name, kind, record_key, pinned):
        """Refuse (pyzmq.Error, EACCES) a bind()-time record whose key is not
        the pinned one, or that has none when this instance demands CURVE."""
        if pinned is not None and (record_key or None) != pinned:
            has = f"key {record_key}" if record_key else "no CURVE key"
            raise Error(f"global {kind} {name!r} is registered with {has}, not the "
                        f"pinned key {pinned}: refusing to bind to it", errno.EACCES)
        if self._require_curve and not record_key:
            raise Error(f"global {kind} {name!r} is registered without a CURVE key, and "
                        "this instance requires CURVE (require_curve=True): refusing to "
                        "bind to it in plaintext", errno.EACCES)

    def _follow_refusal(self, remote, record_key):
        """Why ``remote`` must not follow its name to a record with
        record_key (None: none), or None when it may."""
        if remote.follow == FOLLOW_NEVER:
            return "the binding was made with follow='never'"
        if not record_key:
            if remote.follow == FOLLOW_SAME_KEY and remote.expected:
                return ("the new record has no CURVE key and the binding was made over CURVE: "
                        "refusing to fall back to plaintext; bind with follow='any' to allow it")
            if remote.follow == FOLLOW_ANY_KEY:
                return ("the new record has no CURVE key, and follow='any-key' follows "
                        "only records with one")
            if self._require_curve:
                return ("the new record has no CURVE key and this instance requires CURVE "
                        "(require_curve=True)")
            return None
        if remote.follow == FOLLOW_SAME_KEY and record_key != remote.expected:
            if remote.pinned:
                return (f"the new record has CURVE key {record_key}, not the pinned key "
                        f"{remote.expected}")
            if remote.expected is None:
                return ("the new record has a CURVE key, but the binding was made plain and "
                        "follow='same-key' keeps it so")
            return (f"the new record has CURVE key {record_key}, not the key the binding "
                    f"was made with, {remote.expected}; bind with follow='any-key' to let "
                    "it change keys")
        return None

    def _follow_moved(self, eid):
        """Called by a send on exchange eid (or, eid 0, a receive) that has
        been waiting a while: re-point every binding it depends on whose
        peer is now registered elsewhere (an owner restarted on another
        port or with another key, or re-created by another instance of this
        process), as far as the binding's follow policy allows.  Never
        blocks: it asks the directory client's background thread to look
        the names up and uses the answers that have come."""
        directory = self._directory
        remotes = [r for r in self._remote if r.eid == eid]
        if directory is None or not remotes:
            return
        directory.watch({r.name for r in remotes})
        for remote in remotes:
            seen = directory.watched(remote.name)
            if seen is None or seen[0] <= remote.serial:
                continue
            remote.serial, record = seen
            if record is None:
                continue        # not registered now: its owner may come back
            try:
                address, key = self._usable(remote.name, remote.kind, *record)
            except Error:
                continue
            endpoint, ckey, owner = _connect_target(address, key)
            if (endpoint, ckey) == (remote.endpoint, remote.key):
                remote.refused = remote.refused_record = None   # where it is connected
                continue
            why = self._follow_refusal(remote, key)
            if why is not None:
                if remote.refused_record != record:
                    # once per record: a waiting send asks four times a second
                    log.warning("global %s %r is now registered at %s, but its binding "
                                "was not followed there: %s", remote.kind, remote.name,
                                address, why)
                remote.refused, remote.refused_record = why, record
                continue
            remote.refused = remote.refused_record = None
            key = ckey
            old = remote.endpoint
            remote.endpoint, remote.key = endpoint, key     # first: never re-pointed twice
            try:
                self._retarget(remote.handle, old, endpoint, key, owner)
            except Error as exc:
                # connected nowhere now: try this answer again next time
                remote.endpoint, remote.serial = None, 0
                remote.owner = None
                log.warning("global %s %r moved to %s, but re-pointing its binding failed: %s",
                            remote.kind, remote.name, endpoint, exc)
                continue
            remote.owner = weakref.ref(owner) if owner is not None else None
            log.warning("global %s %r moved from %s to %s: binding re-pointed",
                        remote.kind, remote.name, old, endpoint)

    def _follow_refusals(self, eid):
        """For a Timeout's message: which bindings of exchange eid (0: of
        this instance's queues) did not follow their name, and why, and
        which wait for a new owner because theirs, an instance of this
        process, closed."""
        notes = [f"; global {r.kind} {r.name!r} was not followed to its new record: {r.refused}"
                 for r in self._remote if r.eid == eid and r.refused]
        notes += [f"; the owner of global {r.kind} {r.name!r}, another instance of this "
                  "process, has closed, and no new owner of the name was found yet: nothing "
                  "was sent to it since (the binding follows the name once it is registered)"
                  for r in self._remote
                  if r.eid == eid and r.kind == "queue" and not r.refused and _gone(r.owner)]
        return "".join(notes)

    @property
    def lost(self):
        """{name: reason} of this instance's global names the directory
        refused when they were registered again under a new lease (another
        process took them while the lease was lost, or the key grace period
        held them for another key)."""
        return dict(self._lost)

    def _check_not_lost(self, *names):
        for name in names:
            if name is not None and name in self._lost:
                obj = self._objects.get(name)
                kind = obj.kind if obj is not None else "object"
                raise Error(f"global {kind} {name!r} of this instance lost its name in the "
                            f"directory: {self._lost[name]}; binders that look it up now reach "
                            "that other process (close this instance and create the object "
                            "under another name, or stop the other process)", errno.EADDRINUSE)

    def _own(self, name, kind):
        obj = self._objects.get(name)
        if obj is None:
            return None
        if obj.kind != kind:
            raise Error(f"{name!r} is {_a(obj.kind)} of this instance, not {_a(kind)}")
        return obj

    def _lookup(self, name, kind, wait=None):
        if self._directory is None:
            raise Error(f"unknown {kind} {name!r}: it is not in this instance, and "
                        "this instance has no directory to look global names up in")
        from pyzmq.directory import DirectoryError
        from pyzmq.protocol import NOT_FOUND
        try:
            record = self._directory.lookup(name)
        except DirectoryError as exc:
            if exc.code != NOT_FOUND:
                raise
            if not wait:
                self._no_such_name(name, kind, exc)
            record = self._directory.wait_for(name, wait)
        return self._usable(name, kind, *record)

    # ---- the directory ------------------------------------------------------

    def names(self, pattern="*"):
        """The global names in the directory matching glob ``pattern``, sorted."""
        from pyzmq.directory import entry_dict
        return [entry_dict(entry)["name"] for entry in self._need_directory().list(pattern)]

    def info(self, name):
        """The directory's record of global ``name``: a dict with ``name``,
        ``kind`` ("exchange" or "queue"), ``address``, ``key`` (None when
        plain), ``owner`` (``host``, ``pid``, ``program``: what its owner
        said) and ``registered`` (ISO 8601 time, UTC)."""
        from pyzmq.directory import entry_dict
        return entry_dict(self._need_directory().info(validate_name(name)))

    def _need_directory(self):
        self._check_usable()
        if self._directory is None:
            raise Error("this instance has no directory: give ZMQ() the hostname of a zmq_server")
        return self._directory

    def _no_such_name(self, name, kind, exc):
        """Raise the NOT_FOUND of a bind() with what may have been meant."""
        from pyzmq.directory import DirectoryError
        mine = sorted(o.name for o in self._objects.values() if o.kind == kind)
        close = difflib.get_close_matches(name, mine, n=1)
        hint = (f"; did you mean {close[0]!r}?" if close else
                f"; this instance's {kind}s: {', '.join(map(repr, mine))}" if mine else "")
        raise DirectoryError(f"no {kind} {name!r}: it is neither an object of this instance "
                             f"nor a global name in the directory at "
                             f"{self._directory.address}{hint}", exc.code) from None

    def _usable(self, name, kind, code, address, key):
        """(address, key or None) of a directory record of global ``name``,
        after checking that it is ``kind`` and reachable from here."""
        if _KIND_NAME.get(code) != kind:
            raise Error(f"global name {name!r} is {_a(_KIND_NAME.get(code, code))}, not {_a(kind)}")
        host = address.rsplit(":", 1)[0]
        if host.startswith("127.") and not self._directory.local_ip.startswith("127."):
            # its owner reached the directory through loopback and advertised
            # that: only its own host can connect, and messages would vanish
            raise Error(f"global {kind} {name!r} is registered at loopback address "
                        f"{address}, which this host cannot reach: its owner should "
                        "reach zmq_server by a network address or give a location "
                        "with a reachable IP or interface")
        return address, key or None

    # ---- looking at it ----------------------------------------------------

    def wait_bound(self, eid: int, count: int = 1, timeout: Optional[float] = None) -> int:
        """Wait until at least `count` queues are bound to exchange `eid`, so
        that what is sent next reaches them (a message sent while nothing is
        bound is dropped).  Counts this instance's own bindings and the
        binders attached to a global exchange's listener (other processes,
        relays, other instances of this process), whom it lets in while it
        waits.  Returns the number bound; pyzmq.Timeout after `timeout`
        seconds (None: no limit).  A local exchange cannot gain bindings
        while this waits: pyzmq.Error if it has too few."""
        self._check_usable()
        return _zmq._wait_bound(self, eid, count, timeout)

    def stats(self) -> Stats:
        """Counters per exchange and per queue, by name: see ExchangeStats
        and QueueStats.  Kept in the C slots by the send and receive paths;
        reading them costs a pass over the slots."""
        self._check_usable()
        ex, qs = _zmq._stats(self)
        names = {o.id: o.name for o in self._objects.values()}
        return {
            "exchanges": {names.get(eid, str(eid)): {
                "id": eid, "sent": sent, "bytes": nbytes, "dropped": dropped,
                "blocked": blocked, "bound": own + binders, "bindings": own,
                "binders": binders}
                for eid, sent, nbytes, dropped, blocked, own, binders in ex},
            "queues": {names.get(qid, str(qid)): {
                "id": qid, "received": received, "stashed": stashed, "ready": ready}
                for qid, received, stashed, ready, _ in qs},
        }

    @property
    def exchanges(self) -> Dict[str, int]:
        """{name: id} of this instance's exchanges."""
        return {o.name: o.id for o in self._objects.values() if o.kind == "exchange"}

    @property
    def queues(self) -> Dict[str, int]:
        """{name: id} of this instance's queues."""
        return {o.name: o.id for o in self._objects.values() if o.kind == "queue"}

    @property
    def bindings(self) -> List[Tuple[str, str]]:
        """[(exchange name, queue name)] made by this instance's bind()."""
        return list(self._bindings)

    def __repr__(self) -> str:
        if self.closed:
            return "<pyzmq.ZMQ closed>"
        if not hasattr(self, "_objects"):      # its __init__ failed early
            return "<pyzmq.ZMQ not set up>"
        client = getattr(self, "_directory", None)
        directory = client.address if client is not None else None
        exchanges = ", ".join(o.describe() for o in self._objects.values() if o.kind == "exchange")
        queues = ", ".join(o.describe() for o in self._objects.values() if o.kind == "queue")
        bindings = ", ".join(f"{e}->{q}" for e, q in self._bindings)
        return (f"<pyzmq.ZMQ directory={directory} exchanges=[{exchanges}] "
                f"queues=[{queues}] bindings=[{bindings}]>")


class _LostHook:
    """The directory client's on_lost for one instance: remembers the lost
    name (the instance's next call that uses it raises) and calls the
    application's on_lost.  Holds the instance weakly."""

    def __init__(self, inst):
        self._ref = weakref.ref(inst)

    def __call__(self, name, reason):
        inst = self._ref()
        if inst is None:
            return
        inst._lost[name] = reason
        if inst._on_lost is not None:
            inst._on_lost(name, reason)


# a global object's directory record as bind() uses it: (address "IP:port",
# CURVE key (Z85) or None)
_Record = Tuple[str, Optional[str]]


@dataclass
class _BindPlan:
    """One bind() between its checks and its wiring."""
    exchange: str
    queue: str
    ex: Optional[_Object]   # this instance's _Object, or None (remote)
    q: Optional[_Object]
    mark: int               # the binding's high-water mark, -1: the instance's
    follow: Optional[str]   # a FOLLOW_* policy, or None (the default for its key)
    key: Optional[str]      # bind(key=): the remote object's pinned key (Z85)
    wait: Optional[float] = None    # seconds to wait for a remote name not registered yet
    ex_rec: Optional[_Record] = None    # the remote one's directory record
    q_rec: Optional[_Record] = None


@dataclass
class _Remote:
    """A binding whose connecting socket (``handle``) reaches a global object
    of another owner: ``name`` and ``kind`` of that object, the exchange id
    the socket belongs to (0: it feeds one of our queues), and where it is
    connected now."""
    name: str
    kind: str
    eid: int
    handle: _zmq.BindingHandle
    endpoint: str
    key: Optional[str] = None       # the CURVE key it connects with, or None
    serial: int = 0         # of the directory answer last looked at (or, at first,
                            # the serial when bind() looked it up: older answers are stale)
    follow: str = "any"     # its FOLLOW_* policy
    expected: Optional[str] = None  # the key a record must have to be followed (same-key), or None
    refused: Optional[str] = None   # why it did not follow the latest record, or None
    refused_record: Optional[_Record] = None
    pinned: bool = False    # expected came from bind(key=)
    binding: Optional[Tuple[str, str]] = None   # (exchange name, queue name) of its bind()
    owner: Optional[weakref.ref[ZMQ]] = None    # the instance of this process it reaches
                                                # through inproc, or None


def _gone(ref):
    """Whether the instance of this process a binding reached through
    inproc (a weak reference, None: none) began closing or was collected."""
    if ref is None:
        return False
    owner = ref()
    return owner is None or owner.closed or owner._withdrawn()


def _here_entry(address):
    """(owner, inproc endpoint) when a live instance of this process owns a
    global address, else (None, None)."""
    with _here_lock:
        ref, inproc = _here.get(address, (None, None))
    owner = ref() if ref else None
    if owner is None or owner.closed:
        return None, None
    return owner, inproc


def _owner_here(address):
    return _here_entry(address)[0]


def _endpoint(address):
    """Where to connect for a global object: inproc when an instance of this
    process owns it, else TCP."""
    return _here_entry(address)[1] or f"tcp://{address}"


def run_steps(steps):
    """Run a generator of directory requests (see ZMQ._creating) in this
    thread: each yielded (function, *args) is called, its result sent
    back, or what it raised thrown back; returns the generator's result."""
    try:
        request = next(steps)
        while True:
            try:
                result = request[0](*request[1:])
            except BaseException as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(result)
    except StopIteration as done:
        return done.value


def _target(address, key):
    """(endpoint, CURVE server key or None) to connect to a global object:
    inproc (never encrypted) when an instance of this process owns it with
    the key the record names.  A record naming another key (a squatter that
    registered someone's public key at an address of ours) goes over TCP,
    where the listener's CURVE handshake settles who holds the key."""
    return _connect_target(address, key)[:2]


def _connect_target(address, key):
    """_target, and the owner (an instance of this process) when the
    endpoint is its inproc one, else None: a PUSH to it is given the
    owner, so that its sends stop when the owner closes."""
    owner, inproc = _here_entry(address)
    if inproc and (key or "") == owner._curve_public_key():
        return inproc, None, owner
    return f"tcp://{address}", key, None


def _close_all_at_exit():
    """Close every live instance, then give lingering messages their time."""
    for inst in list(_live):
        try:
            inst._shutdown()
        except Exception:
            pass
    # zmq_ctx_term waits for lingering sockets; never let it hold exit forever
    t = threading.Thread(target=_zmq._term_context, daemon=True, name="pyzmq-wiring exit")
    t.start()
    t.join(5.0)


atexit.register(_close_all_at_exit)
