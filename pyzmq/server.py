"""``zmq_server``: the name directory of the wiring API (see docs/directory.md).

It maps global names to ``(kind, address, key)`` records held under leases:
a client asks for a lease with a TTL, renews it, and loses its names when it
stops renewing (or at once when it revokes the lease).  The protocol is
carried as ZeroMQ messages on a ROUTER socket (``zmq.asyncio``); with
``--curve-secret`` libzmq's CurveZMQ secures every connection and a ZAP
handler here admits client keys (``--curve-allow``).

:class:`Registry` holds the state and its rules and does no I/O;
:class:`Server` carries messages to and from it.

Run it as ``zmq_server [--port N] [-q] [--curve-secret FILE [--curve-allow
FILE] [--key-grace SECONDS]] [--idle-timeout SECONDS] [ADDRESS]`` or
``python -m pyzmq.server ...`` (``--help`` lists the limits).
"""

import argparse
import asyncio
import bisect
import collections
import errno
import fnmatch
import ipaddress
import os
import secrets
import signal
import math
import socket
import struct
import sys
import time

from pyzmq import lifeline
from pyzmq import protocol as p
from pyzmq.location import format_hostport

ZAP_DOMAIN = b"pyzmq-wiring-directory"
ZAP_ENFORCE_DOMAIN = 93   # libzmq's ZMQ_ZAP_ENFORCE_DOMAIN (a draft constant in zmq.h)
EXPIRY_TICK = 0.2         # seconds between sweeps for expired leases
BATCH = 256               # messages handled per wake-up of the serving task
HANDSHAKE_MS = 5000       # a connection must finish the ZeroMQ handshake this soon (ZMQ_HANDSHAKE_IVL)
SNDHWM = 100_000          # replies queued per client before the ROUTER drops them
RCVHWM = 10_000
# The server's own ZMTP heartbeats: rare, since libzmq's one I/O thread pays
# for each, and more the more connections it has: the PONG cancels the
# PING's timeout timer, and libzmq 4.3 finds a timer to cancel by walking
# all of that thread's timers.  So the cost grows with the square of the
# connections: idle, 10,000 of them kept the I/O thread at 33-34% of a core
# at 10 s, 17-18% at 20 s, 5-7% at 60 s, 0% without (5,000 at 10 s: 5%);
# at 1 s, 8,000 kept it at 77%.  Leases, not connections, hold names; TCP
# keepalive drops a dead peer's connection within seconds, and clients
# heartbeat the server every second themselves (p.HEARTBEAT_IVL_MS), so the
# server's only find a peer whose host answers but whose process does not.
SERVER_HEARTBEAT_IVL_MS = 60_000    # (--heartbeat; a peer silent for three intervals is dropped)
KEY_GRACE = 30.0          # seconds a keyed name stays tied to its key after its owner left
IDLE_TIMEOUT = 30.0       # seconds a connection holding no names or watches may stay silent
MAX_RESERVED = 100_000    # names held for their last key at once (see Registry._reserve)
# At the open-files limit libzmq cannot accept, and the server could not
# duplicate an accepted fd to check or refuse it.  So it keeps SPARE_FDS fds
# open (on /dev/null) to give back when a duplicate fails for want of one,
# and refuses connections past what the limit leaves room for: the fds it
# holds at start (the spares among them), FD_HEADROOM more (a burst accepted
# before the monitor is read, the metrics' HTTP connections) and one in 32 of
# the limit.
SPARE_FDS = 8
FD_HEADROOM = 16
FD_LOG_EVERY = 10.0       # seconds between the lines about refusals for the open-files limit
# --state: a change is written STATE_DELAY s after it is seen (the changes of
# that moment go together), a write at a time, the next starting at least
# STATE_MIN_GAP s after the last began and late enough that writing (the
# snapshot in the loop, the file in the executor) takes at most STATE_SHARE
# of the time; STATE_RETRY s after a failed write.
STATE_DELAY = 0.05
STATE_MIN_GAP = 0.1
STATE_SHARE = 0.1
STATE_RETRY = 1.0


def _log(line):
    """Write one line to stderr; a closed stderr must not kill the server."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class RateLimitedLog:
    """Lines for stderr, at most ``per_second`` a second; the rest are
    counted by kind ("registrations", "removals", "refusals") and a summary
    line says how many went unlogged (``flush``, every tick)."""

    def __init__(self, write=_log, per_second=20, clock=time.monotonic):
        self.write = write
        self.per_second = per_second
        self.clock = clock
        self._window = 0.0
        self._count = 0
        self.suppressed = {}

    def __call__(self, line, kind="lines"):
        now = self.clock()
        if now - self._window >= 1.0:
            self.flush()
            self._window = now
            self._count = 0
        if self._count < self.per_second:
            self._count += 1
            self.write(line)
        else:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1

    def flush(self):
        if self.suppressed:
            parts = ", ".join(f"{n} more {kind}" for kind, n in sorted(self.suppressed.items()))
            self.write(f"zmq_server: {parts} not logged (at most {self.per_second} lines a second)")
            self.suppressed = {}


class Metrics:
    """Prometheus metrics of a server (``--metrics HOST:PORT``), through
    ``prometheus_client`` in a registry of its own, served by its HTTP
    thread: clients (leases), names by kind, requests by verb and result,
    a histogram of LOOKUP handling time, refusals by reason."""

    def __init__(self, server):
        import prometheus_client as prom
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        reg = self.registry
        records = server.registry.records
        leases = server.registry.leases
        prom.Gauge("zmq_directory_clients", "Clients holding a lease", registry=reg).set_function(
            lambda: len(leases))
        names = prom.Gauge("zmq_directory_names", "Registered names by kind", ["kind"], registry=reg)
        counts = server.registry.kind_counts
        names.labels("exchange").set_function(lambda: counts["E"])
        names.labels("queue").set_function(lambda: counts["Q"])
        self._requests = prom.Counter("zmq_directory_requests", "Requests by verb and result",
                                      ["verb", "result"], registry=reg)
        self._lookup = prom.Histogram("zmq_directory_lookup_seconds", "Time to handle a LOOKUP in the server",
                                      buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.1),
                                      registry=reg)
        self._refusals = prom.Counter("zmq_directory_refusals", "Requests and connections refused, by reason",
                                      ["reason"], registry=reg)
        dropped = prom.Counter("zmq_directory_dropped", "Replies and watch events not sent, by why: its "
                               "client's queue was full (behind) or its connection was gone (gone)",
                               ["what", "why"], registry=reg)
        # (every child made at the start: a scrape shows the zeros too)
        self._dropped = {(what, why): dropped.labels(what, why) for what in ("reply", "event")
                         for why in ("behind", "gone")}
        self._children = {}

    def request(self, verb, reply):
        result = "ok" if not isinstance(reply, p.ErrorReply) else p.ERROR_NAMES.get(reply.code, str(reply.code))
        child = self._children.get((verb, result))
        if child is None:
            child = self._children[(verb, result)] = self._requests.labels(verb, result)
        child.inc()
        if result in ("LIMIT", "AUTH", "MALFORMED", "BAD_VERSION", "UNKNOWN_COMMAND", "NO_LEASE", "DUPLICATE"):
            self.refused(result.lower())

    def lookup_time(self, seconds):
        self._lookup.observe(seconds)

    def refused(self, reason):
        self._refusals.labels(reason).inc()

    def dropped(self, what, why, count=1):
        self._dropped[(what, why)].inc(count)

    def serve(self, host, port):
        """Start the HTTP thread; return the (host, port) it listens on."""
        server, _thread = self.prom.start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return server.server_address[:2]

    def stop(self):
        http = getattr(self, "_http", None)
        if http is not None:
            http.shutdown()
            http.server_close()


class Conn:
    """What the server knows of one TCP connection of its ROUTER, by fd:
    the peer (``getpeername()``, read while the fd was known to be this
    connection), when it was accepted and last sent a message (monotonic
    seconds), whether it went through the ZAP handler.  ``confirmed``: its
    ACCEPTED event was seen (an entry made by a message that came first is
    not, and nothing is ever done to it)."""

    __slots__ = ("fd", "address", "peer", "accepted", "last", "through", "confirmed", "shut")

    def __init__(self, fd, now):
        self.fd = fd
        self.address = None     # the peer's IP (what the caps count by)
        self.peer = None        # the full getpeername() answer
        self.accepted = now
        self.last = now
        self.through = False
        self.confirmed = False
        self.shut = False       # shut down by us: its DISCONNECTED is on its way


class Connections:
    """The ROUTER's connections by fd, no I/O: the caps per source address
    (at most ``max_per_source`` in all and ``max_handshaking`` not yet
    through the ZAP handler) and what the idle timeout needs.

    The server feeds it the ROUTER's monitor events (``accepted`` with the
    connection's fd and peer, ``closed`` with the fd), the fd each message
    came from (``seen``, ZMQ_SRCFD), and asks it at each ZAP request
    (``admit``, with the address the request carries) and at each idle
    sweep (``idle``)."""

    def __init__(self, max_per_source=p.MAX_PER_SOURCE, max_handshaking=p.MAX_HANDSHAKING):
        self.max_per_source = max_per_source
        self.max_handshaking = max_handshaking
        self.fds = {}       # fd -> Conn
        self.count = 0      # confirmed connections (an ACCEPTED seen, no close yet)
        self.total = {}     # address -> connections
        self.pending = {}   # address -> fds not through ZAP yet, oldest first

    def accepted(self, fd, peer, now=0.0):
        """Count a new connection from ``peer`` (a getpeername() answer);
        False when its source has too many in the handshake already (the
        caller then drops it)."""
        conn = self.fds.get(fd)
        if conn is not None and conn.confirmed:
            self.closed(fd)     # (a missed close: the fd was reused)
            conn = None
        if conn is None:
            conn = self.fds[fd] = Conn(fd, now)
        else:
            # its first messages came before this event: keep what they
            # showed (activity, the leases tied to it)
            conn.accepted = now
            conn.last = max(conn.last, now)
        address = peer[0]
        conn.address, conn.peer, conn.confirmed = address, peer, True
        self.count += 1
        self.total[address] = self.total.get(address, 0) + 1
        waiting = self.pending.setdefault(address, collections.deque())
        waiting.append(fd)
        return len(waiting) <= self.max_handshaking

    def admit(self, address):
        """At a ZAP request from ``address``: may it have one more connection?"""
        waiting = self.pending.get(address)
        if waiting:
            self.fds[waiting.popleft()].through = True
            if not waiting:
                del self.pending[address]
        return self.total.get(address, 0) <= self.max_per_source

    def seen(self, fd, now):
        """The connection a message came from (made, unconfirmed, when the
        message is ahead of its ACCEPTED event), its activity noted."""
        conn = self.fds.get(fd)
        if conn is None:
            conn = self.fds[fd] = Conn(fd, now)
        conn.last = now
        return conn

    def closed(self, fd):
        conn = self.fds.pop(fd, None)
        if conn is None or not conn.confirmed:
            return
        self.count -= 1
        address = conn.address
        left = self.total[address] - 1
        if left:
            self.total[address] = left
        else:
            del self.total[address]
        if not conn.through:
            waiting = self.pending.get(address)
            if waiting is not None:
                try:
                    waiting.remove(fd)
                except ValueError:
                    pass
                if not waiting:
                    del self.pending[address]

    def idle(self, now, timeout):
        """The confirmed connections, not shut already, that sent nothing
        for ``timeout`` seconds (whether they hold names is the caller's)."""
        limit = now - timeout
        return [conn for conn in self.fds.values() if conn.last <= limit and conn.confirmed and not conn.shut]


class Lease:
    """A client's lease: who holds it (owner identity, CURVE key), until
    when, and the names registered under it."""

    __slots__ = ("id", "ttl", "expires", "host", "pid", "program", "key", "peer", "names", "watches", "conn")

    def __init__(self, lease_id, ttl, expires, host, pid, program, key, peer):
        self.id = lease_id
        self.ttl = ttl
        self.expires = expires
        self.host = host
        self.pid = pid
        self.program = program
        self.key = key          # the client's CURVE key (ZAP User-Id), None on a plain directory
        self.peer = peer        # for logs: who, and from which address
        self.names = set()
        self.watches = {}       # WATCH request id -> _Watch
        self.conn = None        # the transport's: the connection it was last used over (Server)


class _Watch:
    """A WATCH: events for names matching ``pattern`` go to ``routing`` with ``header``."""

    __slots__ = ("lease", "wid", "routing", "header", "pattern", "mode", "conn")

    def __init__(self, lease, wid, routing, header, pattern, mode):
        self.lease = lease
        self.wid = wid
        self.routing = routing
        self.header = header
        self.pattern = pattern
        self.mode = mode
        self.conn = None        # the transport's: the connection its events go over (Server)

    def matches(self, name):
        return name == self.pattern if self.mode == p.EXACT else fnmatch.fnmatchcase(name, self.pattern)


class Record:
    __slots__ = ("kind", "address", "key", "owner", "registered", "found")

    def __init__(self, kind, address, key, owner, registered):
        self.kind = kind
        self.address = address
        self.key = key
        self.owner = owner            # the Lease
        self.registered = registered  # wall-clock time (seconds since the epoch)
        self.found = p.encode_reply(p.Found(kind, address, key))   # the LOOKUP answer, made once


class Registry:
    """The name table, the leases and their rules; no I/O, so it is easy to test.

    Times are passed in: ``now`` is a monotonic clock (lease expiry),
    ``wall`` the time of day (registration times).

    On a secure directory (leases held by a client with a proven CURVE key,
    the ZAP User-Id) a name that was registered with a key stays tied to
    that key for ``key_grace`` seconds after its lease ended or it was
    unregistered: meanwhile only a registration with the same key is
    accepted, so an owner that restarts gets its name back before anyone
    else can take it (and binders never find a keyless or foreign record
    under it).  ``clock`` gives the time of that rule (monotonic seconds).
    """

    def __init__(self, max_names=p.MAX_NAMES_PER_LEASE, log=None, min_ttl=p.MIN_TTL, max_ttl=p.MAX_TTL,
                 new_id=lambda: secrets.token_hex(16), max_records=p.MAX_RECORDS, max_leases=p.MAX_LEASES,
                 key_grace=KEY_GRACE, clock=time.monotonic, max_reserved=MAX_RESERVED):
        self.max_names = max_names
        self.max_records = max_records
        self.max_leases = max_leases
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.records = {}
        self.leases = {}
        self.log = log or (lambda line, kind=None: None)
        self._new_id = new_id
        self._sorted = None         # the names, sorted, for LIST (made again after a change)
        self.kind_counts = {p.EXCHANGE: 0, p.QUEUE: 0}
        self._exact_watches = {}    # name -> set of EXACT _Watch
        self._glob_watches = set()
        self.outbox = []            # (routing id, header, body) of WATCH events for the I/O side to send
        self.reserved = {}          # name -> (key, until), oldest first
        self._reserved_by_key = {}  # key -> {name: None}, oldest first: the same names
        self.key_grace = key_grace
        self.max_reserved = max_reserved
        self.clock = clock
        self.changes = 0            # grows with every change of the keyed names or holds (--state)

    # -- leases ------------------------------------------------------------

    def grant(self, ttl, now, host="", pid=0, program="", key=None, peer="?"):
        """A new lease of ``ttl`` seconds (clamped to the server's bounds)."""
        if len(self.leases) >= self.max_leases:
            return p.ErrorReply(p.LIMIT, f"the directory holds {self.max_leases} leases, its limit "
                                         "(zmq_server --max-leases)")
        ttl = min(self.max_ttl, max(self.min_ttl, ttl))
        lease_id = self._new_id()
        while lease_id in self.leases:
            lease_id = self._new_id()
        who = f"pid {pid} {program or '?'} on {host or '?'}"
        lease = Lease(lease_id, ttl, now + ttl, host, pid, program, key,
                      f"{who} from {peer}" + (f" key {key}" if key else ""))
        self.leases[lease_id] = lease
        return lease

    def lease(self, lease_id, key):
        """The live lease ``lease_id`` if the client with CURVE key ``key``
        holds it, else an ErrorReply(NO_LEASE): unknown, expired, or made
        by another key all look the same to the asker."""
        lease = self.leases.get(lease_id)
        if lease is None or lease.key != key:
            return p.ErrorReply(p.NO_LEASE, f"no lease {lease_id} held by this client "
                                            "(expired or revoked, or the directory restarted): "
                                            "ask for a new lease and register again")
        return lease

    def keepalive(self, lease_id, key, now):
        lease = self.lease(lease_id, key)
        if isinstance(lease, p.ErrorReply):
            return lease
        lease.expires = now + lease.ttl
        return p.Ok()

    def revoke(self, lease_id, key):
        lease = self.lease(lease_id, key)
        if isinstance(lease, p.ErrorReply):
            return lease
        self._end(lease, "lease revoked")
        return p.Ok()

    def expire(self, now):
        """End every lease not renewed in time; return how many ended."""
        gone = [lease for lease in self.leases.values() if lease.expires <= now]
        for lease in gone:
            self._end(lease, "lease expired")
        return len(gone)

    def _end(self, lease, why):
        del self.leases[lease.id]
        for watch in list(lease.watches.values()):
            self._drop_watch(watch)
        for name in sorted(lease.names):
            self._remove(name, why)

    # -- listing and watching ------------------------------------------------

    def entry(self, name, record):
        owner = record.owner
        return p.Entry(name, record.kind, record.address, record.key, owner.host, owner.pid, owner.program,
                       int(record.registered * 1000))

    def list(self, pattern, after="", limit=p.MAX_PAGE):
        """A LIST page: names matching ``pattern`` sorted after ``after``, as
        many as ``limit`` and one reply body allow."""
        if self._sorted is None:
            self._sorted = sorted(self.records)
        names = self._sorted
        literal = _literal_prefix(pattern)
        start = bisect.bisect_right(names, after) if after else 0
        if literal:
            start = max(start, bisect.bisect_left(names, literal))
        entries = []
        size = 6
        more = False
        for i in range(start, len(names)):
            name = names[i]
            if literal and not name.startswith(literal):
                break
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            entry = self.entry(name, self.records[name])
            cost = len(p.encode_entry(entry))
            if len(entries) >= limit or size + cost > p.MAX_REPLY:
                more = True
                break
            entries.append(entry)
            size += cost
        return p.Listed(more, tuple(entries))

    def info(self, name):
        record = self.records.get(name)
        if record is None:
            return p.ErrorReply(p.NOT_FOUND, f"no object named {name!r}")
        owner = record.owner
        return p.InfoReply(record.kind, record.address, record.key, owner.host, owner.pid, owner.program,
                           int(record.registered * 1000))

    def watch(self, lease, wid, routing, header, pattern, mode):
        """Start (or restart) a watch; queue its snapshot in the outbox."""
        old = lease.watches.get(wid)
        if old is not None:
            self._drop_watch(old)
        elif len(lease.watches) >= p.MAX_WATCHES_PER_LEASE:
            return p.ErrorReply(p.LIMIT, f"this lease already holds {p.MAX_WATCHES_PER_LEASE} watches, the limit")
        watch = _Watch(lease, wid, routing, header, pattern, mode)
        lease.watches[wid] = watch
        if mode == p.EXACT:
            self._exact_watches.setdefault(pattern, set()).add(watch)
            record = self.records.get(pattern)
            snapshot = [self.entry(pattern, record)] if record is not None else []
        else:
            self._glob_watches.add(watch)
            snapshot = []
            after = ""
            while True:
                page = self.list(pattern, after)
                snapshot.extend(page.entries)
                if not page.more:
                    break
                after = page.entries[-1].name
        batch, size = [], 6
        for entry in snapshot:
            event = p.Event(p.ADDED, entry)
            cost = 1 + len(p.encode_entry(entry))
            if size + cost > p.MAX_REPLY:
                self.outbox.append((routing, header, p.encode_reply(p.Events(False, tuple(batch)))))
                batch, size = [], 6
            batch.append(event)
            size += cost
        return p.Events(True, tuple(batch))

    def unwatch(self, lease, wid):
        watch = lease.watches.get(wid)
        if watch is None:
            return p.ErrorReply(p.NOT_FOUND, f"no watch {wid} under this lease")
        self._drop_watch(watch)
        return p.Ok()

    def end_watches_to(self, routing):
        """End every watch whose events go to ``routing`` (its client fell
        behind); the watches ended."""
        watches = [w for lease in self.leases.values() for w in lease.watches.values() if w.routing == routing]
        for watch in watches:
            self._drop_watch(watch)
        return watches

    def _drop_watch(self, watch):
        watch.lease.watches.pop(watch.wid, None)
        if watch.mode == p.EXACT:
            group = self._exact_watches.get(watch.pattern)
            if group is not None:
                group.discard(watch)
                if not group:
                    del self._exact_watches[watch.pattern]
        else:
            self._glob_watches.discard(watch)

    def _notify(self, event_type, name, record):
        watchers = list(self._exact_watches.get(name, ()))
        watchers.extend(w for w in self._glob_watches if w.matches(name))
        if not watchers:
            return
        body = p.encode_reply(p.Events(False, (p.Event(event_type, self.entry(name, record)),)))
        for watch in watchers:
            self.outbox.append((watch.routing, watch.header, body))

    # -- names -------------------------------------------------------------

    def register(self, lease, kind, name, address, key, wall=0.0):
        record = self.records.get(name)
        if record is not None and record.owner is not lease:
            return p.ErrorReply(p.DUPLICATE, f"name {name!r} is already registered by another client")
        if record is None and len(lease.names) >= self.max_names:
            return p.ErrorReply(p.LIMIT, f"this lease already holds {self.max_names} names, the limit")
        if record is None and len(self.records) >= self.max_records:
            return p.ErrorReply(p.LIMIT, f"the directory holds {self.max_records} names, its limit "
                                         "(zmq_server --max-records)")
        if record is not None and (record.kind, record.address, record.key) == (kind, address, key):
            return p.Ok()       # the same again (a client registering its names anew): nothing changes
        held = self._held(name) if record is None else None
        if held is not None and key != held[0]:
            left = held[1] - self.clock()
            self.log(f"zmq_server: refused {name!r} to {lease.peer}: held for key {held[0]} "
                     f"for another {left:.1f} s", "refusals")
            return p.ErrorReply(p.AUTH, f"name {name!r} is held for the CURVE key of its last owner "
                                        f"for another {left:.0f} s; until then only that key may "
                                        "register it")
        self._unreserve(name)
        if key or (record is not None and record.key):
            self.changes += 1
        new = self.records[name] = Record(kind, address, key, lease, wall)
        if record is None:
            self._sorted = None
        else:
            self.kind_counts[record.kind] -= 1
        self.kind_counts[kind] += 1
        lease.names.add(name)
        self.log(f"zmq_server: registered {name!r} kind {kind} at {address} by {lease.peer}", "registrations")
        self._notify(p.ADDED if record is None else p.CHANGED, name, new)
        return p.Ok()

    def lookup(self, name):
        record = self.records.get(name)
        if record is None:
            return p.ErrorReply(p.NOT_FOUND, f"no object named {name!r}")
        return p.Found(record.kind, record.address, record.key)

    def unregister(self, lease, name):
        record = self.records.get(name)
        if record is None:
            return p.ErrorReply(p.NOT_FOUND, f"no object named {name!r}")
        if record.owner is not lease:
            return p.ErrorReply(p.NOT_OWNER, f"name {name!r} is registered by another client")
        self._remove(name, "unregistered")
        return p.Ok()

    def _remove(self, name, why):
        record = self.records.pop(name)
        self._sorted = None
        self.kind_counts[record.kind] -= 1
        self._notify(p.REMOVED, name, record)
        record.owner.names.discard(name)
        self.log(f"zmq_server: removed {name!r} kind {record.kind} at {record.address} "
                 f"by {record.owner.peer} ({why})", "removals")
        if record.key and record.owner.key is not None and self.key_grace > 0:
            self._reserve(name, record.key)

    def drop(self, lease, why="lease revoked"):
        """End ``lease`` at once, as if it was revoked (its names go)."""
        if self.leases.get(lease.id) is lease:
            self._end(lease, why)

    def _reserve(self, name, key, until=None):
        """Hold ``name`` for ``key`` for the grace period, within bounds that
        one key cannot use to push other keys' names out: a key holds at most
        ``max_names`` names (one lease's worth; beyond, its own oldest go),
        and only when the whole table is full, which takes
        max_reserved / max_names keys, does the oldest name of any key go."""
        self._expire_reserved()
        mine = self._reserved_by_key.get(key, {})
        while mine and (len(mine) >= self.max_names or len(self.reserved) >= self.max_reserved):
            self._unreserve(next(iter(mine)))
        while len(self.reserved) >= self.max_reserved:
            self._unreserve(next(iter(self.reserved)))
        self.reserved[name] = (key, self.clock() + self.key_grace if until is None else until)
        self._reserved_by_key.setdefault(key, {})[name] = None
        self.changes += 1

    def _unreserve(self, name):
        held = self.reserved.pop(name, None)
        if held is not None:
            self.changes += 1
            mine = self._reserved_by_key[held[0]]
            del mine[name]
            if not mine:
                del self._reserved_by_key[held[0]]

    def _held(self, name):
        """(key, until) if ``name`` is still tied to its last owner's key."""
        self._expire_reserved()
        return self.reserved.get(name)

    def _expire_reserved(self):
        now = self.clock()
        while self.reserved:
            name, (key, until) = next(iter(self.reserved.items()))
            if until > now:
                break
            self._unreserve(name)

    # -- what a restart keeps (--state) -------------------------------------

    def held_for_keys(self, wall):
        """The names a restarted server should hold for their keys:
        ``[name, key, until]``, ``until`` the time of day (``wall`` is now)
        a grace period ends, or None for a name registered with a proven key
        now (its owner's lease goes with the server: hold it for a whole
        grace period from the restart, so its owner gets it back first)."""
        self._expire_reserved()
        now = self.clock()
        held = [[name, key, wall + (until - now)] for name, (key, until) in self.reserved.items()]
        held.extend([name, record.key, None] for name, record in self.records.items()
                     if record.key and record.owner.key is not None)
        return held

    def restore_held(self, held, wall):
        """At the start: hold the names of a saved :meth:`held_for_keys`
        (``wall`` is now), none for longer than one grace period from now;
        returns how many are held."""
        if self.key_grace <= 0:
            return 0
        now = self.clock()
        latest = now + self.key_grace
        items = []
        for name, key, until in held:
            until = latest if until is None else min(latest, now + (until - wall))
            if until > now and name not in self.records:
                items.append((until, name, key))
        for until, name, key in sorted(items):      # (oldest first, as _expire_reserved reads them)
            self._reserve(name, key, until)
        return len(items)


class StateSchedule:
    """When to write the ``--state`` file; no I/O, times passed in
    (monotonic seconds).  ``changes`` is the registry's count of changes
    (``Registry.changes``); the file holds ``saved`` of them.

    A change is written soon (``delay`` after it was first seen), so a crash
    loses at most that much, plus the write; a burst of changes goes in one
    write.  Under a stream of changes the writes are bounded: one at a
    time, each starting at least ``min_gap`` after the previous one began,
    and at least ``took / share`` after it (``took``: how long that one
    took), so writing a large table takes at most ``share`` of the time."""

    def __init__(self, saved=0, delay=STATE_DELAY, min_gap=STATE_MIN_GAP, share=STATE_SHARE, retry=STATE_RETRY):
        self.saved = saved
        self.delay = delay
        self.min_gap = min_gap
        self.share = share
        self.retry = retry
        self.seen = None        # when a change not written yet was first seen
        self.writing = None     # the count being written, while a write is under way
        self.began = 0.0
        self.not_before = 0.0   # the next write starts no sooner

    def due(self, changes, now):
        """When the next write should start, or None: nothing to write, or a
        write under way (ask again when it is done)."""
        if changes == self.saved:
            self.seen = None
            return None
        if self.writing is not None:
            return None
        if self.seen is None:
            self.seen = now
        return max(self.seen + self.delay, self.not_before)

    def start(self, changes, now):
        """A write of ``changes`` begins (before its snapshot is taken)."""
        self.writing = changes
        self.began = now
        self.seen = None

    def done(self, ok, now):
        """The write begun last ended, written (``ok``) or not."""
        if ok:
            self.saved = self.writing
            self.not_before = self.began + max(self.min_gap, (now - self.began) / self.share)
        else:
            self.not_before = now + self.retry
        self.writing = None


def _literal_prefix(pattern):
    """The part of a glob pattern before its first wildcard."""
    for i, ch in enumerate(pattern):
        if ch in "*?[":
            return pattern[:i]
    return pattern


def _pin(fd):
    """A duplicate of fd (libzmq's, from a monitor event or a message's
    ZMQ_SRCFD) as a socket, or None.  The duplicate holds the connection
    the fd names *now*: libzmq may close and reuse the number meanwhile,
    the duplicate still is that connection (and keeps it open until it is
    closed: close it soon)."""
    try:
        return socket.socket(fileno=os.dup(fd))
    except OSError:
        return None


def _peer_of(sock):
    try:
        return sock.getpeername()
    except OSError:
        return None


def _shut(sock):
    """End the connection of ``sock`` (a pin): libzmq sees the end and drops it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False


def _shut_if_same(fd, peer):
    """Shut connection ``fd`` down only if it is still the connection from
    ``peer`` (its getpeername() when the fd was known to be it): a reused
    fd belongs to another connection, whose peer (address and port)
    differs.  The check and the shutdown go through one duplicate of the
    fd, so the number cannot change hands between them.  True if shut,
    False if the fd is not that connection (any more), None if it could not
    be checked (no fd to spare for the duplicate: try again later)."""
    try:
        pin = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        return None if exc.errno in (errno.EMFILE, errno.ENFILE) else False
    with pin:
        return _peer_of(pin) == peer and _shut(pin)


def _fsync_dir(path):
    """Make a rename in directory ``path`` durable (where directories can be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _monitor_event(frames):
    """(event, value) of a socket-monitor message (the value is the fd for
    ACCEPTED and DISCONNECTED)."""
    return struct.unpack("=Hi", frames[0])


def _drain(sync, zmq):
    """The monitor messages waiting now (non-blocking)."""
    out = []
    while True:
        try:
            out.append(sync.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return out


def plan_accepts(events, accepted):
    """Which ACCEPTED events of a batch may be acted on (read the peer,
    shut down): the indexes of those whose fd is not closed later in the
    batch.  An ACCEPTED followed by a DISCONNECTED of its fd describes a
    connection that is gone: its fd may already name another connection."""
    last_close = {}
    for i, (kind, fd) in enumerate(events):
        if kind != accepted:
            last_close[fd] = i
    return {i for i, (kind, fd) in enumerate(events) if kind == accepted and last_close.get(fd, -1) < i}


def _sender(zmq, sync):
    """``send(frames)``: one message on ``sync`` without waiting, through the
    binding's base-class ``send`` with integer flags: True when sent, False
    when the peer's queue is full (``--max-queued``; the ROUTER is
    ``ROUTER_MANDATORY``, so it says so instead of dropping the message
    without a word), None when the peer is gone (``EHOSTUNREACH``: its
    connection closed; the caller counts it).

    libzmq counts a queue's messages as written less those its I/O thread
    said it read, and hears that through commands a send processes at most
    about once a millisecond: sends in quick succession see a queue fuller
    than it is (a client answered one request at a time met a full queue of
    10 after 20 replies).  So a full queue is looked at again once after
    reading ``ZMQ_EVENTS``, which processes them."""
    send, get = zmq.backend.Socket.send, zmq.backend.Socket.get
    more, last, events = int(zmq.NOBLOCK | zmq.SNDMORE), int(zmq.NOBLOCK), int(zmq.EVENTS)
    error, again = zmq.ZMQError, zmq.Again

    def send_message(frames):
        # (a ROUTER refuses a message at its first frame, the routing id, or takes it all)
        try:
            for frame in frames[:-1]:
                send(sync, frame, more)
            send(sync, frames[-1], last)
        except again:
            get(sync, events)
            try:
                for frame in frames[:-1]:
                    send(sync, frame, more)
                send(sync, frames[-1], last)
            except again:
                return False
            except error:
                return None
        except error:
            return None
        return True

    return send_message


def _frame_property(frame, name):
    """A message property libzmq attached (``User-Id``, ``Peer-Address``), or None."""
    try:
        return frame.get(name)
    except Exception:   # zmq.ZMQError (EINVAL): not set for this message
        return None


class Server:
    """The directory service; ``await serve()`` runs it until ``stop()``."""

    def __init__(self, host="127.0.0.1", port=p.DEFAULT_PORT, quiet=False, secret_key=None,
                 allowed_keys=None, min_ttl=p.MIN_TTL, max_ttl=p.MAX_TTL,
                 max_names=p.MAX_NAMES_PER_LEASE, max_records=p.MAX_RECORDS, max_leases=p.MAX_LEASES,
                 log_rate=20, metrics=None, max_per_source=p.MAX_PER_SOURCE,
                 max_handshaking=p.MAX_HANDSHAKING, key_grace=KEY_GRACE, idle_timeout=IDLE_TIMEOUT,
                 state=None, heartbeat=SERVER_HEARTBEAT_IVL_MS / 1000, max_queued=SNDHWM):
        """``secret_key`` (Z85) makes every connection CURVE (docs/directory.md):
        clients must know the matching public key, ``public_key`` here.
        ``allowed_keys`` (Z85 public keys) then limits which clients are served;
        None serves any client that completes the handshake.  ``key_grace``:
        seconds a name registered with a key stays tied to it after its
        owner left (secure directories only; see Registry).  ``metrics``
        ("HOST:PORT") serves Prometheus metrics over HTTP there.
        ``idle_timeout``: seconds after which a connection that sent nothing
        and holds no names or watches is shut down (0: never).  ``state``:
        a file where the names held for their keys are kept (written soon
        after a change, boundedly: StateSchedule; and at the stop) and read
        at the start, so a restart keeps them (secure directories only).  ``heartbeat``: seconds
        between the server's ZMTP heartbeats on each connection (a peer
        silent for three of them is dropped; 0: none, TCP keepalive only)."""
        import zmq
        from pyzmq.curve import check_key
        self._secret = None
        self._allowed = None
        self.public_key = None
        if secret_key is not None:
            self._secret = check_key(secret_key, "the directory's secret key")
            self.public_key = zmq.curve_public(self._secret.encode("ascii")).decode("ascii")
            if allowed_keys is not None:
                if isinstance(allowed_keys, (str, bytes)):
                    raise TypeError("allowed_keys must be an iterable of Z85 public keys, not one key")
                self._allowed = {check_key(k, "an allowed key") for k in allowed_keys}
                if not self._allowed:
                    raise ValueError("allowed_keys is empty: no client could use this directory")
        elif allowed_keys is not None:
            raise ValueError("allowed_keys needs secret_key: only a secure directory knows its clients' keys")
        self.host = host
        self.port = port
        self.quiet = quiet
        self._log = RateLimitedLog(per_second=log_rate)
        self.registry = Registry(max_names=max_names, log=self._info, min_ttl=min_ttl, max_ttl=max_ttl,
                                 max_records=max_records, max_leases=max_leases, key_grace=key_grace)
        self._stopping = None
        self._send = None           # send(frames) on the ROUTER, while serving (_serve_loop)
        # messages not sent, by (what, why): ("reply" | "event", "behind" | "gone")
        self.dropped = collections.Counter()
        self._wake = None
        self.conns = Connections(max_per_source, max_handshaking)
        self._monitor_sync = None   # the ROUTER's monitor, read by _read_monitor
        self._monitor_later = []    # its events read after a batch's pins, for the next batch
        self.max_connections = None  # what the open-files limit leaves room for (set in serve)
        self._fd_limit = None
        self._spare = []            # fds on /dev/null, made a duplicate in place when none is left (SPARE_FDS)
        self._spare_pins = set()    # spares serving as a pin now
        self._null = None           # /dev/null, what a spare is again after
        self.fd_refusals = 0        # connections refused for the open-files limit
        self._fd_logged = 0         # of them, how many the log has told of
        self._fd_log_due = 0.0      # (one line at most every FD_LOG_EVERY seconds)
        self._fd_short = False      # a duplicate found no fd since the last line
        self._fd_peer = None
        self.idle_timeout = float(idle_timeout)
        self._idle_due = 0.0
        self._conn = None       # the connection of the message being handled (Conn)
        self._to_shut = set()   # connections to shut that no fd was left for yet (_shut_conn)
        if state is not None and secret_key is None:
            raise ValueError("state keeps the names held for their CURVE keys across restarts: "
                             "it needs secret_key (--curve-secret)")
        self.state = state
        self.heartbeat_ms = int(round(heartbeat * 1000))
        self.max_queued = max_queued
        self._schedule = StateSchedule()    # when to write the state
        self._state_timer = None    # the loop's timer for the next write
        self._state_writing = None  # the write under way (in the loop's executor)
        self.metrics = None
        self.metrics_address = None
        if metrics is not None:
            self.metrics = Metrics(self)
            self._metrics_at = metrics

    def _info(self, line, kind="lines"):
        if not self.quiet:
            self._log(line, kind)

    def _endpoint(self):
        """``tcp://IP:port`` for the ROUTER, and whether it is IPv6."""
        host = self.host or "0.0.0.0"
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            infos = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            ip = ipaddress.ip_address(infos[0][4][0])
        if ip.version == 6:
            return f"tcp://[{ip}]:{self.port}", True
        return f"tcp://{ip}:{self.port}", False

    async def serve(self, ready=None):
        """Listen, announce readiness (``ready(host, port)``) and serve until stopped."""
        import zmq
        import zmq.asyncio
        self._stopping = asyncio.Event()
        ctx = zmq.asyncio.Context()
        sockets = []
        tasks = []
        try:
            # the ZAP handler runs for every connection (CURVE and, with a
            # domain set, NULL too): it admits keys and caps connections per source
            zap = ctx.socket(zmq.REP)
            sockets.append(zap)
            zap.linger = 0
            zap.bind("inproc://zeromq.zap.01")
            tasks.append(asyncio.ensure_future(self._zap_loop(zap)))
            router = ctx.socket(zmq.ROUTER)
            sockets.append(router)
            router.linger = 0
            endpoint, ipv6 = self._endpoint()
            if ipv6:
                router.ipv6 = True
            router.zap_domain = ZAP_DOMAIN
            if self._secret is not None:
                router.curve_server = True
                router.curve_secretkey = self._secret.encode("ascii")
                router.setsockopt(ZAP_ENFORCE_DOMAIN, 1)   # no handler, no admission
            router.handshake_ivl = HANDSHAKE_MS
            monitor_at = f"inproc://zmq-server-monitor-{os.getpid()}"
            router.monitor(monitor_at, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
            monitor = ctx.socket(zmq.PAIR)
            sockets.append(monitor)
            monitor.linger = 0
            monitor.rcvhwm = 0      # no limit: a dropped event would leave a connection unknown
            monitor.connect(monitor_at)
            tasks.append(asyncio.ensure_future(self._monitor_loop(monitor)))
            router.maxmsgsize = p.MAX_MESSAGE
            router.sndhwm = self.max_queued
            router.router_mandatory = 1     # a full queue is said (EAGAIN), not a silent drop
            router.rcvhwm = RCVHWM
            if self.heartbeat_ms > 0:
                router.setsockopt(zmq.HEARTBEAT_IVL, self.heartbeat_ms)
                router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * self.heartbeat_ms)
            router.setsockopt(zmq.TCP_KEEPALIVE, 1)
            router.setsockopt(zmq.TCP_KEEPALIVE_IDLE, p.KEEPALIVE_IDLE)
            router.setsockopt(zmq.TCP_KEEPALIVE_INTVL, p.KEEPALIVE_INTERVAL)
            router.setsockopt(zmq.TCP_KEEPALIVE_CNT, p.KEEPALIVE_COUNT)
            try:
                router.bind(endpoint)
            except zmq.ZMQError as exc:
                raise OSError(exc.errno, exc.strerror) from None
            if self.metrics is not None:
                mhost, _, mport = self._metrics_at.rpartition(":")
                self.metrics_address = self.metrics.serve(mhost.strip("[]") or "127.0.0.1", int(mport))
            bound = router.last_endpoint.decode()
            host, _, port = bound[len("tcp://"):].rpartition(":")
            self.port = int(port)
            self._size_for_fd_limit()
            if self.state is not None:
                self._load_state()
            if ready is not None:
                ready(host.strip("[]"), self.port)
            tasks.append(asyncio.ensure_future(self._serve_loop(router)))
            tasks.append(asyncio.ensure_future(self._expiry_loop(router)))
            stop = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait(tasks + [stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            for task in done:
                if task is not stop and not task.cancelled() and task.exception() is not None:
                    raise task.exception()
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for sock in sockets:
                sock.close(linger=0)
            ctx.term()
            if self.metrics is not None:
                self.metrics.stop()
            while self._spare:
                os.close(self._spare.pop())
            if self._null is not None:
                os.close(self._null)
                self._null = None
            if self.state is not None:
                # a clean stop (SIGTERM, SIGINT, the parent gone) always
                # writes the final state, whatever the schedule says
                if self._state_timer is not None:
                    self._state_timer.cancel()
                    self._state_timer = None
                if self._state_writing is not None:
                    await asyncio.gather(self._state_writing, return_exceptions=True)
                changes, state = self._state_snapshot()
                self._state_written(changes, self._write_state(state))
            self._fd_log_due = 0.0
            self._log_fd_refusals(0.0)      # (what the last line did not tell yet)
            self._log.flush()

    def stop(self):
        if self._stopping is not None:
            self._stopping.set()

    async def _serve_loop(self, router):
        """Serve the ROUTER: wait for its signalling fd (``ZMQ_FD``) in the
        event loop, then handle up to BATCH messages through a synchronous
        shadow of the socket before letting the other tasks (ZAP, sweep)
        run; one wake-up of the loop per batch, not per message.

        The socket is read and written here with the binding's base-class
        ``recv``/``send`` and integer flags: pyzmq's ``recv_multipart`` and
        ``send_multipart`` cost about four times as much per message.  Only
        this task and ``_flush`` touch the socket (both synchronously); the
        ``ZMQ_FD`` rule holds: it only signals new activity, so every pass
        ends when ``ZMQ_EVENTS`` says nothing is left to read."""
        import zmq
        sync = zmq.Socket.shadow(router.underlying)
        base = zmq.backend.Socket
        recv, get = base.recv, base.get
        noblock, rcvmore, events, pollin = int(zmq.NOBLOCK), int(zmq.RCVMORE), int(zmq.EVENTS), int(zmq.POLLIN)
        again = zmq.Again
        send_message = self._send = _sender(zmq, sync)
        outbox = self.registry.outbox
        wake = self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        fd = sync.FD
        loop.add_reader(fd, wake.set)
        # every message's connection is noted (ZMQ_SRCFD), whatever the idle
        # timeout: a watcher that falls behind must be shut to be told
        seen = self.conns.seen
        srcfd = int(zmq.SRCFD)
        state = self.state is not None
        schedule = self._schedule
        now = 0.0
        try:
            while True:
                wake.clear()
                if not get(sync, events) & pollin:
                    await wake.wait()
                    continue
                now = time.monotonic()
                for _ in range(BATCH):
                    try:
                        frames = [recv(sync, noblock, False)]
                    except again:
                        break
                    while get(sync, rcvmore):
                        frames.append(recv(sync, noblock, False))
                    # which connection it came from (ZMQ_SRCFD, still in libzmq 4.3)
                    self._conn = seen(frames[0].get(srcfd), now)
                    out = self.handle_message(frames)
                    if outbox:
                        # events go before the reply, so a WATCH's snapshot batches
                        # arrive in order, the last one (the reply) marked synced
                        self._send_outbox(send_message)
                    if out is not None:
                        sent = send_message(out)
                        if sent is not True:
                            if sent is False:
                                self._reply_dropped(out[0])
                            else:
                                self._dropped("reply", "gone")
                if state and self.registry.changes != schedule.saved:
                    self._state_check()     # (a write soon: StateSchedule)
                await asyncio.sleep(0)      # let the other tasks (ZAP, sweep) run between batches
        finally:
            loop.remove_reader(fd)

    async def _flush(self, router):
        """Send the WATCH events the sweep made (through the serving task's
        socket shadow, which it then wakes: a send may have read the
        socket's signals)."""
        if self._send is None:
            return      # (not serving yet: the events wait)
        self._send_outbox(self._send)
        self._wake.set()

    def _send_outbox(self, send):
        """Send the registry's outbox of WATCH events and empty it.  A client
        whose queue is full falls behind once: the rest of its events in
        this outbox are not tried (each failure would scan every lease's
        watches again, and a lease of 10,000 names makes 10,000 events)."""
        behind = set()
        for event in self.registry.outbox:
            if event[0] in behind:
                self._dropped("event", "behind")
                continue
            sent = send(event)
            if sent is not True:
                if sent is False:
                    behind.add(event[0])
                    self._dropped("event", "behind")
                    self._fell_behind(event[0])
                else:
                    self._dropped("event", "gone")
        self.registry.outbox.clear()

    def _dropped(self, what, why):
        """Count a message not sent: a ``reply`` or an ``event``, because its
        client's queue was full (``behind``: what follows is a shut
        connection, logged once for it) or its connection was gone
        (``gone``: its client sends again, or watches again, on its next
        one).  So no message is dropped without a count
        (``dropped_total{what, why}``, and ``Server.dropped``)."""
        self.dropped[(what, why)] += 1
        if self.metrics is not None:
            self.metrics.dropped(what, why)

    def _fell_behind(self, routing):
        """An event for ``routing`` found its queue full: the client does
        not read (a stopped process), and what it would read next has a gap.
        So its watches end here and its connection is shut: libzmq connects
        it again, and the client watches again from the current records
        (``DirectoryClient`` reports the difference).  The shut is what
        tells the client, so it is never skipped: when no fd is left to do
        it through (the open-files limit), it is tried again at each sweep."""
        watches = self.registry.end_watches_to(routing)
        if not watches:
            return      # (ended already, by an earlier event of the batch)
        conns = {w.conn or w.lease.conn for w in watches} - {None}
        where = next(iter(conns)).address if conns else None
        for conn in conns:
            self._shut_conn(conn)
        self._log(f"zmq_server: a watcher from {where or '?'} fell {self.max_queued} messages behind "
                  "(--max-queued): its watches ended and its connection was closed; it watches again "
                  "from the current records when it reconnects", "refusals")
        if self.metrics is not None:
            self.metrics.refused("watch_behind")

    def _reply_dropped(self, routing):
        """A reply found its client's queue full (``--max-queued``): the
        client sends and does not read (a stopped process, a pipelining
        peer).  A dropped reply is never said to it, and it would wait for
        it until its own timeout: so its connection is shut (and its
        watches end, their events would have a gap as well).  A
        ``DirectoryClient`` then sends its unanswered requests again on the
        next connection; any client sees the disconnection."""
        self._dropped("reply", "behind")
        conn = self._conn
        if conn is None or conn.shut or conn in self._to_shut:
            # (being shut already: the rest of its replies go the same way,
            # each counted above; the first was logged)
            return
        self.registry.end_watches_to(routing)
        self._shut_conn(conn)
        self._log(f"zmq_server: a client from {conn.address or '?'} fell {self.max_queued} messages behind "
                  "(--max-queued): a reply to it was dropped, so its connection was closed; it sends its "
                  "requests again when it reconnects", "refusals")
        if self.metrics is not None:
            self.metrics.refused("reply_behind")

    def _shut_conn(self, conn):
        """Shut connection ``conn`` down now, or at a later sweep when no fd
        is left to reach it (or its ACCEPTED is not read yet)."""
        if conn.shut:
            return
        done = self._shut_checked(conn) if conn.confirmed else None
        if done is None:
            self._to_shut.add(conn)
        else:
            conn.shut = True    # (shut, or the fd names another connection: this one is gone)
            self._to_shut.discard(conn)

    def _shut_checked(self, conn):
        """``_shut_if_same`` through :meth:`_pin` (a spare fd when none is
        left): True if shut, False if the fd is not that connection (any
        more), None if no fd could be had (try again later)."""
        pin = self._pin(conn.fd)
        if pin is False:
            return None
        if pin is None:
            return False
        try:
            return _peer_of(pin) == conn.peer and _shut(pin)
        finally:
            self._unpin(pin)

    def _shut_later(self):
        """From the sweep: the shuts :meth:`_shut_conn` could not do yet."""
        for conn in list(self._to_shut):
            if self.conns.fds.get(conn.fd) is not conn:
                self._to_shut.discard(conn)     # closed meanwhile: the client saw it go
            else:
                self._shut_conn(conn)

    async def _expiry_loop(self, router):
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(EXPIRY_TICK)
            now = loop.time()
            self.registry.expire(now)
            await self._flush(router)
            if self.idle_timeout > 0 and now >= self._idle_due:
                self._idle_due = now + min(1.0, self.idle_timeout / 4)
                self._close_idle(time.monotonic())
            if self._to_shut:
                self._shut_later()
            if self.state is not None:
                self._state_check()     # (the sweep's expiries)
            if self.fd_refusals != self._fd_logged or self._fd_short:
                self._log_fd_refusals(time.monotonic())
            if len(self._spare) < SPARE_FDS and self._fd_limit is not None:
                self._refill_spares()
            self._log.flush()

    def _close_idle(self, now):
        """Shut down the connections that sent nothing for the idle timeout
        and hold no names or watches (a lease with either, last used over
        that connection, protects it; its names are the lease's business)."""
        idle = self.conns.idle(now, self.idle_timeout)
        if not idle:
            return
        held = {lease.conn for lease in self.registry.leases.values()
                if lease.conn is not None and (lease.names or lease.watches)}
        for conn in idle:
            if conn in held:
                continue
            done = _shut_if_same(conn.fd, conn.peer)
            if done is None:
                continue        # out of fds for the check: at the next sweep
            conn.shut = True    # (either way: its DISCONNECTED is coming)
            if not done:
                continue        # the fd is another connection's now, or none's
            self._info(f"zmq_server: closed an idle connection from {conn.address}: no names or watches "
                       f"and nothing sent for {self.idle_timeout:g} s (--idle-timeout)", "closed idle connections")
            if self.metrics is not None:
                self.metrics.refused("idle")

    def _tie(self, conn, request, reply):
        """A lease used with success over ``conn`` is held there (the idle timeout spares it)."""
        lease_id = reply.lease if type(reply) is p.Granted else getattr(request, "lease", None)
        if lease_id is not None:
            lease = self.registry.leases.get(lease_id)
            if lease is not None:
                lease.conn = conn

    async def _monitor_loop(self, monitor):
        """Wait for the ROUTER's monitor and read it (``_read_monitor``)."""
        import zmq
        self._monitor_sync = zmq.Socket.shadow(monitor.underlying)
        while True:
            if not self._monitor_later:
                await monitor.poll(flags=zmq.POLLIN)
            short = self._read_monitor()
            # (a flood of events: let the other tasks run; out of fds: give
            # libzmq a moment to close the connections refused)
            await asyncio.sleep(0.01 if short else 0)

    # -- the state a restart keeps (--state) -----------------------------------

    def _load_state(self):
        """Hold the names the state file says (its absence is a first start)."""
        import json
        try:
            with open(self.state, encoding="utf-8") as f:
                saved = json.load(f)
            if not isinstance(saved, dict) or saved.get("version") != 1:
                raise ValueError("not a zmq_server state (version 1)")
            wall = float(saved["written"])
            held = []
            for name, key, until in saved["held"]:
                p.validate_name(name)
                p.validate_key(key)
                if not key or not (until is None or isinstance(until, (int, float))):
                    raise ValueError(f"a bad entry for {name!r}")
                held.append((name, key, until))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as exc:
            _log(f"zmq_server: warning: cannot read the state in {self.state} ({exc}); starting without "
                 "it: no name is held for its key from before")
            return
        count = self.registry.restore_held(held, time.time())
        self._schedule.saved = self.registry.changes
        _log(f"zmq_server: kept {count} names held for their CURVE keys from {self.state} "
             f"(written {max(0.0, time.time() - wall):.1f} s ago)")

    def _state_snapshot(self):
        wall = time.time()
        return self.registry.changes, {"version": 1, "written": wall, "held": self.registry.held_for_keys(wall)}

    def _write_state(self, state):
        """Write ``state`` to the file through a new file renamed over it
        (a reader, or a kill, never sees half of it); the error, or None.
        No state of the server is touched: it runs in the loop's executor."""
        import json
        tmp = f"{self.state}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(state, separators=(",", ":")))     # (one C call: faster than dump)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state)
            _fsync_dir(os.path.dirname(os.path.abspath(self.state)))   # (the rename, for a power cut)
        except (OSError, ValueError) as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return exc
        return None

    def _state_written(self, changes, error):
        if error is not None:
            self._log(f"zmq_server: cannot write the state to {self.state}: {error}", "state errors")

    def _state_check(self):
        """After a batch of requests or a sweep: when the registry changed,
        set the timer of the next write (``StateSchedule`` says when)."""
        if self._state_timer is not None or self._stopping is None or self._stopping.is_set():
            return
        loop = asyncio.get_running_loop()
        when = self._schedule.due(self.registry.changes, loop.time())
        if when is not None:
            self._state_timer = loop.call_at(when, self._save_state, loop)

    def _save_state(self, loop):
        """The timer's: take the snapshot (the loop's) and write it in the
        loop's executor; when done, look again (changes made meanwhile)."""
        self._state_timer = None
        schedule = self._schedule
        if self.registry.changes == schedule.saved or schedule.writing is not None:
            return
        schedule.start(self.registry.changes, loop.time())
        changes, state = self._state_snapshot()
        self._state_writing = writing = loop.run_in_executor(None, self._write_state, state)

        def finished(done):
            error = done.exception() or done.result() if not done.cancelled() else None
            self._state_written(changes, error)
            schedule.done(error is None and not done.cancelled(), loop.time())
            self._state_check()
        writing.add_done_callback(finished)

    # -- the open-files limit --------------------------------------------------

    def _size_for_fd_limit(self):
        """At the start of serving: how many connections the open-files
        limit leaves room for (``max_connections``), and the spare fds."""
        try:
            import resource
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, ValueError, OSError):
            return
        if limit == resource.RLIM_INFINITY:
            return
        self._fd_limit = limit
        self._refill_spares()
        try:
            held = len(os.listdir("/proc/self/fd"))     # (the spares included)
        except OSError:
            held = 64
        self.max_connections = max(1, limit - held - FD_HEADROOM - limit // 32)

    def _refill_spares(self):
        if self._null is None:
            try:
                self._null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return
        while len(self._spare) < SPARE_FDS:
            try:
                self._spare.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return

    def _pin(self, fd):
        """``_pin(fd)``, or when no fd is left for the duplicate, a spare
        made the duplicate in place (``dup2``: no fd number is freed, which
        libzmq's accept would take first): a socket, None (the fd is
        closed: nothing to do), or False (no spare either: try again later).
        Give it back with :meth:`_unpin`."""
        try:
            dup = os.dup(fd)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                return None
        else:
            try:
                return socket.socket(fileno=dup)
            except OSError:         # the number names something else by now
                os.close(dup)
                return None
        if not self._spare:
            self._fd_short = True
            return False
        spare = self._spare.pop()
        try:
            os.dup2(fd, spare)
            pin = socket.socket(fileno=spare)
        except OSError:
            try:
                os.dup2(self._null, spare)      # a spare again, whatever dup2 left there
            except OSError:
                pass
            self._spare.append(spare)
            return None
        self._spare_pins.add(spare)
        return pin

    def _unpin(self, pin):
        """Close a pin; a spare's becomes a spare again (on /dev/null, in place)."""
        fd = pin.fileno()
        if fd in self._spare_pins:
            self._spare_pins.discard(fd)
            os.dup2(self._null, fd)
            pin.detach()
            self._spare.append(fd)
        else:
            pin.close()

    def _refuse_for_fd_limit(self, peer, pin):
        """Shut down a connection past ``max_connections``; count it, and
        say so (the first at once, then one line every FD_LOG_EVERY s)."""
        _shut(pin)
        self.fd_refusals += 1
        if self.metrics is not None:
            self.metrics.refused("fd_limit")
        self._fd_peer = peer[0]
        self._log_fd_refusals(time.monotonic())

    def _log_fd_refusals(self, now):
        new = self.fd_refusals - self._fd_logged
        if (not new and not self._fd_short) or now < self._fd_log_due:
            return
        self._fd_log_due = now + FD_LOG_EVERY
        self._fd_logged = self.fd_refusals
        short = " (and libzmq or the server found no fd at times)" if self._fd_short else ""
        self._fd_short = False
        what = (f"refused a connection from {self._fd_peer}" if new == 1
                else f"refused {new} connections (the last from {self._fd_peer})") if new \
            else "found no fd for a connection"
        self._log(f"zmq_server: {what}: {self.conns.count} connections are open, the most the "
                  f"open-files limit ({self._fd_limit}) leaves room for{short}; raise the limit "
                  f"(ulimit -n, systemd LimitNOFILE=) to serve more", "refusals")

    def _read_monitor(self, rounds=16):
        """Read the ROUTER's ACCEPTED and DISCONNECTED events in batches
        (never waits), until none is left or after ``rounds`` batches.

        An event may be read long after it happened, when the fd it names
        has been closed and given to another connection.  So an ACCEPTED
        whose fd is closed later in the batch is not acted on; for the
        others a duplicate of the fd is taken (``_pin``: it keeps naming the
        same connection, whatever libzmq does with the number), and the
        monitor read again: a close of that fd meanwhile drops the pin.
        The peer is read, and a connection over the handshake cap shut
        down, through the pin only.  The ZAP handler calls this too before
        each answer: libzmq reports a connection's ACCEPTED before its
        handshake starts, so the caps then count every connection that
        can be asking.

        When no fd is left for a duplicate (the open-files limit), spare fds
        are given back (``_pin``); an ACCEPTED that still gets none is kept
        for a later batch, in order, and the call returns True (short of
        fds: the caller waits a little before the next)."""
        import zmq
        sync = self._monitor_sync
        if sync is None:
            return False
        accepted = zmq.EVENT_ACCEPTED
        short = False
        for _ in range(rounds):
            messages = self._monitor_later + _drain(sync, zmq)
            events = [_monitor_event(m) for m in messages]
            self._monitor_later = []
            if not events:
                break
            actable = plan_accepts(events, accepted)
            pins = {}
            waiting = []            # ACCEPTED messages that found no fd: for the next batch
            for i in sorted(actable):
                pin = self._pin(events[i][1])
                if pin:
                    pins[events[i][1]] = pin
                elif pin is False:
                    waiting.append(messages[i])
            try:
                later = []
                if pins or waiting:
                    later = _drain(sync, zmq)
                    for kind, fd in map(_monitor_event, later):
                        if kind != accepted and fd in pins:
                            self._unpin(pins.pop(fd))
                self._monitor_later = waiting + later
                now = time.monotonic()
                for i, (kind, fd) in enumerate(events):
                    if kind != accepted:
                        self.conns.closed(fd)
                    elif i in actable and fd in pins:
                        self._accepted(fd, pins[fd], now)
            finally:
                for pin in pins.values():
                    self._unpin(pin)
            if waiting:
                short = True
                break               # (let libzmq close what was refused before trying again)
        if len(self._spare) < SPARE_FDS:
            self._refill_spares()
        return short

    def _accepted(self, fd, pin, now):
        peer = _peer_of(pin)
        if peer is None:
            return      # gone already
        if self.max_connections is not None and self.conns.count >= self.max_connections:
            self.conns.closed(fd)   # (an unconfirmed entry its first message made)
            self._refuse_for_fd_limit(peer, pin)
            return
        if not self.conns.accepted(fd, peer, now):
            self._info(f"zmq_server: dropped a connection from {peer[0]}: more than "
                       f"{self.conns.max_handshaking} of its connections are in the handshake", "refusals")
            if self.metrics is not None:
                self.metrics.refused("handshakes_per_source")
            self.conns.fds[fd].shut = True
            _shut(pin)

    async def _zap_loop(self, zap):
        while True:
            frames = await zap.recv_multipart()
            self._read_monitor()    # this connection's ACCEPTED is there: count it first
            await zap.send_multipart(self.zap_reply(frames))

    def zap_reply(self, frames):
        """The ZAP reply (RFC 27) to a request: status 200 with the client's
        key as User-Id for an admitted CURVE key, 400 otherwise."""
        if len(frames) < 6:
            return [b"1.0", frames[1] if len(frames) > 1 else b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        if version != b"1.0":
            return [b"1.0", request_id, b"500", b"unsupported ZAP version", b"", b""]
        peer = address.decode("ascii", "replace")
        if not self.conns.admit(peer):
            self._info(f"zmq_server: refused {peer}: it holds {self.conns.max_per_source} connections, "
                       "the limit a source (--max-per-source)", "refusals")
            if self.metrics is not None:
                self.metrics.refused("connections_per_source")
            return [b"1.0", request_id, b"400", b"too many connections from this address", b"", b""]
        if mechanism == b"NULL" and self._secret is None:
            return [b"1.0", request_id, b"200", b"OK", b"", b""]
        if mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
            from zmq.utils import z85
            key = z85.encode(credentials[0]).decode("ascii")
            if self._allowed is not None and key not in self._allowed:
                self._info(f"zmq_server: refused {peer}: key {key} is not allowed", "refusals")
                if self.metrics is not None:
                    self.metrics.refused("key_not_allowed")
                return [b"1.0", request_id, b"400", b"this client's key is not allowed", b"", b""]
            return [b"1.0", request_id, b"200", b"OK", key.encode("ascii"), b""]
        self._info(f"zmq_server: refused {peer}: mechanism {mechanism.decode('ascii', 'replace')}", "refusals")
        return [b"1.0", request_id, b"400", b"this directory requires CURVE", b"", b""]

    def handle_message(self, frames):
        """The reply frames to one ROUTER message ``[routing id, header, body]``."""
        routing = frames[0]
        if len(frames) == 3 and self.metrics is None:
            # the hot path: a LOOKUP of a registered name needs no decoded
            # message and no key, and its answer was made at registration
            header = frames[1].bytes
            name = p.lookup_name(header, frames[2].bytes)
            if name is not None:
                record = self.registry.records.get(name)
                if record is not None:
                    return [routing, header, record.found]
        if len(frames) != 3:
            header = bytes(frames[1].bytes[:p.HEADER_SIZE]) if len(frames) > 1 else b""
            reply = p.ErrorReply(p.MALFORMED, f"a request is 2 frames (header, body), not {len(frames) - 1}")
            return [routing, header or p.encode_header(0), p.encode_reply(reply)]
        header = frames[1].bytes
        try:
            p.decode_header(header)
            request = p.decode_request(frames[2].bytes)
        except p.ProtocolError as exc:
            reply = p.ErrorReply(exc.code, str(exc))
            if len(header) > p.HEADER_SIZE:
                header = header[:p.HEADER_SIZE]
        else:
            key = _frame_property(frames[1], "User-Id") or None
            metrics = self.metrics
            if metrics is None:
                reply = self.handle(request, key, frames[1], routing.bytes, header)
            else:
                started = time.perf_counter()
                reply = self.handle(request, key, frames[1], routing.bytes, header)
                if isinstance(request, p.Lookup):
                    metrics.lookup_time(time.perf_counter() - started)
                metrics.request(type(request).__name__.upper(), reply)
            conn = self._conn
            if conn is not None and type(reply) is not p.ErrorReply:
                self._tie(conn, request, reply)
            return [routing, header, p.encode_reply(reply)]
        if self.metrics is not None:
            self.metrics.request(p.command_name(frames[2].bytes) if len(frames) == 3 else "?", reply)
        return [routing, header, p.encode_reply(reply)]

    def handle(self, request, key, frame=None, routing=b"", header=b""):
        """The reply to one decoded request from the client with CURVE key
        ``key`` (``routing`` and ``header`` address the events of a WATCH)."""
        registry = self.registry
        if isinstance(request, p.Lookup):
            return registry.lookup(request.name)
        if isinstance(request, p.List):
            return registry.list(request.pattern, request.after, request.limit)
        if isinstance(request, p.Info):
            return registry.info(request.name)
        if isinstance(request, (p.Watch, p.Unwatch)):
            lease = registry.lease(request.lease, key)
            if isinstance(lease, p.ErrorReply):
                return lease
            if isinstance(request, p.Unwatch):
                return registry.unwatch(lease, request.watch)
            wid = p.decode_header(header)
            reply = registry.watch(lease, wid, routing, header, request.pattern, request.mode)
            if type(reply) is not p.ErrorReply:
                lease.watches[wid].conn = self._conn    # (what to shut if it falls behind)
            return reply
        if isinstance(request, p.KeepAlive):
            return registry.keepalive(request.lease, key, time.monotonic())
        if isinstance(request, p.Register):
            lease = registry.lease(request.lease, key)
            if isinstance(lease, p.ErrorReply):
                return lease
            if key is not None and request.key and request.key != key:
                return p.ErrorReply(p.AUTH, "on a secure directory a name may only be registered with "
                                            "the client's own key (or none)")
            return registry.register(lease, request.kind, request.name, request.address, request.key,
                                     time.time())
        if isinstance(request, p.Lease):
            peer = (_frame_property(frame, "Peer-Address") if frame is not None else None) or "?"
            lease = registry.grant(request.ttl_ms / 1000.0, time.monotonic(), request.host, request.pid,
                                   request.program, key, peer)
            if isinstance(lease, p.ErrorReply):
                return lease
            return p.Granted(lease.id, int(lease.ttl * 1000))
        if isinstance(request, p.Unregister):
            lease = registry.lease(request.lease, key)
            if isinstance(lease, p.ErrorReply):
                return lease
            return registry.unregister(lease, request.name)
        if isinstance(request, p.Revoke):
            return registry.revoke(request.lease, key)
        if isinstance(request, p.Ping):
            return p.Pong()
        return p.ErrorReply(p.UNKNOWN_COMMAND, f"{type(request).__name__} is not served")


def ready_line(host, port, public_key=None):
    """The line on stdout that says the server listens (and, on loopback,
    how to listen on the network)."""
    secure = f" (CURVE, public key {public_key})" if public_key else ""
    hint = (" -- this host only; to listen on the network give an address, e.g. "
            "zmq_server 0.0.0.0 --curve-secret KEYFILE --curve-allow CLIENTKEYS" if _is_loopback(host) else "")
    return f"zmq_server: listening on {format_hostport(host, port)}{secure}{hint}"


def startup_warnings(host, secure, allow_list):
    """The warnings a start with these settings deserves (lines for stderr)."""
    lines = []
    if not secure and not _is_loopback(host):
        lines.append(f"zmq_server: warning: plain mode on {host}, reachable from the network: any client "
                     "that reaches this port can register any name and read every record; use "
                     "--curve-secret and --curve-allow (docs/security.md)")
    if secure and not allow_list:
        lines.append("zmq_server: warning: --curve-secret without --curve-allow: any client key is admitted "
                     "(the link is encrypted, but anyone can register names); list the client keys with "
                     "--curve-allow FILE")
    return lines


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _raise_fd_limit():
    """Lift the soft open-files limit to the hard one: each client is a TCP
    connection.  Returns (the soft limit before, the soft limit now, the
    hard limit), or None where there are no such limits."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return before, soft, hard


def fd_limit_line(limits, room):
    """The start's line on the open-files limit: what it is, whether it was
    raised, and how many connections it leaves room for."""
    if limits is None or room is None:
        return None
    before, soft, hard = limits
    told = f"open-files limit {soft}" + (f" (raised from {before}, to the hard limit)" if soft != before
                                         else " (the hard limit)" if soft == hard else f" (hard limit {hard})")
    line = f"zmq_server: {told}: room for {room} connections, more are refused"
    if room < 1000:
        line += "; raise the hard limit for more (ulimit -Hn, systemd LimitNOFILE=)"
    return line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="zmq_server",
        description="The name directory of the wiring API: maps global names of exchanges "
                    "and queues to the addresses where their owners listen.")
    parser.add_argument("address", nargs="?", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this host only; "
                             "0.0.0.0 for every IPv4 interface)")
    parser.add_argument("--port", type=int, default=p.DEFAULT_PORT,
                        help=f"TCP port (default: {p.DEFAULT_PORT}; 0 picks a free port)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="do not log registrations and removals")
    parser.add_argument("--curve-secret", metavar="FILE",
                        help="file holding the server's CURVE secret key (40 Z85 characters): "
                             "every connection is then authenticated and encrypted (CurveZMQ)")
    parser.add_argument("--curve-allow", metavar="FILE",
                        help="file of client public keys allowed to connect, one per line "
                             "(lines starting with '#' are comments); needs --curve-secret")
    parser.add_argument("--max-ttl", type=float, default=p.MAX_TTL, metavar="SECONDS",
                        help=f"longest lease granted (default {p.MAX_TTL:g} s); longer requests get this")
    parser.add_argument("--min-ttl", type=float, default=p.MIN_TTL, metavar="SECONDS",
                        help=f"shortest lease granted (default {p.MIN_TTL:g} s)")
    parser.add_argument("--max-records", type=int, default=p.MAX_RECORDS, metavar="N",
                        help=f"names the directory holds at most (default {p.MAX_RECORDS:,}); "
                             "one more REGISTER gets ERROR LIMIT")
    parser.add_argument("--max-leases", type=int, default=p.MAX_LEASES, metavar="N",
                        help=f"leases (clients) at most (default {p.MAX_LEASES:,})")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics over HTTP there (needs prometheus_client; "
                             "port 0 picks one, printed on stderr)")
    parser.add_argument("--max-per-source", type=int, default=p.MAX_PER_SOURCE, metavar="N",
                        help=f"connections one source address may hold (default {p.MAX_PER_SOURCE:,})")
    parser.add_argument("--max-handshaking", type=int, default=p.MAX_HANDSHAKING, metavar="N",
                        help="connections of one source address still in the handshake "
                             f"(default {p.MAX_HANDSHAKING:,}); more are dropped")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT, metavar="SECONDS",
                        help="shut down a connection that holds no names or watches after this long "
                             f"without a message (default {IDLE_TIMEOUT:g}; 0: never)")
    parser.add_argument("--log-rate", type=int, default=20, metavar="LINES",
                        help="log lines a second at most; a summary line counts the rest (default 20)")
    parser.add_argument("--key-grace", metavar="SECONDS", type=float, default=KEY_GRACE,
                        help="with --curve-secret: seconds a name registered with a key stays "
                             "tied to that key after its owner left, so that only the same key "
                             f"may take it back (default: {KEY_GRACE:g}; 0: none)")
    parser.add_argument("--max-queued", metavar="N", type=int, default=SNDHWM,
                        help="messages queued for a client that does not read them; past that its "
                             "watches end and its connection is closed, and it watches again from "
                             "the current records (and sends unanswered requests again) when it "
                             f"reconnects (default: %(default)s; at least {p.MIN_QUEUED})")
    parser.add_argument("--heartbeat", metavar="SECONDS", type=float, default=SERVER_HEARTBEAT_IVL_MS / 1000,
                        help="seconds between the server's ZMTP heartbeats on each connection; a peer "
                             "silent for three is dropped (default: %(default)g; 0: none, TCP keepalive "
                             "still drops dead peers)")
    parser.add_argument("--state", metavar="FILE",
                        help="with --curve-secret: keep the names held for their keys in FILE "
                             "(written within about 0.05 s of a change, at most 10 times a second, "
                             "and at a clean stop) and read it at the start, so that after a restart "
                             "only their owners' keys can take them back first")
    parser.add_argument(lifeline.FLAG, action="store_true",
                        help="stop when the parent process exits (its pipe on stdin closes); "
                             "how pyzmq.Directory() runs it")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.idle_timeout) and args.idle_timeout >= 0):
        parser.error(f"--idle-timeout must be a number of seconds >= 0 (0: never), not {args.idle_timeout}")
    if not (math.isfinite(args.heartbeat) and (args.heartbeat == 0 or 0.1 <= args.heartbeat <= 3600)):
        parser.error(f"--heartbeat must be 0 (none) or 0.1 to 3600 seconds, not {args.heartbeat}")
    if not (math.isfinite(args.key_grace) and args.key_grace >= 0):
        parser.error(f"--key-grace must be a number of seconds >= 0, not {args.key_grace}")
    if not 0 <= args.port <= 65535:
        parser.error(f"port {args.port} is not in 0..65535")
    if args.metrics is not None:
        mhost, colon, mport = args.metrics.rpartition(":")
        if not colon or not mport.isdigit() or not 0 <= int(mport) <= 65535:
            parser.error(f"--metrics {args.metrics!r}: expected HOST:PORT, e.g. 127.0.0.1:9568")
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            parser.error("--metrics needs the prometheus_client package: pip install 'pyzmq-wiring[metrics]'")
    if min(args.max_records, args.max_leases, args.log_rate, args.max_per_source, args.max_handshaking) < 1:
        parser.error("--max-records, --max-leases, --max-per-source, --max-handshaking "
                     "and --log-rate must be at least 1")
    if args.max_queued < p.MIN_QUEUED:
        parser.error(f"--max-queued {args.max_queued} is too small: a client keeps up to "
                     f"{p.CLIENT_MAX_IN_FLIGHT} requests in flight, and a connection whose replies do not "
                     "fit is closed, so its client would be disconnected again at every burst; give at "
                     f"least {p.MIN_QUEUED} (default {SNDHWM})")
    if not 0 < args.min_ttl <= args.max_ttl:
        parser.error(f"--min-ttl {args.min_ttl:g} and --max-ttl {args.max_ttl:g}: need 0 < min <= max")
    if args.curve_allow and not args.curve_secret:
        parser.error("--curve-allow needs --curve-secret")
    if args.state and not args.curve_secret:
        parser.error("--state keeps the names held for their CURVE keys: it needs --curve-secret")
    if args.exit_with_parent and lifeline.stdin_problem():
        parser.error(f"{lifeline.FLAG}: {lifeline.stdin_problem()}")
    args.secret_key = args.allowed_keys = None
    option = None
    try:
        if args.curve_secret:
            option = "--curve-secret"
            args.secret_key = read_key_file(args.curve_secret, option)
        if args.curve_allow:
            option = "--curve-allow"
            args.allowed_keys = read_key_list(args.curve_allow)
            if not args.allowed_keys:
                raise ValueError(f"--curve-allow {args.curve_allow} lists no keys: no client could connect")
            _warn_if_writable(args.curve_allow)
    except OSError as exc:
        # "[Errno 2] No such file or directory: 'x'" alone did not say which option
        parser.error(f"{option} {exc.filename}: cannot read it: {exc.strerror}"
                     + (" (make one with zmq_keygen)" if option == "--curve-secret" else ""))
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _warn_if_writable(path):
    """Warn when users other than the file's owner could change the allow
    list (and so let their own key in)."""
    try:
        if os.stat(path).st_mode & 0o022:
            _log(f"zmq_server: warning: {path} lists the allowed client keys and is writable by "
                 "other users: any of them can add a key (chmod go-w)")
    except OSError:
        pass


def read_key_file(path, what):
    """The one Z85 key in file ``path``; OSError/ValueError saying what is wrong."""
    keys = read_key_list(path)
    if len(keys) != 1:
        raise ValueError(f"{what} {path}: expected one key, found {len(keys)}")
    try:
        if os.stat(path).st_mode & 0o077:
            _log(f"zmq_server: warning: {path} holds a secret key and is readable by other users")
    except OSError:
        pass
    return keys[0]


def read_key_list(path):
    """The Z85 keys in file ``path``, one per line.

    Blank lines and lines starting with '#' are skipped.  '#' is also a Z85
    character, but it cannot start a key (a 5-character group encodes at
    most 0xFFFFFFFF, so its first digit is at most 82 of 85), so there is
    no ambiguity; a comment after a key on the same line is not allowed.
    """
    from pyzmq.curve import check_key
    keys = []
    with open(path, encoding="ascii", errors="replace") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                check_key(text, f"{path} line {number}")
                keys.append(text)
    return keys


def main(argv=None):
    """Entry point of the ``zmq_server`` console script; returns the exit status."""
    args = parse_args(argv)
    limits = _raise_fd_limit()
    server = Server(args.address, args.port, quiet=args.quiet, secret_key=args.secret_key,
                    allowed_keys=args.allowed_keys, min_ttl=args.min_ttl, max_ttl=args.max_ttl,
                    max_records=args.max_records, max_leases=args.max_leases, log_rate=args.log_rate,
                    metrics=args.metrics, max_per_source=args.max_per_source,
                    max_handshaking=args.max_handshaking, key_grace=args.key_grace, state=args.state,
                    heartbeat=args.heartbeat, max_queued=args.max_queued,
                    idle_timeout=args.idle_timeout)

    def ready(host, port):
        print(ready_line(host, port, server.public_key), flush=True)
        if server.metrics_address is not None:
            _log(f"zmq_server: metrics on http://{format_hostport(*server.metrics_address)}/metrics")
        line = fd_limit_line(limits, server.max_connections)
        if line is not None and not args.quiet:
            _log(line)
        for line in startup_warnings(host, server.public_key is not None, args.allowed_keys is not None):
            _log(line)

    async def run():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, server.stop)
            except (NotImplementedError, RuntimeError):
                pass  # not on this platform; KeyboardInterrupt still ends the loop
        if args.exit_with_parent:
            lifeline.watch_parent(loop, server.stop)
        await server.serve(ready)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        _log(f"zmq_server: cannot listen on {format_hostport(args.address, args.port)}: {exc.strerror or exc}")
        return 1
    _log("zmq_server: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
