"""Wiring across two real network hosts: Linux network namespaces A and B
joined by a veth pair (perf/netns.py), zmq_server on A.

Needs root and iproute2.  Where namespaces cannot be made the tests are
skipped with the reason -- except under CI (CI=true), where that is a
failure: CI runs as root and must exercise them.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

import benchlib     # perf/ is on sys.path (pyproject.toml: pytest's pythonpath)
import netns
import rig
from helpers import ROOT

A_IP, B_IP = "198.18.0.1", "198.18.0.2"


def _cannot(e):
    """Skip (saying why) when namespaces cannot be made here; under CI, fail."""
    reason = f"cannot create network namespaces here: {e}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the two-host tests must run in CI, as root)")
    print(f"test_rig: skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture
def hosts():
    """Hosts A and B (unshaped link), removed afterwards whatever happens."""
    try:
        pair = netns.TwoHosts("test")
    except (netns.RigUnavailable, netns.CommandFailed, OSError) as e:
        _cannot(e)
    try:
        with netns.signals_interrupt():   # SIGTERM/SIGHUP still reach the teardown below
            assert pair.addresses(pair.a) == [f"{A_IP}/24"]
            assert pair.addresses(pair.b) == [f"{B_IP}/24"]
            yield pair
    finally:
        pair.close()
        assert pair.a.netns not in netns.list_ours()
        assert pair.b.netns not in netns.list_ours()


@pytest.fixture
def server(hosts):
    return hosts.start_server(hosts.a)


# ------------------------------------------------------------ latency pattern

ROUNDTRIPS = 1000

ECHO_ON_A = """
import sys, pyzmq
server, n = sys.argv[1], int(sys.argv[2])
with pyzmq.ZMQ(server) as z:
    eid = z.create_exchange("EL", pyzmq.SCOPE_GLOBAL, "veth-a:5555")
    z.create_queue("QL", pyzmq.SCOPE_GLOBAL, "veth-a:5556")
    # wildcard locations must advertise A's address on the route to the
    # directory, never 0.0.0.0
    z.create_exchange("EW", pyzmq.SCOPE_GLOBAL, "")
    z.create_queue("QW", pyzmq.SCOPE_GLOBAL, "*:0")
    print("ready", flush=True)
    for _ in range(n):
        z.send(eid, z.receive(timeout=10), timeout=10)
    print("echoed", n, flush=True)
    sys.stdin.readline()          # keep the names registered until told
"""

TIMER_ON_B = """
import sys, time, pyzmq
from pyzmq.directory import DirectoryClient
server, n = sys.argv[1], int(sys.argv[2])
with pyzmq.ZMQ(server) as z:
    er = z.create_exchange("ER")
    z.create_queue("QR")
    z.bind("EL", "QR")            # A's global exchange -> B's queue (XPUB -> SUB)
    z.bind("ER", "QL")            # B's exchange -> A's global queue (PUSH -> PULL)
    start = time.perf_counter()
    for i in range(n):
        msg = i.to_bytes(4, "big") * 8
        z.send(er, msg, timeout=10)
        reply = z.receive(timeout=10)
        if reply != msg:
            sys.exit(f"round trip {i}: sent {msg!r}, got {reply!r}")
    elapsed = time.perf_counter() - start
    print("roundtrips", n, f"{elapsed * 1e6 / (2 * n):.1f}", flush=True)
directory = DirectoryClient(server)
for name in ("EL", "QL", "EW", "QW"):
    kind, address, _key = directory.lookup(name)
    print("lookup", name, kind, address, flush=True)
directory.close()
"""


def test_latency_pattern_across_hosts_with_nic_locations(hosts, server):
    with hosts.python(hosts.a, ECHO_ON_A, server.address, ROUNDTRIPS) as a:
        a.expect("ready")             # A's names are registered
        with hosts.python(hosts.b, TIMER_ON_B, server.address, ROUNDTRIPS) as b:
            count, latency = b.expect("roundtrips", timeout=30).split()
            assert int(count) == ROUNDTRIPS                      # every reply, in order
            assert a.expect("echoed", timeout=10) == str(ROUNDTRIPS)
            found = {}
            for _ in range(4):
                name, kind, address = b.expect("lookup").split()
                found[name] = (kind, address)
            assert b.wait(10) == 0, b.err()
            print(f"1000 round trips A<->B, {latency} us one way; directory: {found}")

        # NIC-name locations register A's veth address with their port
        assert found["EL"] == ("E", f"{A_IP}:5555")
        assert found["QL"] == ("Q", f"{A_IP}:5556")
        # wildcards advertise the address B reaches A by
        for name, kind in (("EW", "E"), ("QW", "Q")):
            assert found[name][0] == kind
            host, port = found[name][1].rsplit(":", 1)
            assert host == A_IP and int(port) > 0
        # and the server logged nothing else
        registered = server.registrations()
        assert set(registered) == {"EL", "QL", "EW", "QW"}, server.logs()
        assert all(addr.startswith(f"{A_IP}:") for addr in registered.values()), registered
        assert not any("0.0.0.0" in line for line in server.logs()
                       if "registered" in line), server.logs()
        a.tell("done")
        assert a.wait(10) == 0, a.err()


# ------------------------------------------------------------ link down and up

SEND_TIMEOUT = 1.0   # seconds each send may wait for room
MSG_SIZE = 1000
REPORT_EVERY = 1000

SENDER = """
import queue, sys, threading, time, pyzmq
server, role = sys.argv[1], sys.argv[2]
SIZE, TIMEOUT = int(sys.argv[3]), float(sys.argv[4])
commands = queue.Queue()
threading.Thread(target=lambda: [commands.put(line.split()) for line in sys.stdin],
                 daemon=True).start()
with pyzmq.ZMQ(server, hwm=100) as z:
    if role == "owner":           # on A: a global exchange B binds to its queue
        eid = z.create_exchange("E", pyzmq.SCOPE_GLOBAL, "veth-a:5557")
    else:                         # on B: a local exchange bound to A's global queue
        eid = z.create_exchange("E")
        z.bind("E", "Q")
    print("ready", flush=True)

    def command():
        while True:
            try:
                return commands.get_nowait()
            except queue.Empty:
                pass
            try:                  # a pyzmq call, so an owner answers remote binds
                z.receive(timeout=0.05)
            except pyzmq.Timeout:
                pass

    def send(seq, timeout):
        z.send(eid, seq.to_bytes(8, "big") + bytes(SIZE - 8), timeout=timeout)

    seq = 0
    while True:
        cmd = command()
        if cmd[0] == "stream":    # until a send times out (the link is down)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60:
                t = time.monotonic()
                try:
                    send(seq, TIMEOUT)
                except pyzmq.Timeout as e:
                    print("timeout", seq, f"{time.monotonic() - t:.3f}", str(e), flush=True)
                    break
                seq += 1
            else:
                print("no-timeout", seq, flush=True)
        elif cmd[0] == "resume":  # send the rest, the link is up again
            total = int(cmd[1])
            while seq < total:
                send(seq, 20.0)
                seq += 1
            print("sent", seq, flush=True)
        else:
            break
"""

RECEIVER = """
import sys, pyzmq
server, role, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
with pyzmq.ZMQ(server, hwm=100) as z:
    if role == "owner":           # on A: the global queue B's exchange is bound to
        z.create_queue("Q", pyzmq.SCOPE_GLOBAL, "veth-a:5558")
    else:                         # on B: a local queue bound to A's global exchange
        z.create_queue("Q")
        z.bind("E", "Q")
    print("ready", flush=True)
    expected = 0
    while True:
        msg = z.receive(timeout=60)
        seq = int.from_bytes(msg[:8], "big")
        if seq != expected:
            sys.exit(f"message {seq} arrived where {expected} was due (lost or reordered)")
        expected += 1
        if expected % every == 0:
            print(f"got {expected} in order", flush=True)
"""


@pytest.mark.parametrize("direction", ["B->A", "A->B"])
def test_link_down_times_out_sender_and_link_up_resumes(hosts, server, direction):
    """B's veth goes down mid-stream: the sender's send(..., timeout=1) raises
    pyzmq.Timeout within its timeout; back up, every message arrives in order."""
    if direction == "B->A":      # B's exchange -> A's global queue (PUSH -> PULL over TCP)
        sender_host, sender_role, receiver_host, receiver_role = hosts.b, "binder", hosts.a, "owner"
    else:                        # A's global exchange -> B's queue (XPUB -> SUB over TCP)
        sender_host, sender_role, receiver_host, receiver_role = hosts.a, "owner", hosts.b, "binder"
    args = (server.address,)
    first, second = ((receiver_host, RECEIVER, receiver_role, REPORT_EVERY),
                     (sender_host, SENDER, sender_role, MSG_SIZE, SEND_TIMEOUT))
    if sender_role == "owner":
        first, second = second, first
    with hosts.python(first[0], first[1], *args, *first[2:]) as p1:
        p1.expect("ready")
        with hosts.python(second[0], second[1], *args, *second[2:]) as p2:
            p2.expect("ready")
            sender, receiver = (p1, p2) if sender_role == "owner" else (p2, p1)

            sender.tell("stream")
            receiver.expect(f"got {3 * REPORT_EVERY} in order", timeout=20)   # flowing
            hosts.link_down(hosts.b)
            try:
                report = sender.expect("timeout", timeout=30)
            finally:
                hosts.link_up(hosts.b)
            seq, took, text = report.split(" ", 2)
            seq, took = int(seq), float(took)
            print(f"{direction}: link down after >= {3 * REPORT_EVERY} messages; "
                  f"send #{seq} raised pyzmq.Timeout after {took:.3f} s: {text}")
            assert SEND_TIMEOUT * 0.9 <= took <= SEND_TIMEOUT + 0.75, \
                f"send waited {took} s with timeout={SEND_TIMEOUT}"
            assert "timed out" in text, text                          # says what happened

            # link back up: the messages in flight and the rest all arrive, in order
            total = (seq // REPORT_EVERY + 3) * REPORT_EVERY
            sender.tell(f"resume {total}")
            assert sender.expect("sent", timeout=40) == str(total)
            receiver.expect(f"got {total} in order", timeout=40)
            sender.tell("end")
            assert sender.wait(15) == 0, sender.err()


# ------------------------------------------------------------ the rig command

RIG = [sys.executable, str(ROOT / "perf" / "rig.py")]


def _ours_of(pid):
    return [n for n in netns.list_ours() if f"-{pid}-" in n]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_rig_removes_its_namespaces_when_interrupted(sig):
    try:
        netns.check_requirements()
    except netns.RigUnavailable as e:
        _cannot(e)
    proc = subprocess.Popen([*RIG, "--quick", "--no-chart"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen = []
        for line in proc.stderr:                       # wait until it is measuring
            seen.append(line)
            if "zmq_server on A" in line:
                break
        else:
            pytest.fail(f"rig.py never started measuring (status {proc.wait()}): {''.join(seen)}")
        assert len(_ours_of(proc.pid)) == 2
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "removed" in err, err
    assert _ours_of(proc.pid) == []


def test_rig_refuses_without_ip_and_tc():
    env = dict(os.environ, PATH="/nonexistent")
    proc = subprocess.run([*RIG, "--quick"], capture_output=True, text=True, env=env, timeout=30)
    if os.geteuid() != 0:
        assert proc.returncode == 2 and "must run as root" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 2, proc.stderr
        assert "ip and tc not found on PATH" in proc.stderr and "iproute2" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_rig_refuses_when_not_root(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert rig.main(["--quick"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "cannot run here: must run as root" in err, err


def test_rig_report_uses_the_loopback_runners_table(tmp_path):
    """The rig's table, link lines and chart from made-up measurements (so a
    change in perf/bench.py's interface shows here, not after a long run)."""
    sizes = (16, 65536)
    values = {("lat", "c"): 30.0, ("lat", "wiring"): 33.0,
              ("thr", "c"): 1780.0, ("thr", "wiring"): 1700.0}
    ms = [benchlib.Measurement(test, size, impl, rep, 100, values[test, impl] * (1 + rep / 100),
                            benchlib.UNITS[test], "ok", "", "", 1.0)
          for rep in (1, 2, 3) for test in ("lat", "thr") for size in sizes for impl in rig.IMPLS]
    ms.append(benchlib.Measurement("thr", 16, "wiring", 4, 100, None, "msg/s", "failed", "boom", "", 1.0))
    rows = benchlib.summarize(ms)
    table = "\n".join(benchlib.table_lines(rows, rig.IMPLS))
    assert "lat 16B" in table and "C=30.6us" in table and "pyzmq-wiring=33.7us (1.10x)" in table
    assert "thr 65536B" in table and "[1/4 failed]" in table
    link = rig.format_link(rows, sizes, 10**9)
    assert link[-1].startswith("link 65536B") and "max=1824msg/s" in link[-1] and "C=100%" in link[-1] and "pyzmq-wiring=95%" in link[-1]
    assert rig.format_link(rows, sizes, None) == []
    pytest.importorskip("matplotlib")
    rig.write_chart(rows, sizes, tmp_path / "rig.png", "test", 10**9)
    assert (tmp_path / "rig.png").stat().st_size > 10_000


def test_link_limit_and_counts():
    # 64 KiB at 1 Gbit/s: 65545 bytes of ZMTP frame in 1448-byte segments of 1514-byte frames
    assert 1823 < rig.link_limit(65536, 10**9) < 1825
    assert rig.link_limit(1, None) is None
    runner = rig.Runner.__new__(rig.Runner)
    runner.mode, runner.rate_bps = "quick", 10**9
    rt, n = runner.counts(65536)
    assert n == int(rig.link_limit(65536, 10**9) * rig.SECONDS_AT_LINK_RATE["quick"])
    runner.rate_bps = None
    assert runner.counts(65536) == rig.COUNTS["quick"][65536]
    assert runner.counts(100_000)[1] < rig.COUNTS["quick"][65536][1]


def test_cleanup_stale_removes_only_dead_runs(hosts):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{netns.PREFIX}-test-{dead.pid}-1a"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        removed = netns.cleanup_stale()
        assert stale in removed
        assert stale not in netns.list_ours()
        assert hosts.a.netns in netns.list_ours()      # a live run's are kept
        assert hosts.b.netns in netns.list_ours()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


def test_rate_and_burst_parsing():
    assert netns.parse_burst("125us", 10**9) == 15625
    assert netns.parse_burst("1ms", 10**9) == 125000
    assert netns.parse_burst("62500", 10**9) == 62500
    for bad in ("10", "1us", "fast"):
        with pytest.raises(ValueError):
            netns.parse_burst(bad, 10**9)
    assert netns.parse_rate("1gbit") == 10**9
    assert netns.parse_rate("100mbit") == 10**8
    assert netns.parse_rate("2.5Gbit") == 25 * 10**8
    assert netns.parse_rate("none") is None
    for bad in ("fast", "1gbyte", "-1mbit", "1bit"):
        with pytest.raises(ValueError):
            netns.parse_rate(bad)


OWNER_VIA_LOOPBACK = """
import sys, pyzmq
with pyzmq.ZMQ(sys.argv[1]) as z:
    z.create_queue("LOOPQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")   # only A can reach it
    print("ready", flush=True)
    sys.stdin.readline()
"""

BINDER_ON_B = """
import sys, pyzmq
with pyzmq.ZMQ(sys.argv[1]) as z:
    z.create_exchange("X")
    try:
        z.bind("X", "LOOPQ")
        print("bound", flush=True)
    except pyzmq.Error as e:
        print("refused", e, flush=True)
"""


def test_a_loopback_registration_is_refused_across_hosts(hosts, server):
    """An owner that registered a loopback address (an explicit 127.0.0.1
    location, or a wildcard while it reached the directory by 127.0.0.1): a
    binder on another host must get an error, not silence."""
    with hosts.python(hosts.a, OWNER_VIA_LOOPBACK, server.address) as a:
        a.expect("ready")
        with hosts.python(hosts.b, BINDER_ON_B, server.address) as b:
            said = b.expect("refused", timeout=20)
            assert "loopback" in said and "LOOPQ" in said
