"""``zmq_server``: the name directory of the wiring API (see docs/directory.md).

It maps global names to ``(kind, address, key)`` records for the clients that
keep a TCP connection to it; a connection's records vanish when it closes.
Python over asyncio: one coroutine per connection, bounded buffers, every
partial frame on a deadline; with ``--curve-secret`` each connection runs
the handshake of :mod:`pyzmq.dirsecure` (libsodium through ``pyzmq._box``).

Run it as ``zmq_server [--port N] [-q] [--curve-secret FILE [--curve-allow
FILE] [--key-grace SECONDS]] [ADDRESS]`` or ``python -m pyzmq.server ...``.
"""

import argparse
import asyncio
import os
import signal
import math
import socket
import sys
import time

from pyzmq import dirsecure, lifeline
from pyzmq import protocol as p

READ_LIMIT = 8192  # per-connection read buffer (asyncio pauses reading at twice this)
CLOSE_TIMEOUT = 2.0  # seconds to flush a last reply before dropping a connection
KEY_GRACE = 30.0     # seconds a keyed name stays tied to its key after its owner left
MAX_RESERVED = 100_000  # names held for their last key at once (see Registry._reserve)


def _log(line):
    """Write one line to stderr; a closed stderr must not kill the server."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def format_hostport(host, port):
    """``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Connection:
    """One client connection: its peer (for logs), the names it holds and,
    on a secure server, its proven CURVE key and the channel that seals its frames."""

    def __init__(self, peer):
        self.peer = peer
        self.names = set()
        self.key = None         # Z85 public key the client proved it holds
        self.channel = None     # dirsecure.Channel once the handshake is done


class Record:
    __slots__ = ("kind", "address", "key", "owner")

    def __init__(self, kind, address, key, owner):
        self.kind = kind
        self.address = address
        self.key = key
        self.owner = owner


class Registry:
    """The name table and its ownership rules; no I/O, so it is easy to test.

    On a secure directory (connections with a proven ``key``) a name that
    was registered with a key stays tied to that key for ``key_grace``
    seconds after its owner unregistered it or went away: meanwhile only a
    registration with the same key is accepted, so an owner that restarts
    gets its name back before anyone else can take it (and binders never
    find a keyless or foreign record under it).  ``clock`` gives the time
    in seconds (monotonic)."""

    def __init__(self, max_names=p.MAX_NAMES_PER_CONNECTION, log=None, key_grace=KEY_GRACE,
                 clock=time.monotonic, max_reserved=MAX_RESERVED):
        self.max_names = max_names
        self.records = {}
        self.reserved = {}      # name -> (key, until), oldest first
        self._reserved_by_key = {}  # key -> {name: None}, oldest first: the same names
        self.key_grace = key_grace
        self.max_reserved = max_reserved
        self.clock = clock
        self.log = log or (lambda line: None)

    def register(self, conn, kind, name, address, key):
        record = self.records.get(name)
        if record is not None and record.owner is not conn:
            return p.ErrorReply(p.DUPLICATE, f"name {name!r} is already registered by another connection")
        if record is None and len(conn.names) >= self.max_names:
            return p.ErrorReply(p.LIMIT, f"this connection already holds {self.max_names} names, the limit")
        held = self._held(name)
        if held is not None and key != held[0]:
            left = held[1] - self.clock()
            self.log(f"zmq_server: refused {name!r} to {conn.peer}: held for key {held[0]} "
                     f"for another {left:.1f} s")
            return p.ErrorReply(p.AUTH, f"name {name!r} is held for the CURVE key of its last owner "
                                        f"for another {left:.0f} s; until then only that key may "
                                        "register it")
        self._unreserve(name)
        self.records[name] = Record(kind, address, key, conn)
        conn.names.add(name)
        self.log(f"zmq_server: registered {name!r} kind {kind} at {address} by {conn.peer}")
        return p.Ok()

    def lookup(self, name):
        record = self.records.get(name)
        if record is None:
            return p.ErrorReply(p.NOT_FOUND, f"no object named {name!r}")
        return p.Found(record.kind, record.address, record.key)

    def unregister(self, conn, name):
        record = self.records.get(name)
        if record is None:
            return p.ErrorReply(p.NOT_FOUND, f"no object named {name!r}")
        if record.owner is not conn:
            return p.ErrorReply(p.NOT_OWNER, f"name {name!r} is registered by another connection")
        self._remove(name, "unregistered")
        return p.Ok()

    def drop(self, conn):
        """Remove every name ``conn`` holds (its connection closed)."""
        for name in sorted(conn.names):
            self._remove(name, "connection closed")

    def _remove(self, name, why):
        record = self.records.pop(name)
        record.owner.names.discard(name)
        self.log(f"zmq_server: removed {name!r} kind {record.kind} at {record.address} "
                 f"by {record.owner.peer} ({why})")
        if record.key and record.owner.key is not None and self.key_grace > 0:
            self._reserve(name, record.key)

    def _reserve(self, name, key):
        """Hold ``name`` for ``key`` for the grace period, within bounds that
        one key cannot use to push other keys' names out: a key holds at most
        ``max_names`` names (one connection's worth; beyond, its own oldest
        go), and only when the whole table is full, which takes
        max_reserved / max_names keys, does the oldest name of any key go."""
        self._expire()
        mine = self._reserved_by_key.get(key, {})
        while mine and (len(mine) >= self.max_names or len(self.reserved) >= self.max_reserved):
            self._unreserve(next(iter(mine)))
        while len(self.reserved) >= self.max_reserved:
            self._unreserve(next(iter(self.reserved)))
        self.reserved[name] = (key, self.clock() + self.key_grace)
        self._reserved_by_key.setdefault(key, {})[name] = None

    def _unreserve(self, name):
        held = self.reserved.pop(name, None)
        if held is not None:
            mine = self._reserved_by_key[held[0]]
            del mine[name]
            if not mine:
                del self._reserved_by_key[held[0]]

    def _held(self, name):
        """(key, until) if ``name`` is still tied to its last owner's key."""
        self._expire()
        return self.reserved.get(name)

    def _expire(self):
        now = self.clock()
        while self.reserved:
            name, (key, until) = next(iter(self.reserved.items()))
            if until > now:
                break
            self._unreserve(name)


class _Close(Exception):
    """Answer ``reply`` (if any) and close the connection."""

    def __init__(self, reply=None):
        super().__init__()
        self.reply = reply


def _set_keepalive(sock):
    """Drop peers that vanish without a FIN within about 5 s."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in (("TCP_KEEPIDLE", p.KEEPALIVE_IDLE), ("TCP_KEEPINTVL", p.KEEPALIVE_INTERVAL),
                           ("TCP_KEEPCNT", p.KEEPALIVE_COUNT)):
            if hasattr(socket, opt):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # the peer may already be gone


class Server:
    """The directory service; ``await serve()`` runs it until ``stop()``."""

    def __init__(self, host="0.0.0.0", port=p.DEFAULT_PORT, quiet=False,
                 max_connections=p.MAX_CONNECTIONS, frame_timeout=p.FRAME_TIMEOUT,
                 secret_key=None, allowed_keys=None, key_grace=KEY_GRACE):
        """``secret_key`` (Z85) makes every connection secure (docs/directory.md):
        clients must know the matching public key, ``public_key`` here.
        ``allowed_keys`` (Z85 public keys) then limits which clients are served;
        None serves any client that completes the handshake.  ``key_grace``:
        seconds a name registered with a key stays tied to it after its
        owner left (secure directories only; see Registry)."""
        self._secret = None
        self._allowed = None
        self.public_key = None
        if secret_key is not None:
            self._secret = dirsecure.decode_key(secret_key, "the directory's secret key")
            self.public_key = dirsecure.encode_key(dirsecure.public_of(self._secret))
            if allowed_keys is not None:
                if isinstance(allowed_keys, (str, bytes)):
                    raise TypeError("allowed_keys must be an iterable of Z85 public keys, not one key")
                self._allowed = {dirsecure.decode_key(k, "an allowed key") for k in allowed_keys}
                if not self._allowed:
                    raise ValueError("allowed_keys is empty: no client could use this directory")
        elif allowed_keys is not None:
            raise ValueError("allowed_keys needs secret_key: only a secure directory knows its clients' keys")
        self.host = host
        self.port = port
        self.quiet = quiet
        self.max_connections = max_connections
        self.frame_timeout = frame_timeout
        self.registry = Registry(log=self._info, key_grace=key_grace)
        self.connections = set()
        self._stopping = None
        self._tasks = set()

    def _info(self, line):
        if not self.quiet:
            _log(line)

    def _listen_socket(self):
        infos = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(512)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def serve(self, ready=None):
        """Listen, announce readiness (``ready(host, port)``) and serve until stopped."""
        self._stopping = asyncio.Event()
        sock = self._listen_socket()
        server = await asyncio.start_server(self._accept, sock=sock, limit=READ_LIMIT)
        host, port = sock.getsockname()[:2]
        self.port = port
        if ready is not None:
            ready(host, port)
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT)
            await server.wait_closed()

    def stop(self):
        if self._stopping is not None:
            self._stopping.set()

    async def _accept(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        peername = writer.get_extra_info("peername")
        peer = format_hostport(*peername[:2]) if peername else "?"
        conn = Connection(peer)
        try:
            last_reply = None
            try:
                if len(self.connections) >= self.max_connections:
                    raise _Close(p.ErrorReply(p.LIMIT, f"the server already serves {self.max_connections} "
                                                       "connections, the limit"))
                self.connections.add(conn)
                _set_keepalive(writer.get_extra_info("socket"))
                await self._serve_connection(conn, reader, writer)
            except _Close as close:
                last_reply = close.reply
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                pass
            finally:
                self.connections.discard(conn)
                self.registry.drop(conn)
            await self._close(reader, writer, last_reply, conn.channel)
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _close(self, reader, writer, reply, channel=None):
        """Send ``reply`` (if any), then close so that the peer gets it.

        Closing a socket with unread input makes the kernel send a reset, which
        can destroy the reply in flight; so after a reply the write side is shut
        and input is read and thrown away (bounded in time) until the peer closes.
        """
        if reply is None or writer.is_closing():
            return
        try:
            body = p.encode_reply(reply)
            writer.write(p.encode_frame(channel.seal(body) if channel is not None else body))
            if writer.can_write_eof():
                writer.write_eof()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CLOSE_TIMEOUT
            while await asyncio.wait_for(reader.read(READ_LIMIT), max(0.0, deadline - loop.time())):
                pass
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass

    async def _serve_connection(self, conn, reader, writer):
        loop = asyncio.get_running_loop()
        greeted = False
        while True:
            # Before HELLO the whole first frame is on the clock from the connect.
            deadline = None if greeted else loop.time() + self.frame_timeout
            body = await self._read_frame(reader, deadline)
            if body is None:
                return  # clean EOF between frames
            if not greeted:
                if self._secret is not None:
                    await self._handshake(conn, body, reader, writer, deadline)
                    greeted = True
                    continue
                if body[0] == p.CURVE_HELLO:
                    raise _Close(p.ErrorReply(p.BAD_HELLO, "this directory does not use CURVE: "
                                                           "connect without a directory key"))
                if body[0] != p.HELLO:
                    raise _Close(p.ErrorReply(p.BAD_HELLO, "the first request must be HELLO"))
            elif conn.channel is not None:
                try:
                    body = conn.channel.open(body)
                except p.ProtocolError as exc:
                    # the stream can no longer be trusted: no answer, drop it
                    self._info(f"zmq_server: dropped {conn.peer}: {exc}")
                    return
            try:
                request = p.decode_request(body)
            except p.ProtocolError as exc:
                if exc.code == p.BAD_HELLO:
                    raise _Close(p.ErrorReply(p.BAD_HELLO, str(exc))) from None
                reply = p.ErrorReply(exc.code, str(exc))
            else:
                greeted = True
                reply = self._handle(conn, request)
            out = p.encode_reply(reply)
            writer.write(p.encode_frame(conn.channel.seal(out) if conn.channel is not None else out))
            await writer.drain()

    async def _handshake(self, conn, hello, reader, writer, deadline):
        """Run the secure handshake whose first frame is ``hello``; the whole
        of it is due by ``deadline`` (frame_timeout after the connect)."""
        try:
            if hello[0] != p.CURVE_HELLO:
                # (no key in the answer: it is not authenticated, so a key
                # there could be anyone's; the ready line and .pub file are)
                raise p.ProtocolError(p.BAD_HELLO, "this directory requires CURVE: give the client "
                                                   "the directory's public key (directory_key)")
            shake = dirsecure.ServerHandshake(self._secret, self._allowed)
            writer.write(p.encode_frame(shake.welcome(hello)))
            await writer.drain()
            try:
                initiate = await self._read_frame(reader, deadline)
            except _Close as close:
                self._info(f"zmq_server: refused {conn.peer}: "
                           f"{close.reply.message if close.reply else 'closed'} (in the handshake)")
                raise
            if initiate is None:
                self._info(f"zmq_server: refused {conn.peer}: it closed the connection in the handshake")
                raise _Close()
            if initiate[0] != p.INITIATE:
                raise p.ProtocolError(p.AUTH, "the second frame of a secure connection must be INITIATE")
            ready, channel, client = shake.ready(initiate)
        except dirsecure.Refused as exc:
            self._info(f"zmq_server: refused {conn.peer}: key {dirsecure.encode_key(exc.key)} is not allowed")
            raise _Close(p.ErrorReply(exc.code, str(exc))) from None
        except p.ProtocolError as exc:
            self._info(f"zmq_server: refused {conn.peer}: {exc}")
            raise _Close(p.ErrorReply(exc.code, str(exc))) from None
        conn.key = dirsecure.encode_key(client)
        conn.peer = f"{conn.peer} key {conn.key}"
        writer.write(p.encode_frame(ready))
        await writer.drain()
        conn.channel = channel

    async def _read_frame(self, reader, hello_deadline):
        """Return the next frame body, or None on EOF before a frame begins.

        Before HELLO the first frame must be complete by ``hello_deadline``.
        After it, waiting for a frame to begin is unbounded (keepalive drops
        dead peers) and a begun frame has ``frame_timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = hello_deadline
        try:
            if deadline is None:
                first = await reader.read(1)
                deadline = loop.time() + self.frame_timeout
            else:
                first = await asyncio.wait_for(reader.read(1), max(0.0, deadline - loop.time()))
            if not first:
                return None
            rest = await asyncio.wait_for(reader.readexactly(p.HEADER_SIZE - 1),
                                          max(0.0, deadline - loop.time()))
            try:
                length = p.body_length(first + rest)
            except p.ProtocolError as exc:
                raise _Close(p.ErrorReply(p.MALFORMED, str(exc))) from None
            return await asyncio.wait_for(reader.readexactly(length), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            if hello_deadline is not None:
                reply = p.ErrorReply(p.BAD_HELLO, f"no complete HELLO (or CURVE handshake) within {self.frame_timeout:g} s of connecting")
            else:
                reply = p.ErrorReply(p.MALFORMED, f"frame not completed within {self.frame_timeout:g} s")
            raise _Close(reply) from None

    def _handle(self, conn, request):
        if isinstance(request, p.Register):
            if conn.key is not None and request.key and request.key != conn.key:
                return p.ErrorReply(p.AUTH, "on a secure directory a name may only be registered with "
                                            "the connection's own key (or none)")
            return self.registry.register(conn, request.kind, request.name, request.address, request.key)
        if isinstance(request, p.Lookup):
            return self.registry.lookup(request.name)
        if isinstance(request, p.Unregister):
            return self.registry.unregister(conn, request.name)
        if isinstance(request, p.Ping):
            return p.Pong()
        return p.Ok()  # a repeated, valid HELLO


def _raise_fd_limit(needed):
    """Lift the soft open-files limit so the server can hold its connections."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
        if target < needed:
            _log(f"zmq_server: warning: the open-files limit ({target}) is too low to serve "
                 f"{p.MAX_CONNECTIONS} connections")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="zmq_server",
        description="The name directory of the wiring API: maps global names of exchanges "
                    "and queues to the addresses where their owners listen.")
    parser.add_argument("address", nargs="?", default="0.0.0.0",
                        help="interface address to listen on (default: 0.0.0.0, all IPv4 interfaces)")
    parser.add_argument("--port", type=int, default=p.DEFAULT_PORT,
                        help=f"TCP port (default: {p.DEFAULT_PORT}; 0 picks a free port)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="do not log registrations and removals")
    parser.add_argument("--curve-secret", metavar="FILE",
                        help="file holding the server's CURVE secret key (40 Z85 characters): "
                             "every connection is then authenticated and encrypted")
    parser.add_argument("--curve-allow", metavar="FILE",
                        help="file of client public keys allowed to connect, one per line "
                             "(lines starting with '#' are comments); needs --curve-secret")
    parser.add_argument("--key-grace", metavar="SECONDS", type=float, default=KEY_GRACE,
                        help="with --curve-secret: seconds a name registered with a key stays "
                             "tied to that key after its owner left, so that only the same key "
                             f"may take it back (default: {KEY_GRACE:g}; 0: none)")
    parser.add_argument(lifeline.FLAG, action="store_true",
                        help="stop when the parent process exits (its pipe on stdin closes); "
                             "how pyzmq.Directory() runs it")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.key_grace) and args.key_grace >= 0):
        parser.error(f"--key-grace must be a number of seconds >= 0, not {args.key_grace}")
    if not 0 <= args.port <= 65535:
        parser.error(f"port {args.port} is not in 0..65535")
    if args.curve_allow and not args.curve_secret:
        parser.error("--curve-allow needs --curve-secret")
    if args.exit_with_parent and lifeline.stdin_problem():
        parser.error(f"{lifeline.FLAG}: {lifeline.stdin_problem()}")
    args.secret_key = args.allowed_keys = None
    try:
        if args.curve_secret:
            args.secret_key = read_key_file(args.curve_secret, "--curve-secret")
        if args.curve_allow:
            args.allowed_keys = read_key_list(args.curve_allow)
            if not args.allowed_keys:
                raise ValueError(f"--curve-allow {args.curve_allow} lists no keys: no client could connect")
            _warn_if_writable(args.curve_allow)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if args.curve_secret and not args.curve_allow:
        _log("zmq_server: warning: --curve-secret without --curve-allow serves any client that "
             "makes itself a key: connections are encrypted, but anyone who reaches this port "
             "can register and look up names; list the clients' public keys with --curve-allow FILE")
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
    keys = []
    with open(path, encoding="ascii", errors="replace") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                dirsecure.decode_key(text, f"{path} line {number}")
                keys.append(text)
    return keys


def main(argv=None):
    """Entry point of the ``zmq_server`` console script; returns the exit status."""
    args = parse_args(argv)
    _raise_fd_limit(p.MAX_CONNECTIONS + 64)
    server = Server(args.address, args.port, quiet=args.quiet, secret_key=args.secret_key,
                    allowed_keys=args.allowed_keys, key_grace=args.key_grace)

    def ready(host, port):
        secure = f" (CURVE, public key {server.public_key})" if server.public_key else ""
        print(f"zmq_server: listening on {format_hostport(host, port)}{secure}", flush=True)

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
