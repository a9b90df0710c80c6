"""zmq_server under hostile input, its limits, and the codec it shares with clients."""

import random
import resource
import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyzmq import protocol as p
from pyzmq.directory import DirectoryClient, DirectoryError

GARBAGE_REQUESTS = 10_000
WORKERS = 8


# -- a raw protocol connection --------------------------------------------------

class Raw:
    """A bare TCP connection speaking (or not) the directory protocol; every op has a timeout."""

    def __init__(self, address, timeout=5.0):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)

    def send(self, data):
        self.sock.sendall(data)

    def send_body(self, body):
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None if not data else data
            data += chunk
        return data

    def reply(self):
        """The next reply, or None if the server closed the connection instead."""
        try:
            header = self._exactly(4)
            if header is None:
                return None
            assert len(header) == 4, f"connection closed inside a reply header {header!r}"
            body = self._exactly(p.body_length(header))
            assert body is not None, "connection closed inside a reply body"
            return p.decode_reply(body)
        except ConnectionResetError:
            return None

    def hello(self):
        self.send_body(p.encode_request(p.Hello()))
        assert self.reply() == p.Ok()
        return self

    def expect_error(self, code):
        reply = self.reply()
        assert isinstance(reply, p.ErrorReply), f"expected ERROR {p.ERROR_NAMES[code]}, got {reply!r}"
        assert reply.code == code, f"expected {p.ERROR_NAMES[code]}, got {reply!r}"
        return reply

    def expect_closed(self):
        reply = self.reply()
        assert reply is None, f"expected the server to close, got {reply!r}"

    def close(self):
        self.sock.close()


def s16(data):
    return struct.pack(">H", len(data)) + data


def register_body(kind=b"E", name=b"n", address=b"127.0.0.1:1", key=b""):
    return bytes([p.REGISTER]) + kind + s16(name) + s16(address) + s16(key)


# -- garbage generators ------------------------------------------------------------
# Each takes a Random and returns (body, expected error code); the connection stays open.

def unknown_command(rng):
    command = rng.choice([0x00, 0x06, 0x7f, 0x80, 0x81, 0x82, 0x83, 0xff, rng.randrange(6, 256)])
    return bytes([command]) + rng.randbytes(rng.randrange(0, 64)), p.UNKNOWN_COMMAND


def truncated_body(rng):
    good = rng.choice([register_body(), bytes([p.LOOKUP]) + s16(b"name"), bytes([p.UNREGISTER]) + s16(b"xy")])
    return good[:rng.randrange(1, len(good))], p.MALFORMED


def trailing_bytes(rng):
    good = rng.choice([register_body(), bytes([p.LOOKUP]) + s16(b"name"), bytes([p.PING])])
    return good + rng.randbytes(rng.randrange(1, 20)), p.MALFORMED


def random_body(rng):
    command = rng.choice([p.REGISTER, p.LOOKUP, p.UNREGISTER])
    body = bytes([command]) + rng.randbytes(rng.randrange(0, p.MAX_BODY))
    try:
        p.decode_request(body)
    except p.ProtocolError as exc:
        return body, exc.code
    return bytes([command]), p.MALFORMED  # astronomically unlikely; use a sure one


def over_limits(rng):
    choice = rng.randrange(9)
    if choice == 0:
        body = register_body(name=b"x" * rng.randrange(256, 2000))
    elif choice == 1:
        body = register_body(address=rng.choice([b"", b"nohost", b"*:5", b"0.0.0.0:5", b"h:0", b"h:65536",
                                                 b"tcp://h:5", b"h:" + b"9" * 300, b"a b:5"]))
    elif choice == 2:
        body = register_body(key=rng.choice([b"short", b"k" * 41, b"\x01" * 40, b"~" * 40]))
    elif choice == 3:
        body = register_body(kind=rng.choice([b"X", b"e", b"\x00", b"q"]))
    elif choice == 4:
        body = register_body(name=rng.choice([b"", b"tab\tname", b"nl\n", b"del\x7f"]))
    elif choice == 5:
        body = register_body(name=b"\xff\xfe bad utf-8")
    elif choice == 6:
        body = bytes([p.LOOKUP]) + s16(b"y" * rng.randrange(256, 4000))
    elif choice == 7:
        body = bytes([p.UNREGISTER]) + s16(b"")
    else:
        body = bytes([p.LOOKUP]) + struct.pack(">H", 60000) + b"short"
    return body, p.MALFORMED


KEEP_OPEN = [unknown_command, truncated_body, trailing_bytes, random_body, over_limits]


# Each takes (address, Random), misbehaves on a fresh connection, and checks the outcome.

def random_junk(address, rng):
    conn = Raw(address)
    try:
        if rng.random() < 0.5:
            conn.hello()
        # A first byte >= 1 makes the length prefix at least 16 MiB: never a valid frame.
        conn.send(bytes([rng.randrange(1, 256)]) + rng.randbytes(rng.randrange(3, 300)))
        conn.expect_error(p.MALFORMED)
        conn.expect_closed()
    finally:
        conn.close()


def bad_length(address, rng):
    conn = Raw(address)
    try:
        if rng.random() < 0.5:
            conn.hello()
        length = rng.choice([0, p.MAX_BODY + 1, 65536, 2**31, 2**32 - 1, rng.randrange(p.MAX_BODY + 1, 2**32)])
        conn.send(struct.pack(">I", length) + rng.randbytes(rng.randrange(0, 64)))
        conn.expect_error(p.MALFORMED)
        conn.expect_closed()
    finally:
        conn.close()


def bad_hello(address, rng):
    conn = Raw(address)
    try:
        body = rng.choice([
            bytes([p.HELLO]) + b"ZMQX" + b"\x01",
            bytes([p.HELLO]) + p.MAGIC + b"\x02",
            bytes([p.HELLO]) + p.MAGIC + b"\x00",
            bytes([p.HELLO]) + p.MAGIC,
            bytes([p.HELLO]) + p.MAGIC + b"\x01\x00",
            bytes([p.HELLO]),
            register_body(),                    # no HELLO first
            bytes([p.PING]),
            bytes([rng.randrange(0, 256)]) + rng.randbytes(rng.randrange(0, 50)),
        ])
        if body[:1] == bytes([p.HELLO]) and body[1:] == p.MAGIC + b"\x01":
            body = bytes([p.PING])  # the random choice happened to be a good HELLO
        conn.send_body(body)
        conn.expect_error(p.BAD_HELLO)
        conn.expect_closed()
    finally:
        conn.close()


def truncated_then_close(address, rng):
    conn = Raw(address)
    try:
        conn.hello()
        body = register_body(name=b"never-registered")
        frame = struct.pack(">I", len(body)) + body
        conn.send(frame[:rng.randrange(1, len(frame))])
        conn.sock.shutdown(socket.SHUT_WR)
        conn.expect_closed()  # EOF inside a frame: dropped without a reply
    finally:
        conn.close()


CLOSING = [random_junk, bad_length, bad_hello, truncated_then_close]


def garbage_worker(address, seed, count, counts, failures):
    rng = random.Random(seed)
    conn = None
    try:
        done = 0
        while done < count:
            if rng.random() < 0.3:
                kind = rng.choice(CLOSING)
                kind(address, rng)
                counts[kind.__name__] = counts.get(kind.__name__, 0) + 1
            else:
                if conn is None:
                    conn = Raw(address).hello()
                gen = rng.choice(KEEP_OPEN)
                body, code = gen(rng)
                conn.send_body(body)
                conn.expect_error(code)
                counts[gen.__name__] = counts.get(gen.__name__, 0) + 1
                if rng.random() < 0.02:  # and the same connection still works
                    conn.send_body(bytes([p.PING]))
                    assert conn.reply() == p.Pong()
            done += 1
    except Exception as exc:
        failures.append(f"worker {seed}: {type(exc).__name__}: {exc}")
    finally:
        if conn is not None:
            conn.close()


def run_garbage(address, total, seed_base):
    counts_per_worker = [{} for _ in range(WORKERS)]
    failures = []
    threads = [threading.Thread(target=garbage_worker,
                                args=(address, seed_base + i, total // WORKERS, counts_per_worker[i], failures))
               for i in range(WORKERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60.0
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a garbage worker hung"
    assert not failures, failures[:5]
    counts = {}
    for c in counts_per_worker:
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
    assert sum(counts.values()) == total
    return counts


class GoodClient(threading.Thread):
    """Does register / lookup / unregister rounds until told to stop; records any failure."""

    def __init__(self, address):
        super().__init__(daemon=True)
        self.address = address
        self.rounds = 0
        self.failures = []
        self.halt = threading.Event()

    def run(self):
        try:
            with DirectoryClient(self.address, timeout=5.0) as client:
                while not self.halt.is_set():
                    name = f"good-{self.rounds % 50}"
                    client.register("E", name, f"127.0.0.1:{1000 + self.rounds % 50}")
                    assert client.lookup(name) == ("E", f"127.0.0.1:{1000 + self.rounds % 50}", "")
                    if self.rounds % 3 == 0:
                        client.unregister(name)
                    self.rounds += 1
        except Exception as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")


def start_stallers(address):
    """Connections that begin a frame (or never say HELLO) and then go quiet."""
    stallers = []
    for i in range(20):
        conn = Raw(address, timeout=15.0)
        if i % 4 == 0:
            pass                                     # silent: no HELLO at all
        elif i % 4 == 1:
            conn.send(b"\x00\x00")                   # half a header, no HELLO
        else:
            conn.hello()
            body = register_body(name=b"stalled")
            frame = struct.pack(">I", len(body)) + body
            conn.send(frame[:2] if i % 4 == 2 else frame[:-3])  # half a header / most of a body
        stallers.append((i % 4, conn))
    return stallers


def test_server_survives_garbage_with_bounded_memory(directory_server):
    address = directory_server.address
    started = time.monotonic()
    stallers = start_stallers(address)
    good = GoodClient(address)
    good.start()
    time.sleep(0.2)
    rss_start = directory_server.rss_kib()

    counts = run_garbage(address, GARBAGE_REQUESTS // 2, seed_base=100)
    rss_half = directory_server.rss_kib()
    counts2 = run_garbage(address, GARBAGE_REQUESTS // 2, seed_base=200)
    for k, v in counts2.items():
        counts[k] = counts.get(k, 0) + v
    rss_end = directory_server.rss_kib()

    good.halt.set()
    good.join(10)
    garbage_time = time.monotonic() - started
    print(f"\n{sum(counts.values())} malformed requests in {garbage_time:.1f} s: {dict(sorted(counts.items()))}")
    print(f"good client: {good.rounds} register/lookup rounds, failures: {good.failures}")
    print(f"server VmRSS: {rss_start} KiB at start, {rss_half} KiB after 5,000, {rss_end} KiB after 10,000")
    assert sum(counts.values()) == GARBAGE_REQUESTS
    assert not good.failures
    assert good.rounds >= 50
    assert directory_server.running
    assert rss_end < 100 * 1024
    assert rss_end - rss_half < 4 * 1024, "server memory keeps growing under garbage"

    # Stalled connections are dropped once their 10 s are up, with an ERROR.
    wait = started + p.FRAME_TIMEOUT + 1.0 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    for kind, conn in stallers:
        expected = p.BAD_HELLO if kind in (0, 1) else p.MALFORMED
        reply = conn.expect_error(expected)
        assert "10 s" in reply.message
        conn.expect_closed()
        conn.close()

    # Still serving.
    with DirectoryClient(address, timeout=2.0) as c:
        c.register("Q", "after-the-storm", "127.0.0.1:9")
        assert c.lookup("after-the-storm") == ("Q", "127.0.0.1:9", "")
    print(f"server VmRSS at the end: {directory_server.rss_kib()} KiB")


def test_flood_without_reading_replies_stays_bounded(directory_server):
    """A client that pipelines requests and never reads replies cannot bloat the server."""
    conn = Raw(directory_server.address, timeout=0.5).hello()
    rss_before = directory_server.rss_kib()
    ping = struct.pack(">I", 1) + bytes([p.PING])
    chunk = ping * 20_000
    sent = 0
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            conn.sock.sendall(chunk)
            sent += len(chunk)
    except (socket.timeout, BlockingIOError):
        pass  # the server stopped reading: that is the point
    rss_after = directory_server.rss_kib()
    print(f"\nflood: {sent / 1e6:.1f} MB sent before the server pushed back; "
          f"VmRSS {rss_before} -> {rss_after} KiB")
    assert sent < 200e6, "the server never pushed back"
    assert rss_after - rss_before < 16 * 1024
    conn.close()
    with DirectoryClient(directory_server.address, timeout=2.0) as c:
        c.ping()


def test_connection_name_limit(directory):
    with DirectoryClient(directory, timeout=5.0) as client:
        for i in range(p.MAX_NAMES_PER_CONNECTION):
            client.register("E", f"n{i}", "127.0.0.1:1")
        with pytest.raises(DirectoryError, match="10000 names") as info:
            client.register("E", "one-too-many", "127.0.0.1:1")
        assert info.value.code == p.LIMIT
        client.register("Q", "n0", "127.0.0.1:2")  # replacing an own name is still fine
        client.unregister("n1")
        client.register("E", "one-too-many", "127.0.0.1:1")  # room again


def test_connection_limit(directory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = p.MAX_CONNECTIONS + 100
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"open-files limit {hard} is too low to open {needed} connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    conns = []
    try:
        for _ in range(p.MAX_CONNECTIONS):
            conns.append(Raw(directory).hello())
        extra = Raw(directory)
        reply = extra.expect_error(p.LIMIT)
        assert "1024" in reply.message
        extra.expect_closed()
        extra.close()
        conns.pop().close()
        # A slot is free again once the server has seen that close.
        deadline = time.monotonic() + 5.0
        while True:
            late = Raw(directory)
            late.send_body(p.encode_request(p.Hello()))
            reply = late.reply()
            late.close()
            if reply == p.Ok() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert reply == p.Ok()
    finally:
        for c in conns:
            c.close()


# -- the codec ---------------------------------------------------------------------

names = st.text(st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=("Cs",)), min_size=1, max_size=60)
hosts = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.-]{0,30}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
).filter(lambda h: h not in ("0.0.0.0", "[::]"))
addresses = st.builds(lambda h, port: f"{h}:{port}", hosts, st.integers(1, 65535))
keys = st.one_of(st.just(""), st.text(st.sampled_from(p.Z85_ALPHABET), min_size=40, max_size=40))
kinds = st.sampled_from(p.KINDS)
requests = st.one_of(
    st.just(p.Hello()),
    st.builds(p.Register, kinds, names, addresses, keys),
    st.builds(p.Lookup, names),
    st.builds(p.Unregister, names),
    st.just(p.Ping()),
)
replies = st.one_of(
    st.just(p.Ok()),
    st.builds(p.Found, kinds, addresses, keys),
    st.builds(p.ErrorReply, st.integers(0, 255), st.text(max_size=200)),
    st.just(p.Pong()),
)


@given(requests)
def test_request_round_trip(request):
    frame = p.encode_frame(p.encode_request(request))
    assert p.body_length(frame[:4]) == len(frame) - 4
    assert p.decode_request(frame[4:]) == request


@given(replies)
def test_reply_round_trip(reply):
    assert p.decode_reply(p.encode_reply(reply)) == reply


@settings(max_examples=500)
@given(st.binary(min_size=0, max_size=300))
def test_decoding_random_bytes_only_raises_protocol_errors(data):
    for decode in (p.decode_request, p.decode_reply):
        try:
            message = decode(data)
        except p.ProtocolError as exc:
            assert isinstance(exc, ValueError) and exc.code in p.ERROR_NAMES and str(exc)
        else:
            encode = p.encode_request if decode is p.decode_request else p.encode_reply
            assert encode(message) == data  # what parses is canonical


@given(st.integers(0, 2**32 - 1))
def test_body_length(length):
    header = struct.pack(">I", length)
    if 1 <= length <= p.MAX_BODY:
        assert p.body_length(header) == length
    else:
        with pytest.raises(p.ProtocolError) as info:
            p.body_length(header)
        assert info.value.code == p.MALFORMED


def test_error_text_is_cut_to_fit():
    body = p.encode_reply(p.ErrorReply(p.MALFORMED, "é" * 5000))
    assert len(body) <= p.MAX_BODY
    reply = p.decode_reply(body)
    assert reply.code == p.MALFORMED and set(reply.message) == {"é"}


@pytest.mark.parametrize("value, message", [
    ("", "empty"),
    ("x" * 256, "256 bytes"),
    ("é" * 128, "256 bytes"),
    ("a\x00b", "control character"),
    ("tab\there", "control character"),
    ("del\x7f", "control character"),
    ("\ud800", "UTF-8"),
])
def test_validate_name_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        p.validate_name(value)


def test_validate_name_accepts():
    for name in ("E", "x" * 255, "é" * 127, "orders.eu-west/1", "日本"):
        assert p.validate_name(name) == name
    with pytest.raises(TypeError):
        p.validate_name(b"bytes")


@pytest.mark.parametrize("value, message", [
    ("", "empty"),
    ("host", "no port"),
    (":5555", "no host"),
    ("*:5555", "wildcard"),
    ("0.0.0.0:5555", "wildcard"),
    ("[::]:5555", "wildcard"),
    ("tcp://127.0.0.1:5555", "tcp://"),
    ("::1:5555", "brackets"),
    ("[zz::1]:5555", "IPv6"),
    ("host name:5555", "letters, digits"),
    ("host:0", "1 to 65535"),
    ("host:65536", "1 to 65535"),
    ("host:+80", "1 to 65535"),
    ("host:８０", "1 to 65535"),
    ("h" * 251 + ":5555", "limit is 255"),
])
def test_validate_address_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        p.validate_address(value)


def test_validate_address_accepts():
    for address in ("127.0.0.1:5555", "localhost:1", "my-host.example.org:65535", "[::1]:80",
                    "[fe80::1%eth0]:5555", "h_1:9"):
        assert p.validate_address(address) == address
    with pytest.raises(TypeError):
        p.validate_address(("127.0.0.1", 5555))


def test_validate_key_and_kind():
    assert p.validate_key("") == ""
    assert p.validate_key("0" * 40) == "0" * 40
    with pytest.raises(ValueError, match="40"):
        p.validate_key("0" * 39)
    with pytest.raises(ValueError, match="Z85"):
        p.validate_key("~" * 40)
    assert p.validate_kind("E") == "E" and p.validate_kind("Q") == "Q"
    with pytest.raises(ValueError, match="'E'"):
        p.validate_kind("exchange")
