"""``zmq_server``: the name directory of the wiring API (see docs/directory.md).

It maps global names to ``(kind, address, key)`` records for the clients that
keep a TCP connection to it; a connection's records vanish when it closes.
Pure Python over asyncio: one coroutine per connection, bounded buffers,
every partial frame on a deadline.

Run it as ``zmq_server [--port N] [-q] [ADDRESS]`` or
``python -m pyzmq.server ...``.
"""

import argparse
import asyncio
import signal
import socket
import sys

from pyzmq import protocol as p

READ_LIMIT = 8192  # per-connection read buffer (asyncio pauses reading at twice this)
CLOSE_TIMEOUT = 2.0  # seconds to flush a last reply before dropping a connection


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
    """One client connection: its peer (for logs) and the names it holds."""

    def __init__(self, peer):
        self.peer = peer
        self.names = set()


class Record:
    __slots__ = ("kind", "address", "key", "owner")

    def __init__(self, kind, address, key, owner):
        self.kind = kind
        self.address = address
        self.key = key
        self.owner = owner


class Registry:
    """The name table and its ownership rules; no I/O, so it is easy to test."""

    def __init__(self, max_names=p.MAX_NAMES_PER_CONNECTION, log=None):
        self.max_names = max_names
        self.records = {}
        self.log = log or (lambda line: None)

    def register(self, conn, kind, name, address, key):
        record = self.records.get(name)
        if record is not None and record.owner is not conn:
            return p.ErrorReply(p.DUPLICATE, f"name {name!r} is already registered by another connection")
        if record is None and len(conn.names) >= self.max_names:
            return p.ErrorReply(p.LIMIT, f"this connection already holds {self.max_names} names, the limit")
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
                 max_connections=p.MAX_CONNECTIONS, frame_timeout=p.FRAME_TIMEOUT):
        self.host = host
        self.port = port
        self.quiet = quiet
        self.max_connections = max_connections
        self.frame_timeout = frame_timeout
        self.registry = Registry(log=self._info)
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
            await self._close(reader, writer, last_reply)
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _close(self, reader, writer, reply):
        """Send ``reply`` (if any), then close so that the peer gets it.

        Closing a socket with unread input makes the kernel send a reset, which
        can destroy the reply in flight; so after a reply the write side is shut
        and input is read and thrown away (bounded in time) until the peer closes.
        """
        if reply is None or writer.is_closing():
            return
        try:
            writer.write(p.encode_frame(p.encode_reply(reply)))
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
            if not greeted and body[0] != p.HELLO:
                raise _Close(p.ErrorReply(p.BAD_HELLO, "the first request must be HELLO"))
            try:
                request = p.decode_request(body)
            except p.ProtocolError as exc:
                if exc.code == p.BAD_HELLO:
                    raise _Close(p.ErrorReply(p.BAD_HELLO, str(exc))) from None
                reply = p.ErrorReply(exc.code, str(exc))
            else:
                greeted = True
                reply = self._handle(conn, request)
            writer.write(p.encode_frame(p.encode_reply(reply)))
            await writer.drain()

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
                reply = p.ErrorReply(p.BAD_HELLO, f"no complete HELLO within {self.frame_timeout:g} s of connecting")
            else:
                reply = p.ErrorReply(p.MALFORMED, f"frame not completed within {self.frame_timeout:g} s")
            raise _Close(reply) from None

    def _handle(self, conn, request):
        if isinstance(request, p.Register):
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
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"port {args.port} is not in 0..65535")
    return args


def main(argv=None):
    """Entry point of the ``zmq_server`` console script; returns the exit status."""
    args = parse_args(argv)
    _raise_fd_limit(p.MAX_CONNECTIONS + 64)
    server = Server(args.address, args.port, quiet=args.quiet)

    def ready(host, port):
        print(f"zmq_server: listening on {format_hostport(host, port)}", flush=True)

    async def run():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, server.stop)
            except (NotImplementedError, RuntimeError):
                pass  # not on this platform; KeyboardInterrupt still ends the loop
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
