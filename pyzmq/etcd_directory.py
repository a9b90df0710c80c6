"""The directory on an etcd v3 cluster (docs/etcd.md): :class:`EtcdDirectory`,
with the public surface the wiring layer uses on
:class:`pyzmq.directory.DirectoryClient`, plus :meth:`EtcdDirectory.list`,
:meth:`EtcdDirectory.info` and :meth:`EtcdDirectory.wait_for`.

    ZMQ("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379")
    ZMQ("etcd+tls://alice:secret@h1,h2,h3/myapp?ca=/etc/ca.pem")

A global name is the key ``<prefix><name>`` (prefix ``/pyzmq-wiring/`` by
default), its value a JSON record (kind, address, key, owner, registered).
Each client holds one lease (TTL 5 s by default) that a background thread
keeps alive; every name it registers is attached to it, so the names of a
process that dies vanish when the lease expires, and a clean close revokes
it (they vanish at once).  Registering is a create-if-absent transaction;
replacing or deleting a name compares the key's lease with ours, so only
the holder can change it.

Requests go through etcd's HTTP/JSON gateway with :mod:`etcd3gw` (one
:class:`etcd3gw.client.Etcd3Client` per endpoint); this module rotates
through the endpoints when one fails.  Watches (following a moved owner,
:meth:`wait_for`) are one streaming ``/v3/watch`` request on the key
prefix, read by a thread of this module (see docs/design.md for why not
etcd3gw's watcher).
"""

import base64
import fnmatch
import http.client
import json
import logging
import math
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import weakref

from pyzmq import protocol as p
from pyzmq.directory import DirectoryError, Watch
from pyzmq.errors import Error, Timeout
from pyzmq.location import format_hostport

log = logging.getLogger("pyzmq.etcd")

DEFAULT_PORT = 2379
DEFAULT_PREFIX = "/pyzmq-wiring/"
DEFAULT_TTL = 5              # seconds a lease lives without a keepalive
ATTEMPT_TIMEOUT = 2.0        # seconds one HTTP request may take before the next endpoint is tried
RETRY_PAUSE = 0.1            # seconds between rounds over all endpoints
WATCH_IDLE = 10.0            # seconds of silence after which a watch stream is opened again

_KIND_WORD = {"E": "exchange", "Q": "queue"}
_KIND_CODE = {v: k for k, v in _KIND_WORD.items()}


def _b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _unb64(text):
    return base64.b64decode(text).decode("utf-8", "replace")


def _range_end(prefix):
    """The end of the key range that holds every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    raw[-1] += 1
    return bytes(raw)


def is_etcd_url(hostname):
    return isinstance(hostname, str) and hostname.strip().lower().startswith(("etcd://", "etcd+tls://"))


def parse_url(url):
    """Split ``etcd[+tls]://[user[:password]@]h1[:port],h2[:port][/prefix][?options]``.

    Returns a dict: ``tls``, ``endpoints`` [(host, port)], ``prefix``
    ("/name/"), ``user``, ``password`` and the query ``options``
    (``ca``, ``cert``, ``key``, ``ttl``).  Raises ValueError saying what is wrong.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("etcd", "etcd+tls"):
        raise ValueError(f"etcd directory {url!r}: expected 'etcd://host:port,...' or 'etcd+tls://...'")
    rest, _, query = rest.partition("?")
    hosts, slash, path = rest.partition("/")
    user = password = None
    if "@" in hosts:
        cred, _, hosts = hosts.rpartition("@")
        user, colon, password = cred.partition(":")
        user = urllib.parse.unquote(user)
        password = urllib.parse.unquote(password) if colon else None
        if not user:
            raise ValueError(f"etcd directory {url!r}: empty user name before '@'")
    endpoints = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"etcd directory {url!r}: an empty endpoint in the list")
        if item.startswith("["):
            host, bracket, port = item[1:].partition("]")
            port = port[1:] if port.startswith(":") else (None if not port else "bad")
            if not bracket:
                raise ValueError(f"etcd directory {url!r}: endpoint {item!r} lacks ']'")
        else:
            if item.count(":") > 1:
                raise ValueError(f"etcd directory {url!r}: write an IPv6 address in brackets")
            host, colon, port = item.partition(":")
            port = port if colon else None
        if not host or any(ch.isspace() for ch in host):
            raise ValueError(f"etcd directory {url!r}: endpoint {item!r} has no valid host")
        if port is None:
            number = DEFAULT_PORT
        elif port.isascii() and port.isdigit() and 1 <= int(port) <= 65535:
            number = int(port)
        else:
            raise ValueError(f"etcd directory {url!r}: endpoint {item!r} has port {port!r}, "
                             "not a number from 1 to 65535")
        endpoints.append((host, number))
    path = path.strip("/")
    prefix = f"/{path}/" if path else DEFAULT_PREFIX
    options = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name not in ("ca", "cert", "key", "ttl", "user", "password"):
            raise ValueError(f"etcd directory {url!r}: unknown option {name!r} "
                             "(known: ca, cert, key, ttl, user, password)")
        options[name] = value
    user = options.pop("user", user)
    password = options.pop("password", password)
    return {"tls": scheme == "etcd+tls", "endpoints": endpoints, "prefix": prefix,
            "user": user, "password": password, "options": options}


class _Unavailable(Exception):
    """No endpoint answered this attempt (down, no leader, timed out)."""


class _LeaseGone(Exception):
    """The lease this client holds no longer exists in the cluster."""


class _Endpoint:
    """One etcd node: an etcd3gw client (its own requests session) per
    caller role, so the keeper's keepalives never queue behind a request."""

    def __init__(self, host, port, tls, ca, cert, key):
        import etcd3gw
        self.host, self.port = host, port
        self.label = format_hostport(host, port)
        self._make = lambda: etcd3gw.Etcd3Client(
            host=host, port=port, protocol="https" if tls else "http",
            ca_cert=ca, cert_cert=cert, cert_key=key, timeout=ATTEMPT_TIMEOUT, api_path="/v3/")
        self._clients = {}
        self._lock = threading.Lock()

    def client(self, role):
        with self._lock:
            c = self._clients.get(role)
            if c is None:
                c = self._clients[role] = self._make()
            return c

    def close(self):
        with self._lock:
            for c in self._clients.values():
                c.session.close()
            self._clients.clear()


class EtcdDirectory:
    """The directory on the etcd cluster at ``url`` (see :func:`parse_url`).

    ``timeout`` bounds every request (retried over the endpoints within it);
    ``ttl`` is the lease's time to live in seconds (whole, at least 2).
    TLS: ``etcd+tls://`` (https), ``ca`` (CA bundle to check the nodes'
    certificates; the system's when None), ``cert`` and ``key`` (a client
    certificate).  Authentication: ``user`` and ``password`` (etcd's
    ``auth enable``); the token is asked for again when it expires.
    Keyword arguments override what the URL says.  ``lease=False`` makes a
    read-only client (``list``, ``info``, ``subscribe``, ``wait_for``,
    ``ping``: what ``zmq_names`` uses): no lease and no keeper thread, so
    nothing in the cluster to renew or revoke; ``register`` raises.  Safe to
    share between threads.
    """

    def __init__(self, url, timeout=5.0, on_lost=None, ttl=None, user=None, password=None,
                 ca=None, cert=None, key=None, lease=True):
        try:
            import etcd3gw  # noqa: F401
        except ImportError:
            raise Error("the etcd directory needs the etcd3gw package: pip install etcd3gw "
                        "(or, from the pyzmq-wiring checkout, pip install '.[etcd]')") from None
        if on_lost is not None and not callable(on_lost):
            raise TypeError(f"on_lost must be a callable(name, reason), not {type(on_lost).__name__}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive, finite number of seconds, not {timeout!r}")
        parsed = parse_url(url)
        opts = parsed["options"]
        ttl = ttl if ttl is not None else opts.get("ttl", DEFAULT_TTL)
        try:
            ttl = int(ttl)
        except (TypeError, ValueError):
            raise ValueError(f"etcd lease ttl must be a whole number of seconds, not {ttl!r}") from None
        if not 2 <= ttl <= 3600:
            raise ValueError(f"etcd lease ttl must be from 2 to 3600 seconds, not {ttl}")
        self.ttl = ttl
        self.timeout = float(timeout)
        self.prefix = parsed["prefix"]
        self._user = user if user is not None else parsed["user"]
        self._password = password if password is not None else parsed["password"]
        if self._user is not None and self._password is None:
            raise ValueError(f"etcd user {self._user!r} needs a password")
        self._tls = parsed["tls"]
        ca = ca if ca is not None else opts.get("ca")
        cert = cert if cert is not None else opts.get("cert")
        key = key if key is not None else opts.get("key")
        if (cert is None) != (key is None):
            raise ValueError("an etcd client certificate needs both cert and key")
        if (ca or cert) and not self._tls:
            raise ValueError("ca, cert and key need TLS: write the address as etcd+tls://...")
        self._ca, self._cert, self._key = ca, cert, key
        self._endpoints = [_Endpoint(h, port, self._tls, ca, cert, key) for h, port in parsed["endpoints"]]
        self.address = ("etcd+tls://" if self._tls else "etcd://") + \
            ",".join(e.label for e in self._endpoints) + self.prefix.rstrip("/")
        self._on_lost = on_lost
        self.lost = {}
        self._current = 0              # index of the endpoint that answered last
        self._token = None             # auth token (user/password)
        self._token_lock = threading.Lock()
        self._lock = threading.Lock()  # _names, _lease
        self._names = {}               # name -> record (dict) registered by this client
        self._lease = None             # our lease id (int)
        self._lease_ok = False         # the last keepalive succeeded (and every name is under the lease)
        self._pending = set()          # names to put again under a lease made again
        self._closed = False
        self.reconnects = 0            # times the lease was lost and made again
        self._stop = threading.Event()
        self._wake = threading.Event()
        # watches (following moved owners, wait_for)
        self._watch_cond = threading.Condition()
        self._wanted = set()
        self._fresh = set()            # wanted names not yet read once
        self._watched = {}             # name -> [serial, record tuple or None, mod revision]
        self._watch_serial = 0
        self._watcher = None
        self._watch_conn = None
        self._subs = {}                # Watch -> the revision its records are as of
        self._new_subs = []            # Watches whose snapshot is still to be read
        self._watch_contact = 0.0      # monotonic time the cluster last answered the watcher
        self._owner = {"host": socket.gethostname(), "pid": os.getpid(),
                       "program": _program()}

        deadline = time.monotonic() + self.timeout
        self._local_ip = self._probe_local_ip(deadline)
        self.read_only = not lease
        self._keeper = None
        if self.read_only:
            return
        self._lease = self._grant(deadline)
        self._lease_ok = True
        self._keeper = threading.Thread(target=_keep_alive, args=(weakref.ref(self), self._stop, self._wake),
                                        name="pyzmq-etcd-lease", daemon=True)
        self._keeper.start()

    # -- the surface DirectoryClient has -------------------------------------

    @property
    def connected(self):
        """True while the lease is known to be alive (the last keepalive
        succeeded); a read-only client (``lease=False``) is never connected."""
        return self._lease_ok and not self._closed

    @property
    def closed(self):
        return self._closed

    @property
    def local_ip(self):
        """This host's address on the route to the cluster (the local end
        of a TCP connection to the first endpoint that accepted one)."""
        return self._local_ip

    @property
    def lease_id(self):
        return self._lease

    def register(self, kind, name, address, key=""):
        """Publish global ``name`` (kind "E" or "Q") at ``address`` under this
        client's lease.  A name held under another lease raises
        :class:`pyzmq.DirectoryError` (DUPLICATE); one this client holds is replaced."""
        p.validate_kind(kind)
        p.validate_name(name)
        p.validate_address(address)
        p.validate_key(key)
        if self.read_only:
            raise Error(f"cannot register {name!r}: this client of the etcd directory at {self.address} "
                        f"is read-only (lease=False, so it holds no lease); make one without lease=False")
        record = {"kind": _KIND_WORD[kind], "address": address, "key": key, "owner": self._owner,
                  "registered": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        deadline = time.monotonic() + self.timeout
        while True:
            with self._lock:
                lease = self._lease
            try:
                self._put(name, record, lease, deadline)
                with self._lock:
                    if self._lease == lease:
                        # remembered under the lease it was put with: when the
                        # keeper makes a new lease it sees the name and moves it
                        self._names[name] = record
                        return
                continue    # the lease was made again meanwhile: put it under the new one
            except _LeaseGone:
                # the cluster forgot our lease: the keeper makes a new one
                self._lease_ok = False
                self._wake.set()
                while self._lease == lease and time.monotonic() < deadline and not self._closed:
                    time.sleep(0.05)
                if self._lease == lease:
                    raise Timeout(f"cannot register {name!r}: this process's lease on the etcd directory "
                                  f"at {self.address} was lost and no new one came within "
                                  f"{self.timeout:g} s") from None

    def _put(self, name, record, lease, deadline):
        """Create ``name`` under ``lease``, or replace it if ``lease`` holds it."""
        k = _b64(self.prefix + name)
        value = _b64(json.dumps(record, separators=(",", ":")))
        put = {"request_put": {"key": k, "value": value, "lease": str(lease)}}
        reply = self._call("/kv/txn", {
            "compare": [{"target": "CREATE", "key": k, "result": "EQUAL", "create_revision": "0"}],
            "success": [put], "failure": [{"request_range": {"key": k}}]}, deadline, "register " + repr(name))
        if reply.get("succeeded"):
            return
        # it exists: ours (a retried request, or a replacement), or another's
        reply = self._call("/kv/txn", {
            "compare": [{"target": "LEASE", "key": k, "result": "EQUAL", "lease": str(lease)}],
            "success": [put], "failure": [{"request_range": {"key": k}}]}, deadline, "register " + repr(name))
        if reply.get("succeeded"):
            return
        kvs = _range_kvs(reply)
        if not kvs:     # deleted in between: try again from the start
            return self._put(name, record, lease, deadline)
        owner = (_decode_record(kvs[0]) or {}).get("owner") or {}
        if owner.get("pid") == os.getpid() and owner.get("host") == self._owner["host"]:
            # (as zmq_server's client says: a notebook cell run again, a second instance)
            raise DirectoryError(f"global name {name!r} is already registered by another instance "
                                 f"(in this process: close it first) in the etcd directory at "
                                 f"{self.address}", p.DUPLICATE)
        raise DirectoryError(f"global name {name!r} is already registered by another process "
                             f"({_owner_text(kvs[0])}) in the etcd directory at {self.address}",
                             p.DUPLICATE)

    def lookup(self, name):
        """``(kind, address, key)`` of global object ``name``."""
        p.validate_name(name)
        record = self._get(name, time.monotonic() + self.timeout)
        if record is None:
            raise DirectoryError(f"no global object named {name!r} in the etcd directory at "
                                 f"{self.address}", p.NOT_FOUND)
        return _as_tuple(record)

    def info(self, name):
        """The record of ``name``: a dict with name, kind, address, key,
        owner (host, pid, program) and registered (ISO time)."""
        p.validate_name(name)
        record = self._get(name, time.monotonic() + self.timeout)
        if record is None:
            raise DirectoryError(f"no global object named {name!r} in the etcd directory at "
                                 f"{self.address}", p.NOT_FOUND)
        return dict(record, name=name)

    def list(self, pattern="*"):
        """The records (as :meth:`info` gives them) of every name matching
        the glob ``pattern``, sorted by name."""
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str glob such as 'orders.*', not {type(pattern).__name__}")
        reply = self._call("/kv/range", {"key": _b64(self.prefix), "range_end": _b64(_range_end(self.prefix))},
                           time.monotonic() + self.timeout, "list names")
        out = []
        for kv in reply.get("kvs", []):
            name = _unb64(kv["key"])[len(self.prefix):]
            if fnmatch.fnmatchcase(name, pattern):
                record = _decode_record(kv)
                if record is not None:
                    out.append(dict(record, name=name))
        return sorted(out, key=lambda r: r["name"])

    def unregister(self, name):
        """Withdraw ``name``, which this client's lease must hold."""
        p.validate_name(name)
        if self.read_only:
            raise Error(f"cannot unregister {name!r}: this client of the etcd directory at {self.address} "
                        f"is read-only (lease=False), it holds no names")
        with self._lock:
            was_mine = self._names.pop(name, None) is not None
            lease, down = self._lease, not self._lease_ok
        if was_mine and down:
            return      # the cluster is out of reach: the name goes with the lease
        k = _b64(self.prefix + name)
        try:
            reply = self._call("/kv/txn", {
                "compare": [{"target": "LEASE", "key": k, "result": "EQUAL", "lease": str(lease)}],
                "success": [{"request_delete_range": {"key": k}}],
                "failure": [{"request_range": {"key": k}}]},
                time.monotonic() + self.timeout, "unregister " + repr(name))
        except Timeout:
            if not was_mine:
                raise
            self._lease_ok = False  # the next ones return at once; the name goes with the lease
            return
        if reply.get("succeeded"):
            return
        if _range_kvs(reply):
            if was_mine:
                return      # another process took it after our lease was lost
            raise DirectoryError(f"cannot unregister {name!r}: it is registered by another process",
                             p.NOT_OWNER)
        if not was_mine:
            raise DirectoryError(f"cannot unregister {name!r}: no global object of that name in the "
                                 f"etcd directory at {self.address}", p.NOT_FOUND)

    def names(self):
        """The names this client has registered, sorted."""
        with self._lock:
            return sorted(self._names)

    def ping(self):
        """Check that the cluster answers (a linearizable read, so a
        cluster without quorum fails); raise Error if it does not."""
        self._call("/kv/range", {"key": _b64(self.prefix + "\0ping")}, time.monotonic() + self.timeout, "ping")

    # -- watching ---------------------------------------------------------------

    def watch(self, names):
        """Follow ``names`` through the watch stream (started on first use);
        never blocks.  Read the records with :meth:`watched`."""
        names = set(names)
        with self._watch_cond:
            new = names - self._wanted
            if not new:
                return
            self._wanted |= new
            self._fresh |= new
            self._start_watcher()
        self._kick_watch()

    def _start_watcher(self):
        """With the watch lock held: wake the watcher thread, or start it."""
        self._watch_cond.notify_all()
        if self._watcher is None and not self._closed:
            self._watch_contact = time.monotonic()
            self._watcher = threading.Thread(target=_watch_loop, args=(weakref.ref(self), self._stop),
                                             name="pyzmq-etcd-watch", daemon=True)
            self._watcher.start()

    def subscribe(self, pattern="*", exact=False, max_unread=Watch.MAX_UNREAD):
        """A :class:`pyzmq.directory.Watch` of the names matching glob
        ``pattern`` (or, ``exact``, the one name ``pattern``): the records
        at one revision first (as "added", then ``synced``), then every
        change from the next revision on, through the instance's watch
        stream.  Its entries are dicts as :meth:`list` gives.  Returns once
        the records are read (within ``timeout``).  The stream moves to
        another node when one fails, without losing or repeating an event;
        when no node answers for ``timeout`` seconds the watch ends: its
        ``get`` raises :class:`pyzmq.Timeout`.  It holds at most
        ``max_unread`` events not read yet, then ends: its ``get`` gives
        those, then raises :class:`pyzmq.directory.WatchOverflow`."""
        (p.validate_name if exact else p.validate_pattern)(pattern)
        handle = Watch(self, pattern, exact, max_unread)
        with self._watch_cond:
            if self._closed:
                raise Error(f"the etcd directory client for {self.address} is closed")
            self._new_subs.append(handle)
            self._start_watcher()
        self._kick_watch()
        return handle._wait_synced(self.timeout, lambda: Timeout(
            f"the etcd directory at {self.address} did not send the records matching {pattern!r} "
            f"within {self.timeout:g} s (no quorum, or every node out of reach?)"))

    def _unwatch(self, handle):
        """What ``Watch.close`` calls: stop feeding ``handle``."""
        with self._watch_cond:
            self._subs.pop(handle, None)
            if handle in self._new_subs:
                self._new_subs.remove(handle)

    def _fail_subs(self, error):
        """End every watch with the exception ``error(watch)`` makes."""
        with self._watch_cond:
            handles = list(self._subs) + self._new_subs
            self._subs.clear()
            self._new_subs = []
        for handle in handles:
            handle._fail(error(handle))

    def watched(self, name):
        """``(serial, (kind, address, key) or None)`` of the latest record of
        ``name`` seen (serials grow with each change, across names), or None
        before its first read.  Never blocks."""
        with self._watch_cond:
            entry = self._watched.get(name)
            return None if entry is None else (entry[0], entry[1])

    def watch_serial(self):
        """The serial the next change seen will exceed."""
        with self._watch_cond:
            return self._watch_serial

    def wait_for(self, name, timeout):
        """Wait up to ``timeout`` seconds for global ``name`` to be registered,
        through the watch (not polling); return ``(kind, address, key)``, or
        raise :class:`pyzmq.Timeout`."""
        p.validate_name(name)
        deadline = time.monotonic() + timeout
        self.watch([name])
        with self._watch_cond:
            while True:
                entry = self._watched.get(name)
                if entry is not None and entry[1] is not None:
                    return entry[1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._watch_cond.wait(min(remaining, 0.5))
        raise Timeout(f"global name {name!r} did not appear in the etcd directory at "
                      f"{self.address} within {timeout:g} s")

    # -- closing --------------------------------------------------------------------

    def close(self):
        """Revoke the lease (every name of this client goes at once) and stop
        the threads.  Idempotent; bounded by about a second when the
        cluster is out of reach."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._fail_subs(lambda h: Error(f"the watch of {h.pattern!r} ended: the etcd directory client "
                                        f"for {self.address} is closed"))
        with self._watch_cond:
            self._watch_cond.notify_all()
        self._kick_watch()
        lease = self._lease
        if lease is not None:
            try:
                self._call("/lease/revoke", {"ID": str(lease)}, time.monotonic() + 1.0, "revoke the lease",
                           role="keeper")
            except Error:
                pass    # it expires after its TTL anyway
            except _LeaseGone:
                pass    # already gone (revoked, expired, or a cluster replaced since)
        for t in (self._keeper, self._watcher):
            if t is not None and t is not threading.current_thread():
                t.join(2.0)
        for e in self._endpoints:
            e.close()

    def _abandon(self):
        """What ``ZMQ.__del__`` calls (as ``DirectoryClient._abandon``): stop
        without a request to the cluster and without waiting; the threads
        end on their own, the lease is not revoked, so the names go when it
        expires (one TTL)."""
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._kick_watch()      # a local shutdown() of the watch stream's socket, no request

    def __del__(self):
        if hasattr(self, "_stop"):
            self._stop.set()
            self._wake.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else "connected" if self._lease_ok else "reconnecting"
        return f"<EtcdDirectory {self.address} {state}>"

    # -- requests ---------------------------------------------------------------------

    def _probe_local_ip(self, deadline):
        failures = []
        for e in self._endpoints:
            try:
                with socket.create_connection((e.host, e.port),
                                              timeout=max(0.05, min(1.0, deadline - time.monotonic()))) as s:
                    return s.getsockname()[0]
            except OSError as exc:
                failures.append(f"{e.label}: {exc.strerror or exc}")
        from pyzmq.directory import DirectoryUnreachable
        reason = "; ".join(failures)
        raise DirectoryUnreachable(
            f"cannot reach any node of the etcd directory at {self.address} ({reason}); "
            f"is etcd serving clients there (its client port, 2379 by default)?", reason)

    def _auth_headers(self, role, refresh=False):
        if self._user is None:
            return {}
        with self._token_lock:
            if self._token is None or refresh:
                self._token = None
                reply = self._call_raw("/auth/authenticate", {"name": self._user, "password": self._password},
                                       time.monotonic() + self.timeout, "authenticate", role, auth=False)
                self._token = reply["token"]
            return {"Authorization": self._token}

    def _call(self, path, body, deadline, what, role="main"):
        return self._call_raw(path, body, deadline, what, role)

    def _call_raw(self, path, body, deadline, what, role, auth=True):
        """POST ``body`` to ``/v3<path>`` on the endpoints in turn until one
        answers or ``deadline`` passes; return the decoded JSON."""
        import etcd3gw.exceptions as ex
        failures = {}
        refreshed = False
        n = len(self._endpoints)
        while True:
            if self._closed and role == "main":
                raise Error(f"the etcd directory client for {self.address} is closed")
            for step in range(n):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                i = (self._current + step) % n
                e = self._endpoints[i]
                c = e.client(role)
                c.timeout = max(0.05, min(ATTEMPT_TIMEOUT, remaining))
                try:
                    headers = self._auth_headers(role) if auth else {}
                    extra = {"verify": self._ca} if self._ca else {}   # (REQUESTS_CA_BUNDLE would win over the session's)
                    reply = c.post(c.get_url(path), json=body, headers=headers, **extra)
                except (ex.ConnectionFailedError, ex.ConnectionTimeoutError, ex.InternalServerError) as exc:
                    text = _why(exc)
                    if "SSLError" in text:
                        # a TLS failure does not heal by retrying
                        raise Error(f"TLS with the etcd node {e.label} failed "
                                    f"({_tls_reason(str(exc.detail_text))}): give "
                                    "ca= (the CA that signed the nodes' certificates) and, if the "
                                    "cluster asks for client certificates, cert= and key= of one "
                                    "it trusts (docs/etcd.md)") from None
                    failures[e.label] = text
                    continue
                except ex.Etcd3Exception as exc:
                    text = _why(exc)
                    if auth and self._user is not None and ("token" in text or "auth" in text) \
                            and "permission denied" not in text and not refreshed:
                        refreshed = True
                        self._auth_headers(role, refresh=True)
                        continue
                    if "lease not found" in text:
                        raise _LeaseGone(text) from None
                    if "no leader" in text or "leader changed" in text or "timed out" in text \
                            or "too many requests" in text or "not capable" in text:
                        failures[e.label] = text
                        continue
                    hint = ""
                    if any(w in text for w in ("user name is empty", "permission denied",
                                               "invalid user ID or password", "invalid auth token")):
                        hint = (" (authentication is on: give a user allowed this key prefix "
                                "and its password, etcd://USER:PASSWORD@host:port,... or "
                                "etcd_options={'user': ..., 'password': ...}; docs/etcd.md)")
                    raise Error(f"the etcd directory at {self.address} refused to {what}: "
                                f"{text}{hint}") from None
                self._current = i
                if isinstance(reply, dict) and "error" in reply and "result" not in reply:
                    text = str(reply.get("error") or reply.get("message"))
                    if "lease not found" in text:
                        raise _LeaseGone(text)
                    failures[e.label] = text
                    continue
                return reply
            if deadline - time.monotonic() <= 0:
                break
            time.sleep(min(RETRY_PAUSE, max(0.0, deadline - time.monotonic())))
        detail = "; ".join(f"{k}: {v}" for k, v in failures.items()) or "no attempt in time"
        raise Timeout(f"the etcd directory at {self.address} did not {what} within {self.timeout:g} s "
                      f"(no quorum, or every node out of reach? {detail})")

    def _get(self, name, deadline):
        reply = self._call("/kv/range", {"key": _b64(self.prefix + name)}, deadline, "look up " + repr(name))
        kvs = reply.get("kvs") or []
        return _decode_record(kvs[0]) if kvs else None

    def _grant(self, deadline, role="main"):
        reply = self._call("/lease/grant", {"TTL": str(self.ttl)}, deadline, "grant a lease", role=role)
        return int(reply["ID"])

    # -- the keeper thread's rounds ----------------------------------------------------

    def _keep_once(self):
        """One keepalive; after the lease was lost, a new lease and every
        name registered again.  Returns the seconds until the next round."""
        lease = self._lease
        deadline = time.monotonic() + max(1.0, self.ttl / 3)
        try:
            reply = self._call("/lease/keepalive", {"ID": str(lease)}, deadline, "renew the lease",
                               role="keeper")
            ttl = int((reply.get("result") or {}).get("TTL", -1))
            if ttl <= 0:
                raise _LeaseGone("lease expired")
        except _LeaseGone:
            return self._renew_lease()
        except Error as exc:
            if self._lease_ok:
                log.warning("cannot renew the lease on the etcd directory at %s: %s", self.address, exc)
            self._lease_ok = False
            return RETRY_PAUSE * 5
        if self._pending:
            return self._put_pending()
        if not self._lease_ok:
            log.warning("the etcd directory at %s answers again; lease %x kept", self.address, lease)
        self._lease_ok = True
        return self.ttl / 3

    def _renew_lease(self):
        """The lease is gone (the cluster forgot it, or it expired while out
        of reach): make a new one and register every name under it."""
        self._lease_ok = False
        try:
            lease = self._grant(time.monotonic() + self.timeout, role="keeper")
        except Error as exc:
            log.warning("cannot make a new lease on the etcd directory at %s: %s", self.address, exc)
            return RETRY_PAUSE * 5
        with self._lock:
            self._lease = lease
            self._pending = set(self._names)
        self.reconnects += 1
        return self._put_pending()

    def _put_pending(self):
        """Register the names not yet put under the current lease (after it
        was made again); a name another process took meanwhile is lost."""
        lease = self._lease
        lost = []
        done = 0
        try:
            for name in sorted(self._pending):
                with self._lock:
                    record = self._names.get(name)
                if record is not None:
                    try:
                        self._put(name, record, lease, time.monotonic() + self.timeout)
                        done += 1
                    except DirectoryError as exc:
                        with self._lock:
                            self._names.pop(name, None)
                        why = ("another process registered it while this process's lease on the etcd "
                               f"directory at {self.address} was lost")
                        self.lost[name] = why
                        lost.append((name, why))
                        log.warning("global name %r is no longer registered by this process: %s", name, exc)
                self._pending.discard(name)
        except _LeaseGone:
            return 0.0                      # gone again: the next round makes another
        except Error as exc:
            log.warning("registering names again on the etcd directory at %s: %s", self.address, exc)
            return RETRY_PAUSE * 5          # the rest next round
        finally:
            for name, why in lost:
                if self._on_lost is not None:
                    try:
                        self._on_lost(name, why)
                    except Exception:
                        log.exception("the on_lost callback failed for global name %r", name)
        self._lease_ok = True
        log.warning("lease lost on the etcd directory at %s; registered %d name(s) again under a new one",
                    self.address, done)
        return self.ttl / 3

    # -- the watcher thread --------------------------------------------------------------

    def _kick_watch(self):
        """Make the watcher reopen its stream (new names to read, or closing)."""
        conn = self._watch_conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _apply(self, name, record, revision):
        """With the watch lock held: take ``record`` of ``name`` seen at ``revision``."""
        entry = self._watched.get(name)
        if entry is not None and entry[2] >= revision:
            return
        tup = None if record is None else _as_tuple(record)
        if entry is not None and entry[1] == tup:
            entry[2] = revision
            return
        self._watch_serial += 1
        self._watched[name] = [self._watch_serial, tup, revision]
        self._watch_cond.notify_all()

    def _watch_round(self):
        """Read what is new (names asked for, the records of new watches) at
        one revision, then follow the prefix from the revision after the
        last one this stream handled (so a stream that broke loses
        nothing), until the stream breaks or is kicked."""
        with self._watch_cond:
            idle = False
            while not (self._wanted or self._subs or self._new_subs) and not self._closed:
                idle = True
                self._watch_cond.wait(1.0)
            fresh, subs = set(self._fresh), list(self._new_subs)
        if idle:
            self._watch_contact = time.monotonic()     # (the cluster's silence counts from now)
        if self._closed:
            return
        deadline = time.monotonic() + self.timeout
        reply = self._call("/kv/range", {"key": _b64(self.prefix), "range_end": _b64(_range_end(self.prefix)),
                                         "count_only": True}, deadline, "read the revision", role="watch")
        self._watch_contact = time.monotonic()
        revision = int(reply["header"]["revision"])
        cluster = reply["header"].get("cluster_id")
        if cluster != self._cluster_id:
            if self._cluster_id is not None:
                # a new cluster (replaced, its data gone): its revisions start
                # again from 1, so read every name and watch afresh
                self._forget_revisions()
                with self._watch_cond:
                    fresh, subs = set(self._fresh), list(self._new_subs)
            self._cluster_id = cluster
        for name in fresh:
            kvs = self._call("/kv/range", {"key": _b64(self.prefix + name), "revision": str(revision)},
                             deadline, "look up " + repr(name), role="watch").get("kvs") or []
            with self._watch_cond:
                self._apply(name, _decode_record(kvs[0]) if kvs else None, revision)
                self._fresh.discard(name)
        if subs:
            self._snapshot(subs, revision, deadline)
        if self._stream_revision is None:
            self._stream_revision = revision
        self._stream(self._stream_revision + 1)

    _stream_revision = None     # the last revision the stream handled (every event up to it seen)
    _cluster_id = None

    def _snapshot(self, subs, revision, deadline):
        """Give each new watch in ``subs`` the records at ``revision``; from
        then on it takes the stream's events after that revision."""
        reply = self._call("/kv/range", {"key": _b64(self.prefix), "range_end": _b64(_range_end(self.prefix)),
                                         "revision": str(revision)}, deadline, "read the names", role="watch")
        records = {}
        for kv in reply.get("kvs") or []:
            record = _decode_record(kv)
            if record is not None:
                name = _unb64(kv["key"])[len(self.prefix):]
                records[name] = dict(record, name=name)
        with self._watch_cond:
            for handle in subs:
                if handle not in self._new_subs:
                    continue        # closed meanwhile
                self._new_subs.remove(handle)
                handle._resync()
                for name in sorted(records):
                    if handle.matches(name):
                        handle._seen(name, records[name])
                handle._synced()
                if handle.error is None:    # (not ended by falling behind meanwhile)
                    self._subs[handle] = revision

    def _forget_revisions(self):
        """The revisions held mean nothing now (the cluster was replaced, or
        compacted past them): read every name and every watch's records
        again, and stream from the revision of that read."""
        with self._watch_cond:
            for entry in self._watched.values():
                entry[2] = 0
            self._fresh |= self._wanted
            self._new_subs.extend(self._subs)
            self._subs.clear()
        self._stream_revision = None

    def _dispatch(self, kv, deleted):
        """With the watch lock held: one event of the stream, to the names
        followed and to the watches that match it and have not seen it."""
        name = _unb64(kv.get("key", ""))[len(self.prefix):]
        rev = int(kv.get("mod_revision", 0))
        self._stream_revision = max(self._stream_revision or 0, rev)
        record = None if deleted else _decode_record(kv)
        if name in self._wanted:
            self._apply(name, record, rev)
        for handle, since in list(self._subs.items()):     # (one that overflows leaves it)
            if rev > since and handle.matches(name):
                if record is None:
                    handle._gone(name)
                else:
                    handle._seen(name, dict(record, name=name))

    def _watch_trouble(self, exc):
        """A watch round failed: once no node has answered for ``timeout``
        seconds, end the watches (the following of names goes on trying)."""
        silent = time.monotonic() - self._watch_contact
        if silent >= self.timeout:
            self._fail_subs(lambda h: Timeout(
                f"the watch of {h.pattern!r} ended, no answer for {silent:.1f} s: {exc}"))

    def _stream(self, start):
        e = self._endpoints[self._current]
        if self._tls:
            ctx = ssl.create_default_context(cafile=self._ca)
            if self._cert:
                ctx.load_cert_chain(self._cert, self._key)
            conn = http.client.HTTPSConnection(e.host, e.port, timeout=ATTEMPT_TIMEOUT, context=ctx)
        else:
            conn = http.client.HTTPConnection(e.host, e.port, timeout=ATTEMPT_TIMEOUT)
        self._watch_conn = conn
        try:
            if self._closed:
                return
            body = json.dumps({"create_request": {"key": _b64(self.prefix),
                                                  "range_end": _b64(_range_end(self.prefix)),
                                                  "start_revision": str(start)}})
            headers = {"Content-Type": "application/json", **self._auth_headers("watch")}
            # a node that loses its leader cancels the watch (etcd's "hasleader" metadata)
            headers["Grpc-Metadata-hasleader"] = "true"
            conn.request("POST", "/v3/watch", body=body, headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                raise _Unavailable(f"HTTP {resp.status} {resp.read(200)!r}")
            conn.sock.settimeout(WATCH_IDLE)
            with self._watch_cond:
                if self._fresh or self._new_subs:
                    return
            while not self._closed:
                line = resp.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                msg = json.loads(line)
                result = msg.get("result") or {}
                if "error" in msg:
                    raise _Unavailable(str(msg["error"]))
                if int(result.get("compact_revision") or 0):
                    # compacted past the revision to resume at: read everything again
                    self._forget_revisions()
                    return
                if result.get("canceled"):
                    raise _Unavailable(result.get("cancel_reason") or "watch canceled")
                self._watch_contact = time.monotonic()
                with self._watch_cond:
                    for ev in result.get("events") or []:
                        self._dispatch(ev.get("kv", {}), ev.get("type") == "DELETE")
                    if self._fresh or self._new_subs:
                        return      # new names or watches: read them and open the stream again
        except (OSError, http.client.HTTPException, ValueError, _Unavailable) as exc:
            if not self._closed:
                log.debug("etcd watch stream on %s ended: %s", e.label, exc)
                if not isinstance(exc, socket.timeout):
                    self._rotate()
        finally:
            self._watch_conn = None
            conn.close()

    def _rotate(self):
        self._current = (self._current + 1) % len(self._endpoints)


def _watch_loop(ref, stop):
    while not stop.is_set():
        client = ref()
        if client is None or client._closed:
            return
        try:
            client._watch_round()
        except (Error, _LeaseGone) as exc:
            log.debug("etcd watch round failed: %s", exc)
            client._rotate()
            client._watch_trouble(exc)
            stop.wait(RETRY_PAUSE)
        except Exception as exc:
            log.exception("etcd watcher for %s failed", client.address)
            client._watch_trouble(exc)
            stop.wait(RETRY_PAUSE * 5)
        del client


def _keep_alive(ref, stop, wake):
    delay = 0.0
    while True:
        wake.wait(delay)
        wake.clear()
        if stop.is_set():
            return
        client = ref()
        if client is None or client._closed:
            return
        try:
            delay = client._keep_once()
        except Exception:
            log.exception("etcd lease keeper for %s failed", client.address)
            delay = RETRY_PAUSE * 5
        del client


def _program():
    """This process's program name for the records: the script, or python."""
    arg = sys.argv[0] if sys.argv else ""
    return os.path.basename(arg) if arg and arg not in ("-", "-c") else "python"


def _range_kvs(txn_reply):
    for resp in txn_reply.get("responses") or []:
        rng = resp.get("response_range")
        if rng is not None:
            return rng.get("kvs") or []
    return []


def _decode_record(kv):
    try:
        record = json.loads(_unb64(kv.get("value", "")))
        if record.get("kind") not in _KIND_CODE or not isinstance(record.get("address"), str):
            return None
        return record
    except (ValueError, AttributeError, TypeError):
        return None


def _as_tuple(record):
    return _KIND_CODE[record["kind"]], record["address"], record.get("key") or ""


def _owner_text(kv):
    record = _decode_record(kv) or {}
    owner = record.get("owner") or {}
    return f"{owner.get('program', '?')} pid {owner.get('pid', '?')} on {owner.get('host', '?')}"


def _tls_reason(text):
    """The SSL error inside a requests/urllib3 message, in a few words."""
    at = text.rfind("SSLError(")
    if at < 0:
        return "SSL error"
    return text[at + len("SSLError("):].rstrip(")")[:200]


def _why(exc):
    """What etcd said, from an etcd3gw exception: the gRPC error text of the
    reply body when there is one, else the HTTP reason or the exception."""
    detail = getattr(exc, "detail_text", None)
    if detail:
        try:
            body = json.loads(detail)
            text = body.get("error") or body.get("message")
            if text:
                return str(text)[:300]
        except (ValueError, AttributeError):
            pass
    parts = [str(a) for a in exc.args if a]
    return (" ".join(parts) or str(detail or "") or type(exc).__name__)[:300]
