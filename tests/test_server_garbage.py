"""zmq_server under hostile input, its limits, and the codec it shares with clients.

Hostile input comes through plain pyzmq DEALERs (the protocol by hand:
wrong frame counts, bad headers, bodies that break every rule) and raw
TCP sockets (bytes that are not ZMTP at all); every well-formed client
must keep being served meanwhile."""

import random
import resource
import socket
import struct
import threading
import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from pyzmq import protocol as p
from pyzmq.directory import DirectoryClient, DirectoryError

GARBAGE_REQUESTS = 10_000
WORKERS = 4
LEASE = "0123456789abcdef" * 2     # well formed, never granted


# -- a DEALER speaking the protocol by hand ---------------------------------------

class Raw:
    """A plain pyzmq DEALER connected to the directory; every op has a timeout."""

    def __init__(self, ctx, address, timeout=5.0):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(f"tcp://{address}")
        self.timeout = timeout
        self.rid = 0

    def send(self, frames):
        self.sock.send_multipart(frames)

    def send_body(self, body):
        self.rid += 1
        self.sock.send_multipart([p.encode_header(self.rid), body])
        return self.rid

    def reply(self):
        """(header frame, decoded reply) of the next message, or None if none came in time."""
        if not self.sock.poll(self.timeout * 1000):
            return None
        frames = self.sock.recv_multipart()
        assert len(frames) == 2, f"a reply is 2 frames, got {frames!r}"
        return frames[0], p.decode_reply(frames[1])

    def expect_error(self, code, rid=None):
        got = self.reply()
        assert got is not None, f"no answer; expected ERROR {p.ERROR_NAMES[code]}"
        header, reply = got
        assert isinstance(reply, p.ErrorReply), f"expected ERROR {p.ERROR_NAMES[code]}, got {reply!r}"
        assert reply.code == code, f"expected {p.ERROR_NAMES[code]}, got {reply!r}"
        if rid is not None:
            assert p.decode_header(header) == rid
        return reply

    def close(self):
        self.sock.close(linger=0)


def s16(data):
    return struct.pack(">H", len(data)) + data


def register_body(kind=b"E", name=b"n", address=b"127.0.0.1:1", key=b"", lease=LEASE.encode()):
    return bytes([p.REGISTER]) + s16(lease) + kind + s16(name) + s16(address) + s16(key)


# -- garbage generators ------------------------------------------------------------
# Each takes a Random and returns (body, expected error code), sent with a good header.

def unknown_command(rng):
    command = rng.choice([0x00, 0x0C, 0x7f, 0x80, 0x81, 0x82, 0x83, 0xff, rng.randrange(0x0C, 256)])
    return bytes([command]) + rng.randbytes(rng.randrange(0, 64)), p.UNKNOWN_COMMAND


def truncated_body(rng):
    good = rng.choice([register_body(), bytes([p.LOOKUP]) + s16(b"name"),
                       bytes([p.UNREGISTER]) + s16(LEASE.encode()) + s16(b"xy"),
                       bytes([p.LEASE]) + struct.pack(">I", 1000) + s16(b"h") + struct.pack(">I", 1) + s16(b"p")])
    return good[:rng.randrange(1, len(good))], p.MALFORMED


def trailing_bytes(rng):
    good = rng.choice([register_body(), bytes([p.LOOKUP]) + s16(b"name"), bytes([p.PING]),
                       bytes([p.KEEPALIVE]) + s16(LEASE.encode())])
    return good + rng.randbytes(rng.randrange(1, 20)), p.MALFORMED


def random_body(rng):
    command = rng.choice([p.REGISTER, p.LOOKUP, p.UNREGISTER, p.LEASE, p.KEEPALIVE, p.REVOKE,
                          p.LIST, p.INFO, p.WATCH, p.UNWATCH])
    body = bytes([command]) + rng.randbytes(rng.randrange(0, p.MAX_BODY))
    try:
        p.decode_request(body)
    except p.ProtocolError as exc:
        return body, exc.code
    return bytes([command]), p.MALFORMED  # astronomically unlikely; use a sure one


def over_limits(rng):
    choice = rng.randrange(10)
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
        body = register_body(lease=rng.choice([b"", b"x" * 32, LEASE.upper().encode(), b"0" * 33]))
    elif choice == 8:
        body = bytes([p.LOOKUP]) + struct.pack(">H", 60000) + b"short"
    else:
        # longer than a body may be, within what libzmq lets through (ZMQ_MAXMSGSIZE)
        body = bytes([p.LOOKUP]) + s16(b"z" * (p.MAX_BODY - 2 + rng.randrange(1, p.MAX_MESSAGE - p.MAX_BODY)))
    return body, p.MALFORMED


BODIES = [unknown_command, truncated_body, trailing_bytes, random_body, over_limits]


def bad_envelope(rng):
    """(frames, expected error code) with a header or frame count that is wrong."""
    choice = rng.randrange(6)
    if choice == 0:
        return [b"ZMQX" + bytes([p.VERSION]) + b"\0\0\0\1", bytes([p.PING])], p.BAD_VERSION
    if choice == 1:
        return [p.MAGIC + bytes([rng.choice([0, 1, 3, 255])]) + b"\0\0\0\1", bytes([p.PING])], p.BAD_VERSION
    if choice == 2:
        return [rng.randbytes(rng.choice([0, 1, 8, 10, 40])), bytes([p.PING])], p.MALFORMED
    if choice == 3:
        return [p.encode_header(1)], p.MALFORMED                         # no body
    if choice == 4:
        return [p.encode_header(1), bytes([p.PING]), b"extra"], p.MALFORMED
    return [p.encode_header(1), b""], p.MALFORMED                        # empty body


def tcp_junk(address, rng):
    """Bytes that are no ZMTP at all, or a greeting cut short, on a raw TCP socket."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        if rng.random() < 0.5:
            s.sendall(rng.randbytes(rng.randrange(1, 600)))
        else:
            s.sendall((b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\x00"))[:rng.randrange(1, 33)])


def garbage_worker(ctx, address, seed, count, counts, failures):
    rng = random.Random(seed)
    conn = None
    try:
        done = 0
        while done < count:
            if conn is None:
                conn = Raw(ctx, address)
            roll = rng.random()
            if roll < 0.03:
                tcp_junk(address, rng)
                counts["tcp_junk"] = counts.get("tcp_junk", 0) + 1
            elif roll < 0.25:
                frames, code = bad_envelope(rng)
                conn.send(frames)
                conn.expect_error(code)
                counts["bad_envelope"] = counts.get("bad_envelope", 0) + 1
            else:
                gen = rng.choice(BODIES)
                body, code = gen(rng)
                rid = conn.send_body(body)
                try:
                    conn.expect_error(code, rid)
                except AssertionError as exc:
                    raise AssertionError(f"{gen.__name__} {body[:40]!r}... ({len(body)} bytes): {exc}") from None
                counts[gen.__name__] = counts.get(gen.__name__, 0) + 1
            if rng.random() < 0.02:  # and the same connection still works
                rid = conn.send_body(bytes([p.PING]))
                header, reply = conn.reply()
                assert reply == p.Pong() and p.decode_header(header) == rid
            done += 1
    except Exception as exc:
        failures.append(f"worker {seed}: {type(exc).__name__}: {exc}")
    finally:
        if conn is not None:
            conn.close()


def run_garbage(address, total, seed_base):
    counts_per_worker = [{} for _ in range(WORKERS)]
    failures = []
    ctx = zmq.Context()
    try:
        threads = [threading.Thread(target=garbage_worker,
                                    args=(ctx, address, seed_base + i, total // WORKERS, counts_per_worker[i],
                                          failures))
                   for i in range(WORKERS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a garbage worker hung"
    finally:
        ctx.destroy(linger=0)
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


def test_server_survives_garbage_with_bounded_memory(directory_server):
    address = directory_server.address
    started = time.monotonic()
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

    # Still serving.
    with DirectoryClient(address, timeout=2.0) as c:
        c.register("Q", "after-the-storm", "127.0.0.1:9")
        assert c.lookup("after-the-storm") == ("Q", "127.0.0.1:9", "")


def test_an_oversized_message_drops_only_its_connection(directory_server):
    ctx = zmq.Context()
    try:
        big = Raw(ctx, directory_server.address, timeout=1.0)
        big.send([p.encode_header(1), bytes([p.LOOKUP]) + b"x" * (p.MAX_MESSAGE + 10)])
        assert big.reply() is None      # libzmq (ZMQ_MAXMSGSIZE) closed that connection unread
        with DirectoryClient(directory_server.address, timeout=2.0) as c:
            c.ping()
    finally:
        ctx.destroy(linger=0)


def test_flood_without_reading_replies_stays_bounded(directory_server):
    """A client that pipelines requests and never reads replies cannot bloat the server."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.rcvhwm = 10
        sock.setsockopt(zmq.RCVBUF, 4096)
        sock.connect(f"tcp://{directory_server.address}")
        rss_before = directory_server.rss_kib()
        ping = [p.encode_header(7), bytes([p.PING])]
        sent = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                sock.send_multipart(ping, flags=zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.001)
        time.sleep(0.5)
        rss_after = directory_server.rss_kib()
        print(f"\nflood: {sent:,} PINGs sent, no reply read; VmRSS {rss_before} -> {rss_after} KiB")
        assert rss_after - rss_before < 32 * 1024
        with DirectoryClient(directory_server.address, timeout=2.0) as c:
            c.ping()
    finally:
        ctx.destroy(linger=0)


def test_lease_name_limit(directory):
    with DirectoryClient(directory, timeout=10.0) as client:
        for i in range(p.MAX_NAMES_PER_LEASE):
            client.register("E", f"n{i}", "127.0.0.1:1")
        with pytest.raises(DirectoryError, match="10000 names") as info:
            client.register("E", "one-too-many", "127.0.0.1:1")
        assert info.value.code == p.LIMIT
        client.register("Q", "n0", "127.0.0.1:2")  # replacing an own name is still fine
        client.unregister("n1")
        client.register("E", "one-too-many", "127.0.0.1:1")  # room again


def test_many_idle_connections_do_not_lock_others_out(directory):
    """The old server stopped at 1,024 connections: 1,100 idle ones from
    127.0.0.2 locked everybody else out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1300:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    host, port = directory.rsplit(":", 1)
    idle = []
    try:
        for _ in range(1100):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.connect((host, int(port)))
            idle.append(s)
        started = time.monotonic()
        with DirectoryClient(directory, timeout=5.0) as c:
            c.register("E", "still-in", "127.0.0.1:5555")
            assert c.lookup("still-in") == ("E", "127.0.0.1:5555", "")
        elapsed = time.monotonic() - started
        print(f"\nwith 1,100 idle connections from 127.0.0.2: connect, register, lookup in {elapsed:.3f} s")
        assert elapsed < 1.0
    finally:
        for s in idle:
            s.close()


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
leases = st.text(st.sampled_from("0123456789abcdef"), min_size=32, max_size=32)
labels = st.text(st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=("Cs",)),
                 max_size=60)
u32 = st.integers(0, 2**32 - 1)
requests = st.one_of(
    st.builds(p.Lease, u32, labels, u32, labels),
    st.builds(p.Register, leases, kinds, names, addresses, keys),
    st.builds(p.Lookup, names),
    st.builds(p.Unregister, leases, names),
    st.just(p.Ping()),
    st.builds(p.KeepAlive, leases),
    st.builds(p.Revoke, leases),
    st.builds(p.List, st.text(st.sampled_from("ab*?[]"), min_size=1, max_size=20), st.one_of(st.just(""), names),
              st.integers(1, p.MAX_PAGE)),
    st.builds(p.Info, names),
    st.builds(p.Watch, leases, names, st.sampled_from([p.GLOB, p.EXACT])),
    st.builds(p.Unwatch, leases, u32),
)
entries = st.builds(p.Entry, names, kinds, addresses, keys, labels, u32, labels, st.integers(0, 2**64 - 1))
replies = st.one_of(
    st.just(p.Ok()),
    st.builds(p.Found, kinds, addresses, keys),
    st.builds(p.ErrorReply, st.integers(0, 255), st.text(max_size=200)),
    st.just(p.Pong()),
    st.builds(p.Granted, leases, u32),
    st.builds(p.Listed, st.booleans(), st.lists(entries, max_size=5).map(tuple)),
    st.builds(p.InfoReply, kinds, addresses, keys, labels, u32, labels, st.integers(0, 2**64 - 1)),
    st.builds(p.Events, st.booleans(),
              st.lists(st.builds(p.Event, st.sampled_from(p.EVENT_TYPES), entries), max_size=5).map(tuple)),
)


@given(requests)
def test_request_round_trip(request):
    assert p.decode_request(p.encode_request(request)) == request


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


@given(st.binary(min_size=0, max_size=20))
def test_headers(frame):
    try:
        rid = p.decode_header(frame)
    except p.ProtocolError as exc:
        assert exc.code in (p.MALFORMED, p.BAD_VERSION)
    else:
        assert p.encode_header(rid) == frame
    assert p.decode_header(p.encode_header(2**32 - 1)) == 2**32 - 1


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
