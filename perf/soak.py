#!/usr/bin/env python3
"""Soak: the reliability promises at scale, with figures.

    .venv/bin/python perf/soak.py                       # 1,000,000 messages per case
    .venv/bin/python perf/soak.py --count 200000 --outage-count 200000
    .venv/bin/python perf/soak.py --kinds local to_remote_queue --no-outage

Every case runs real processes against a real zmq_server on 127.0.0.1:

* one stream per binding kind, each message carrying its sequence number,
  the consumer slower than the producer (it sleeps ``--pause`` seconds every
  ``--every`` messages) and stalling once half-way until the producer's
  ``send(timeout=0.05)`` has raised ``pyzmq.Timeout``:

  - ``local``: exchange and queue of one instance, one process and thread
    (the producer cannot block for ever on itself, so it sends with
    ``block=False`` and consumes a batch whenever the queue is full);
  - ``to_remote_queue``: a local exchange in one process bound to a global
    queue owned by another;
  - ``from_remote_exchange``: a global exchange owned by one process bound
    to a local queue of another.

  Figures: messages/s, how often the producer found the queue full, how
  many messages were in flight when it first timed out, and the producer's
  resident memory (VmRSS sampled every 10,000 messages, and VmHWM, the
  kernel's peak).

* ``outage``: the directory is SIGKILLed a quarter of the way into a
  ``to_remote_queue`` stream; the stream must complete while it is down.
  Then it restarts on the same port, the two instances must register their
  names again by themselves (timed from a fresh DirectoryClient), and new
  binds must work.

``--stall SECONDS`` makes the consumer of the two cross-process kinds stop
for that long a tenth of the way in instead (a stall longer than 3 s is what
lost messages when the sockets used ZMTP heartbeats; see docs/reliability.md).

Exit status 0 when every case kept its promise, 1 otherwise.  The test
suite (tests/test_reliability.py) runs the same cases with smaller counts.
"""

from __future__ import annotations

import argparse
import os
import queue
import struct
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyzmq  # noqa: E402

KINDS = ("local", "to_remote_queue", "from_remote_exchange")
SEQ = struct.Struct(">Q")          # every message starts with its sequence number

# The code a role process runs: this module, role(argv).
ROLE = (f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        "import soak; soak.role(sys.argv[1:])")


# ---------------------------------------------------------------- helpers

def status_kib(field="VmRSS"):
    """A memory figure of this process from /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def kv(**fields):
    """Command-line arguments key=value for a role."""
    return [f"{k}={v}" for k, v in fields.items()]


def parse(text):
    """'a=1 b=x' -> {'a': 1, 'b': 'x'} (ints and floats converted)."""
    out = {}
    for item in text.split():
        key, _, value = item.partition("=")
        for conv in (int, float):
            try:
                value = conv(value)
                break
            except ValueError:
                pass
        out[key] = None if value == "None" else value
    return out


def say(*words):
    print(*words, flush=True)


def fail(*words):
    """Say why on stdout and stderr (a harness shows stderr), exit 1."""
    print(*words, flush=True)
    print(*words, file=sys.stderr, flush=True)
    sys.exit(1)


# ------------------------------------------------------------------ roles
# Each runs in a process of its own (tests/peers.py Peer) and talks by lines.

def role(argv):
    name, args = argv[0], parse(" ".join(argv[1:]))
    {"local": _role_local, "producer": _role_producer,
     "consumer": _role_consumer}[name](args)


def _role_local(a):
    """Exchange and queue in one instance, one thread: fill, take a batch
    slowly, fill again.  Checks order itself."""
    n, size, hwm, pause, every = a["n"], a["size"], a["hwm"], a["pause"], a["every"]
    zmq = pyzmq.ZMQ(hwm=hwm)
    eid = zmq.create_exchange("E")
    zmq.create_queue("Q")
    zmq.bind("E", "Q")
    pad = bytes(size - SEQ.size)
    pack, unpack = SEQ.pack, SEQ.unpack_from
    received = blocked = max_in_flight = 0
    timeout_secs = None
    rss_start = peak = status_kib()
    rss_warm = None
    t0 = time.perf_counter()

    def take(count):
        nonlocal received
        for _ in range(count):
            m = zmq.receive(timeout=5)
            if len(m) != size or unpack(m)[0] != received:
                fail("OUT OF ORDER: expected", received, "got", unpack(m)[0], "len", len(m))
            received += 1

    for i in range(n):
        m = pack(i) + pad
        while not zmq.send(eid, m, block=False):
            blocked += 1
            max_in_flight = max(max_in_flight, i - received)
            if timeout_secs is None and i >= n // 2:
                # the queue is full and nobody else will take from it
                t = time.perf_counter()
                try:
                    zmq.send(eid, m, timeout=0.05)
                except pyzmq.Timeout:
                    timeout_secs = time.perf_counter() - t
                else:
                    fail("NO TIMEOUT: a send to a full queue went through")
            take(min(every, i - received))
            time.sleep(pause)
        if i % 10_000 == 0:
            r = status_kib()
            peak = max(peak, r)
            if rss_warm is None and i >= n // 10:
                rss_warm = r
    take(n - received)
    secs = time.perf_counter() - t0
    say("RESULT", *kv(received=received, blocked=blocked, max_in_flight=max_in_flight,
                      timeout_secs=f"{timeout_secs:.3f}", rss_start_kib=rss_start,
                      rss_warm_kib=rss_warm or peak, rss_peak_kib=max(peak, status_kib()),
                      vmhwm_kib=status_kib("VmHWM"), secs=f"{secs:.3f}"))
    zmq.close()


def _stdin_lines():
    """A queue of stdin lines, read by a daemon thread (None at EOF), and an
    event set by the line REPORT (which is not queued)."""
    lines = queue.Queue()
    report = threading.Event()

    def read():
        for line in sys.stdin:
            if line.strip() == "REPORT":
                report.set()
            else:
                lines.put(line.split())
        lines.put(None)
    threading.Thread(target=read, daemon=True).start()
    return lines, report


def _role_producer(a):
    """Sends n numbered messages; on a full queue counts it and retries with
    send(timeout=0.05) until it goes (a Timeout means: not sent).  After the
    line REPORT on stdin (the consumer has stalled) it says STALL-TIMEOUT i
    at its next Timeout.  Then serves its global exchange (if `own`) and
    obeys SEND k / BYE on stdin."""
    n, size, hwm, kind = a["n"], a["size"], a["hwm"], a["kind"]
    zmq = pyzmq.ZMQ(a["directory"], hwm=hwm)
    own = None
    if a.get("own"):
        own = zmq.create_exchange(a["own"], pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    if kind == "to_remote_queue":
        eid = zmq.create_exchange("E")
        zmq.bind("E", "QG")
        say("READY")
    else:
        eid = zmq.create_exchange("EG", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        zmq.create_queue("CTL", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        say("READY")
        zmq.receive(timeout=30)             # the consumer has bound: go
    commands, report = _stdin_lines()
    pad = bytes(size - SEQ.size)
    pack = SEQ.pack
    blocked = timeouts = 0
    stall_timeout = None
    rss_start = peak = status_kib()
    rss_warm = None
    t0 = time.perf_counter()
    for i in range(n):
        m = pack(i) + pad
        if not zmq.send(eid, m, block=False):
            blocked += 1
            while True:
                try:
                    zmq.send(eid, m, timeout=0.05)
                    break
                except pyzmq.Timeout:
                    timeouts += 1
                    if stall_timeout is None and report.is_set():
                        stall_timeout = i
                        say("STALL-TIMEOUT", i)
        if i % 10_000 == 0:
            r = status_kib()
            peak = max(peak, r)
            if rss_warm is None and i >= n // 10:
                rss_warm = r
    secs = time.perf_counter() - t0
    say("PRODUCED", *kv(sent=n, blocked=blocked, timeouts=timeouts,
                        stall_timeout=stall_timeout, rss_start_kib=rss_start,
                        rss_warm_kib=rss_warm or peak, rss_peak_kib=max(peak, status_kib()),
                        vmhwm_kib=status_kib("VmHWM"), secs=f"{secs:.3f}"))
    while True:
        try:
            command = commands.get_nowait()
        except queue.Empty:
            zmq.serve(0.05)                 # let binders of `own` in
            continue
        if not command or command[0] == "BYE":
            break
        if command[0] == "SEND":
            for k in range(int(command[1])):
                zmq.send(own, b"own %d" % k, timeout=10)
            say("SENT", command[1])
    zmq.close()


def _role_consumer(a):
    """Receives n numbered messages, checking count, order and size; sleeps
    `pause` every `every` messages; at `stall_at` says STALLED and waits
    for a line on stdin; at `mark` says MARK; then receives `extra` more
    messages and prints each as EXTRA."""
    n, size, hwm, kind = a["n"], a["size"], a["hwm"], a["kind"]
    pause, every = a["pause"], a["every"]
    stall_at, mark, extra = a.get("stall_at", 0), a.get("mark", 0), a.get("extra", 0)
    recv_timeout = a.get("recv_timeout", 30)
    zmq = pyzmq.ZMQ(a["directory"], hwm=hwm)
    if kind == "to_remote_queue":
        zmq.create_queue("QG", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        say("READY")
    else:
        zmq.create_queue("Q")
        zmq.bind("EG", "Q")
        go = zmq.create_exchange("GO")
        zmq.bind("GO", "CTL")
        say("READY")
        zmq.send(go, b"go")
    unpack = SEQ.unpack_from
    expected = 0
    t0 = None
    while expected < n:
        try:
            m = zmq.receive(timeout=recv_timeout)
        except pyzmq.Timeout:
            fail(f"LOST: nothing for {recv_timeout} s after message {expected - 1}")
        if t0 is None:
            t0 = time.perf_counter()
        if len(m) != size or unpack(m)[0] != expected:
            fail("OUT OF ORDER: expected", expected, "got", unpack(m)[0], "len", len(m))
        expected += 1
        if expected % every == 0:
            time.sleep(pause)
        if expected == stall_at:
            say("STALLED", expected)
            sys.stdin.readline()
        if expected == mark:
            say("MARK", expected)
    secs = time.perf_counter() - t0
    say("CONSUMED", *kv(received=expected, secs=f"{secs:.3f}", vmhwm_kib=status_kib("VmHWM")))
    for _ in range(extra):
        say("EXTRA", zmq.receive(timeout=30).decode())
    zmq.close()


# ---------------------------------------------------------------- harness

def _peer(*args):
    from pyzmq.testing import PeerProcess
    return PeerProcess(ROLE, *args)


def _finish(peer, name, timeout=15.0):
    status = peer.wait(timeout)
    if status != 0:
        raise AssertionError(f"{name} exited with status {status}; stderr: {peer.err()}")


def run_local(n, size=512, hwm=1000, pause=0.005, every=1000):
    """The local -> local case in a process of its own; returns its figures."""
    with _peer("local", *kv(n=n, size=size, hwm=hwm, pause=pause, every=every)) as p:
        result = parse(p.expect("RESULT", timeout=max(60, n / 10_000)))
        _finish(p, "the local process")
    return result


def run_remote(directory, kind, n, size=512, hwm=1000, pause=0.005, every=1000,
               stall="until-timeout", recv_timeout=30):
    """One stream across two processes; returns (producer, consumer) figures.

    stall: "until-timeout" (the consumer stops half-way until the producer's
    send has timed out, at most 2.5 s),
    a number of seconds (it stops that long a tenth of the way in), or None.
    """
    limit = max(60, n / 10_000)
    if stall == "until-timeout":
        stall_at = n // 2
    elif stall:
        stall_at = max(1, n // 10)
    else:
        stall_at = 0
    common = dict(directory=directory, kind=kind, n=n, size=size, hwm=hwm)
    consumer_args = kv(**common, pause=pause, every=every, stall_at=stall_at,
                       recv_timeout=recv_timeout)
    if kind == "to_remote_queue":
        consumer = _peer("consumer", *consumer_args)
        consumer.expect("READY")
        producer = _peer("producer", *kv(**common))
    else:
        producer = _peer("producer", *kv(**common))
        producer.expect("READY")
        consumer = _peer("consumer", *consumer_args)
    with producer, consumer:
        stall_timeout = None
        if stall_at:
            stalled_at = int(consumer.expect("STALLED", timeout=limit))
            if stall == "until-timeout":
                producer.tell("REPORT")     # timeouts from now on are the stall's
                try:
                    stall_timeout = int(producer.expect("STALL-TIMEOUT", timeout=2.5))
                except AssertionError:
                    pass        # reported by the caller: stall_timeout is None
            else:
                time.sleep(stall)
            consumer.tell("GO")
        consumed = parse(consumer.expect("CONSUMED", timeout=limit))
        produced = parse(producer.expect("PRODUCED", timeout=limit))
        producer.tell("BYE")
        _finish(consumer, "the consumer")
        _finish(producer, "the producer")
    if stall_timeout is not None:
        produced["in_flight_at_timeout"] = stall_timeout - stalled_at
    return produced, consumed


def run_outage(server, n, size=512, hwm=1000, pause=0.005, every=1000, wait=10.0):
    """Kill the directory a quarter into a to_remote_queue stream; restart it
    on the same port; returns figures (raises AssertionError on a broken
    promise)."""
    from pyzmq.directory import DirectoryClient, DirectoryError
    directory, port = server.address, server.port
    limit = max(60, n / 10_000)
    common = dict(directory=directory, kind="to_remote_queue", n=n, size=size, hwm=hwm)
    consumer = _peer("consumer", *kv(**common, pause=pause, every=every,
                                     mark=max(1, n // 4), extra=1))
    consumer.expect("READY")
    producer = _peer("producer", *kv(**common, own="PX"))
    figures = {}
    with producer, consumer:
        producer.expect("READY")
        consumer.expect("MARK", timeout=limit)
        server.kill()
        killed = time.monotonic()
        consumed = parse(consumer.expect("CONSUMED", timeout=limit))
        figures["stream_done_after_kill_s"] = round(time.monotonic() - killed, 3)
        if server.running:
            raise AssertionError("the directory came back by itself?")
        produced = parse(producer.expect("PRODUCED", timeout=limit))
        server.start(port=port)
        restarted = time.monotonic()
        figures["directory_down_s"] = round(restarted - killed, 3)
        missing = {"QG", "PX"}
        with DirectoryClient(directory, timeout=2.0) as fresh:
            while missing and time.monotonic() - restarted < wait:
                for name in list(missing):
                    try:
                        fresh.lookup(name)
                        missing.discard(name)
                    except DirectoryError:
                        pass
                time.sleep(0.02)
        if missing:
            raise AssertionError(f"not registered again within {wait} s: {sorted(missing)}")
        figures["reregistered_after_s"] = round(time.monotonic() - restarted, 3)
        # new binds, both ways
        with pyzmq.ZMQ(directory, timeout=5.0) as zmq:
            e = zmq.create_exchange("after-outage")
            zmq.bind("after-outage", "QG")
            zmq.send(e, b"after the outage", timeout=5)
            if consumer.expect("EXTRA") != "after the outage":
                raise AssertionError("the new binding to QG delivered something else")
            zmq.create_queue("Q2")
            zmq.bind("PX", "Q2")
            producer.tell("SEND 10")
            got = [zmq.receive(timeout=5) for _ in range(10)]
            if got != [b"own %d" % k for k in range(10)]:
                raise AssertionError(f"the new binding from PX delivered {got}")
        producer.tell("BYE")
        _finish(consumer, "the consumer")
        _finish(producer, "the producer")
    figures.update(received=consumed["received"], consumer_secs=consumed["secs"],
                   producer_vmhwm_kib=produced["vmhwm_kib"])
    return figures


# ------------------------------------------------------------------- main

def _mib(kib):
    return f"{kib / 1024:.1f} MiB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="messages per binding kind")
    ap.add_argument("--outage-count", type=int, default=1_000_000,
                    help="messages in the directory-outage stream")
    ap.add_argument("--size", type=int, default=512, help="message size in bytes (>= 8)")
    ap.add_argument("--hwm", type=int, default=1000, help="high-water mark of the instances")
    ap.add_argument("--pause", type=float, default=0.005,
                    help="seconds the consumer sleeps every --every messages")
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--kinds", nargs="*", choices=KINDS, default=list(KINDS))
    ap.add_argument("--no-outage", action="store_true")
    ap.add_argument("--stall", type=float, default=None, metavar="SECONDS",
                    help="cross-process consumers stop this long a tenth of the way in "
                         "(default: half-way, until the producer's send times out)")
    ap.add_argument("--rss-limit-mib", type=float, default=200.0)
    args = ap.parse_args(argv)
    if args.size < SEQ.size:
        ap.error("--size must be at least 8")

    from pyzmq.testing import ServerProcess
    failures = []
    opts = dict(size=args.size, hwm=args.hwm, pause=args.pause, every=args.every)
    print(f"pyzmq-wiring soak: libzmq {pyzmq.zmq_version()}, {os.cpu_count()} CPUs, "
          f"{args.size}-byte messages, hwm {args.hwm}, consumer sleeps {args.pause * 1000:g} ms "
          f"every {args.every} messages", flush=True)
    with ServerProcess(quiet=True) as server:
        for kind in args.kinds:
            t = time.monotonic()
            try:
                if kind == "local":
                    r = run_local(args.count, **opts)
                    prod = r
                    print(f"\n[{kind}] {r['received']:,} received in order in {r['secs']:.2f} s "
                          f"({r['received'] / r['secs']:,.0f} msg/s)")
                    print(f"  queue full {r['blocked']:,} times; at most {r['max_in_flight']:,} "
                          f"in flight; send(timeout=0.05) on a full queue raised Timeout "
                          f"after {float(r['timeout_secs']) * 1000:.0f} ms")
                else:
                    stall = args.stall if args.stall is not None else "until-timeout"
                    prod, cons = run_remote(server.address, kind, args.count, stall=stall,
                                            recv_timeout=max(30.0, (args.stall or 0) + 10),
                                            **opts)
                    print(f"\n[{kind}] {cons['received']:,} received in order in "
                          f"{cons['secs']:.2f} s ({cons['received'] / cons['secs']:,.0f} msg/s)")
                    stalled = (f"{prod['in_flight_at_timeout']:,} messages in flight when it "
                               f"timed out during the stall"
                               if prod["stall_timeout"] is not None
                               else f"stalled {args.stall:g} s" if args.stall
                               else "NO Timeout during the stall")
                    print(f"  producer found the queue full {prod['blocked']:,} times, "
                          f"send(timeout=0.05) raised Timeout {prod['timeouts']} times; "
                          f"{stalled}; consumer VmHWM {_mib(cons['vmhwm_kib'])}")
                print(f"  producer RSS: start {_mib(prod['rss_start_kib'])}, after 10% "
                      f"{_mib(prod['rss_warm_kib'])}, peak sampled {_mib(prod['rss_peak_kib'])}, "
                      f"VmHWM {_mib(prod['vmhwm_kib'])}; wall {time.monotonic() - t:.1f} s",
                      flush=True)
                if prod["vmhwm_kib"] > args.rss_limit_mib * 1024:
                    failures.append(f"{kind}: producer peak RSS {_mib(prod['vmhwm_kib'])}")
                if kind != "local" and args.stall is None and prod["stall_timeout"] is None:
                    failures.append(f"{kind}: the stalled consumer caused no Timeout")
            except AssertionError as e:
                failures.append(f"{kind}: {e}")
                print(f"\n[{kind}] FAILED: {e}", flush=True)
        if not args.no_outage:
            t = time.monotonic()
            try:
                f = run_outage(server, args.outage_count, **opts)
                print(f"\n[outage] directory SIGKILLed a quarter in; {f['received']:,} received "
                      f"in order; the stream finished {f['stream_done_after_kill_s']:.2f} s after "
                      f"the kill with the directory down")
                print(f"  restarted on port {server.port} after {f['directory_down_s']:.2f} s; both "
                      f"instances registered again within {f['reregistered_after_s']:.2f} s; "
                      f"new binds both ways worked; wall {time.monotonic() - t:.1f} s", flush=True)
            except AssertionError as e:
                failures.append(f"outage: {e}")
                print(f"\n[outage] FAILED: {e}", flush=True)
    print("\n" + ("FAILED:\n  " + "\n  ".join(failures) if failures else "all promises kept"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
