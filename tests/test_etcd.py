"""The directory on a real 3-node etcd cluster (docs/etcd.md): wiring across
real processes, leader and quorum loss, owners that die, races for a name,
a cluster that restarts or comes back empty.  The cluster is the session's
(conftest.py ``etcd_cluster``); each test uses a key prefix of its own."""

import os
import signal
import threading
import time
import uuid

import pytest

import pyzmq
from helpers import COMMANDS, Peer, check_zmq_names_watch, wait_until

pytest.importorskip("etcd3gw", reason="the etcd3gw client is not installed (pip install .[etcd])")

from pyzmq.etcd_directory import EtcdDirectory, parse_url  # noqa: E402

# Owns global exchange EG and global queue QG; on "send N" sends N numbered
# messages on EG, on "recv N" prints the next N messages of QG.
OWNER = COMMANDS + """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
eid = z.create_exchange("EG", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
z.create_queue("QG", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("READY", z._directory.lease_id, flush=True)
while True:
    cmd = next_command(z).split()
    if cmd[0] == "send":
        for i in range(int(cmd[1])):
            z.send(eid, b"eg%d" % i)
        print("SENT", flush=True)
    elif cmd[0] == "recv":
        got = [z.receive(timeout=10).decode() for _ in range(int(cmd[1]))]
        print("GOT", ",".join(got), flush=True)
    elif cmd[0] == "quit":
        break
z.close()
print("BYE", flush=True)
"""


@pytest.fixture
def etcd_url(etcd_cluster):
    """The session cluster's address with a key prefix of this test's own."""
    return f"{etcd_cluster.url}/test-{uuid.uuid4().hex[:8]}"


def test_url_parsing_and_clear_errors():
    got = parse_url("etcd+tls://alice:s%40cret@h1,h2:2380,[::1]:2381/myapp?ca=/ca.pem&ttl=3")
    assert got["tls"] and got["user"] == "alice" and got["password"] == "s@cret"
    assert got["endpoints"] == [("h1", 2379), ("h2", 2380), ("::1", 2381)]
    assert got["prefix"] == "/myapp/" and got["options"] == {"ca": "/ca.pem", "ttl": "3"}
    assert parse_url("etcd://h")["prefix"] == "/pyzmq-wiring/"
    for bad, words in [("etcd://", "empty endpoint"), ("etcd://h:99999", "port"),
                       ("etcd://h1,,h2", "empty endpoint"), ("etcd://h?color=red", "unknown option")]:
        with pytest.raises(ValueError, match=words):
            parse_url(bad)
    with pytest.raises(ValueError, match="etcd\\+tls"):
        EtcdDirectory("etcd://127.0.0.1:1?ca=/x")
    with pytest.raises(pyzmq.Error, match="cannot reach any node"):
        EtcdDirectory("etcd://127.0.0.1:1,127.0.0.1:2", timeout=1)
    # the same exception as for a zmq_server that is not there, with what to check
    with pytest.raises(pyzmq.DirectoryUnreachable, match=r"127.0.0.1:1: Connection refused.*"
                                                         r"is etcd serving clients there"):
        pyzmq.ZMQ("etcd://127.0.0.1:1", timeout=1)


def test_wiring_across_processes_for_all_four_bind_kinds(etcd_url):
    with Peer(OWNER, etcd_url) as owner:
        owner_lease = int(owner.expect("READY"))
        with pyzmq.ZMQ(etcd_url) as z:
            # the records are in etcd under the owner's lease
            records = {r["name"]: r for r in z._directory.list()}
            assert set(records) == {"EG", "QG"}
            assert records["QG"]["kind"] == "queue" and records["EG"]["kind"] == "exchange"
            assert records["QG"]["owner"]["pid"] == owner.proc.pid
            assert owner_lease != z._directory.lease_id
            # mine -> mine
            e1 = z.create_exchange("E1")
            q1 = z.create_queue("Q1")
            z.bind("E1", "Q1")
            z.send(e1, b"local")
            assert z.receive2(timeout=5) == (q1, b"local")
            # mine -> remote global queue
            e2 = z.create_exchange("E2")
            z.bind("E2", "QG")
            for i in range(3):
                z.send(e2, b"e2-%d" % i)
            owner.tell("recv 3")
            assert owner.expect("GOT") == "e2-0,e2-1,e2-2"
            # remote global exchange -> mine
            q2 = z.create_queue("Q2")
            z.bind("EG", "Q2")
            owner.tell("send 3")
            assert [z.receive2(timeout=5) for _ in range(3)] == [(q2, b"eg%d" % i) for i in range(3)]
            # remote global exchange -> remote global queue: relayed by us
            z.bind("EG", "QG")
            owner.tell("send 2")
            assert [z.receive2(timeout=5) for _ in range(2)] == [(q2, b"eg0"), (q2, b"eg1")]
            owner.tell("recv 2")
            assert owner.expect("GOT") == "eg0,eg1"
        owner.tell("quit")
        owner.expect("BYE")
    with EtcdDirectory(etcd_url) as d:
        assert d.list() == []       # a clean close revoked the owner's lease


def test_a_name_held_by_another_lease_is_refused_and_only_its_holder_changes_it(etcd_url):
    with EtcdDirectory(etcd_url) as a, EtcdDirectory(etcd_url) as b:
        a.register("Q", "N", "127.0.0.1:1000")
        # two clients of one process: the message says so, as zmq_server's client does
        with pytest.raises(pyzmq.DirectoryError, match="'N' is already registered by another instance "
                                                       r"\(in this process: close it first\)") as e:
            b.register("Q", "N", "127.0.0.1:2000")
        assert e.value.code == pyzmq.directory.p.DUPLICATE
        with pytest.raises(pyzmq.DirectoryError, match="registered by another process"):
            b.unregister("N")
        assert b.lookup("N") == ("Q", "127.0.0.1:1000", "")
        a.register("Q", "N", "127.0.0.1:1001")           # the holder replaces its record
        assert b.lookup("N") == ("Q", "127.0.0.1:1001", "")
        with pytest.raises(pyzmq.DirectoryError, match="no global object named 'X'"):
            b.lookup("X")
        with pytest.raises(pyzmq.DirectoryError, match="no global object"):
            b.unregister("X")
        # the pattern list and one record
        a.register("E", "orders.new", "127.0.0.1:1002")
        assert [r["name"] for r in b.list("orders.*")] == ["orders.new"]
        info = b.info("orders.new")
        assert info["kind"] == "exchange" and info["owner"]["pid"] == os.getpid()
        a.unregister("N")
        b.register("Q", "N", "127.0.0.1:2000")           # free again: b gets it


def test_wait_for_and_watch_follow_the_name_through_etcd_watches(etcd_url):
    with EtcdDirectory(etcd_url) as a, EtcdDirectory(etcd_url) as b:
        threading.Timer(0.3, a.register, ("Q", "LATE", "127.0.0.1:3000")).start()
        started = time.monotonic()
        assert b.wait_for("LATE", 5) == ("Q", "127.0.0.1:3000", "")
        assert time.monotonic() - started < 3
        serial = b.watch_serial()
        a.register("Q", "LATE", "127.0.0.1:3001")        # moved: the watch reports it
        assert wait_until(lambda: b.watched("LATE")[0] > serial, 5)
        assert b.watched("LATE")[1] == ("Q", "127.0.0.1:3001", "")
        a.unregister("LATE")
        assert wait_until(lambda: b.watched("LATE")[1] is None, 5)
        with pytest.raises(pyzmq.Timeout, match="'NEVER' did not appear"):
            b.wait_for("NEVER", 0.5)


def test_an_owner_sigkilled_loses_its_names_within_the_ttl(etcd_url):
    ttl = 3
    code = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
for n in ("K1", "K2"):
    z.create_queue(n, pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("READY", flush=True)
import time; time.sleep(60)
"""
    with Peer(code, etcd_url + f"?ttl={ttl}") as owner, EtcdDirectory(etcd_url) as d:
        owner.expect("READY")
        d.watch(["K1", "K2"])
        assert wait_until(lambda: all((d.watched(n) or (0, None))[1] for n in ("K1", "K2")), 5)
        os.kill(owner.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wait_until(lambda: all(d.watched(n)[1] is None for n in ("K1", "K2")), ttl + 3, 0.02)
        gone = time.monotonic() - killed
        print(f"names gone {gone:.2f} s after the owner's SIGKILL (lease TTL {ttl} s)")
        assert gone <= ttl + 1.5


RACER = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
print("READY", flush=True)
sys.stdin.readline()
try:
    z.create_queue("PRIZE", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    print("WON", flush=True)
except pyzmq.Error as e:
    print("LOST", e, flush=True)
sys.stdin.readline()
z.close()
"""


def test_processes_racing_for_one_name_exactly_one_wins(etcd_url):
    peers = [Peer(RACER, etcd_url) for _ in range(4)]
    try:
        for peer in peers:
            peer.expect("READY")
        for peer in peers:
            peer.tell("go")
        results = []
        for peer in peers:
            line = peer.expect("", timeout=15)
            results.append(line)
        assert sum(r == "WON" for r in results) == 1, results
        assert all(r == "WON" or "'PRIZE' is already registered by another process" in r for r in results)
        winner = peers[[r == "WON" for r in results].index(True)]
        with EtcdDirectory(etcd_url) as d:
            assert d.info("PRIZE")["owner"]["pid"] == winner.proc.pid
    finally:
        for peer in peers:
            peer.close()


def test_leader_sigkilled_during_registrations_and_binds(etcd_cluster, etcd_url):
    durations = []
    with Peer(OWNER, etcd_url) as owner:
        owner.expect("READY")
        with pyzmq.ZMQ(etcd_url, timeout=10) as z:
            leader = etcd_cluster.leader()
            killer = threading.Timer(0.5, etcd_cluster.kill, (leader,))
            killer.start()
            started = time.monotonic()
            i = 0
            while time.monotonic() - started < 3.0 or i < 20:
                t0 = time.monotonic()
                z.create_queue(f"q{i}", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")     # a registration
                eid = z.create_exchange(f"e{i}")
                z.bind(f"e{i}", "QG")                                          # a lookup
                durations.append(time.monotonic() - t0)
                z.send(eid, b"m%d" % i)
                i += 1
            killer.join()
            assert not etcd_cluster.running(leader)
            owner.tell(f"recv {i}")
            assert sorted(owner.expect("GOT").split(","), key=lambda m: int(m[1:])) == \
                [f"m{k}" for k in range(i)]
            with EtcdDirectory(etcd_url) as d:
                assert len(d.list("q*")) == i
    worst = max(durations)
    print(f"{len(durations)} registration+bind rounds; the slowest took {worst:.2f} s "
          f"(the leader was SIGKILLed 0.5 s in)")
    assert worst < 8.0


def test_quorum_lost_fails_registrations_and_binds_clearly_while_data_flows(etcd_cluster, etcd_url):
    with Peer(OWNER, etcd_url) as owner:
        owner.expect("READY")
        with pyzmq.ZMQ(etcd_url, timeout=2) as z:
            eid = z.create_exchange("E")
            z.bind("E", "QG")
            leader = etcd_cluster.leader()
            others = [i for i in range(3) if i != leader]
            etcd_cluster.kill(leader)
            etcd_cluster.kill(others[0])            # one node of three left: no quorum
            t0 = time.monotonic()
            with pytest.raises(pyzmq.Error, match="did not register 'NEW' within 2 s") as e:
                z.create_queue("NEW", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            took = time.monotonic() - t0
            assert "no quorum" in str(e.value)
            assert 1.5 <= took < 5
            z.create_exchange("E2")
            with pytest.raises(pyzmq.Error, match="did not look up 'QG' within 2 s"):
                z.bind("E2", "QG")
            # the data path does not need the directory
            for k in range(100):
                z.send(eid, b"d%d" % k)
            owner.tell("recv 100")
            assert owner.expect("GOT") == ",".join(f"d{k}" for k in range(100))
            # quorum back: registrations work again, and the lease survived
            etcd_cluster.restart(leader, wait=False)
            etcd_cluster.wait_healthy()
            z.create_queue("NEW", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            assert z._directory.lookup("QG")[0] == "Q"
        owner.tell("quit")
        owner.expect("BYE")
    print(f"a registration without quorum failed after {took:.2f} s (timeout 2 s)")


KEEPER = COMMANDS + """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1], on_lost=lambda n, why: print("LOST", n, why, flush=True))
z.create_queue("KEPT", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
z.create_queue("TAKEN", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("READY", flush=True)
while True:
    cmd = next_command(z)
    if cmd == "lost":
        print("LOSTNAMES", sorted(z.lost), flush=True)
    elif cmd == "quit":
        break
z.close()
"""


def test_the_whole_cluster_restarted_or_replaced_and_instances_register_again(etcd_cluster, etcd_url):
    ttl = 3
    with Peer(KEEPER, etcd_url + f"?ttl={ttl}") as peer, EtcdDirectory(etcd_url, timeout=20) as w:
        peer.expect("READY")
        with EtcdDirectory(etcd_url) as d:
            kept = d.lookup("KEPT")
        watch = w.subscribe("*")            # a watch across both (its timeout outlasts the outages)
        address = {name: entry["address"] for name, entry in watch.records().items()}
        assert sorted(address) == ["KEPT", "TAKEN"]
        # every node SIGKILLed, then started again with its data: the lease survives
        for i in range(3):
            etcd_cluster.kill(i)
        time.sleep(1.0)
        for i in range(3):
            etcd_cluster.restart(i, wait=False)
        etcd_cluster.wait_healthy()
        time.sleep(ttl + 1)            # longer than the TTL: still there, the keeper renewed it
        with EtcdDirectory(etcd_url) as d:
            assert d.lookup("KEPT") == kept
        # the cluster replaced by an empty one (every lease gone) while the
        # owner is stopped; meanwhile another process takes one of its names
        os.kill(peer.proc.pid, signal.SIGSTOP)
        try:
            etcd_cluster.wipe()
            etcd_cluster.start()
            thief = EtcdDirectory(etcd_url)
            thief.register("Q", "TAKEN", "127.0.0.1:4444")
        finally:
            os.kill(peer.proc.pid, signal.SIGCONT)
        try:
            started = time.monotonic()
            thief.watch(["KEPT"])
            assert wait_until(lambda: (thief.watched("KEPT") or (0, None))[1] == kept, 15)
            print(f"names registered again {time.monotonic() - started:.2f} s after the owner resumed")
            assert peer.expect("LOST TAKEN").startswith("another process registered it")
            peer.tell("lost")
            assert peer.expect("LOSTNAMES") == "['TAKEN']"
            assert thief.lookup("TAKEN") == ("Q", "127.0.0.1:4444", "")
            # the watch read the new cluster's records again and reports what it holds
            assert wait_until(lambda: {n: e["address"] for n, e in watch.records().items()} ==
                              {"KEPT": kept[1], "TAKEN": "127.0.0.1:4444"}, 10), watch.records()
            events = []
            while (item := watch.get(0)) is not None:
                events.append((item[0], item[1]["name"], item[1]["address"]))
            print("watch events across the restart and the replacement:", events)
            assert events[:2] == [("added", "KEPT", kept[1]), ("added", "TAKEN", address["TAKEN"])]
            assert ("changed", "TAKEN", "127.0.0.1:4444") in events or \
                ("added", "TAKEN", "127.0.0.1:4444") in events, events
        finally:
            thief.close()
        peer.tell("quit")
        peer.wait()


def test_user_and_password_when_etcd_authentication_is_on(etcd_cluster, etcd_url):
    import subprocess
    prefix = parse_url(etcd_url)["prefix"]
    env = dict(os.environ, ETCDCTL_API="3")
    endpoints = ",".join(f"http://{e}" for e in etcd_cluster.endpoints)

    def ctl(*args, user=None):
        cmd = ["etcdctl", "--endpoints", endpoints, *(["--user", user] if user else []), *args]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=20)
        assert run.returncode == 0, (cmd, run.stderr)

    ctl("user", "add", "root:rootpw")
    ctl("user", "grant-role", "root", "root")
    ctl("user", "add", "app:app pw")
    ctl("role", "add", "wiring")
    ctl("role", "grant-permission", "wiring", "--prefix=true", "readwrite", prefix)
    ctl("user", "grant-role", "app", "wiring")
    ctl("auth", "enable")
    try:
        with pytest.raises(pyzmq.Error, match="user name is empty.*authentication is on"):
            with EtcdDirectory(etcd_url) as anonymous:
                anonymous.register("Q", "A", "127.0.0.1:1")
        with pytest.raises(pyzmq.Error, match="invalid user ID or password"):
            with EtcdDirectory(etcd_url, user="app", password="wrong") as d:
                d.register("Q", "A", "127.0.0.1:1")
        host_part = etcd_url.split("://", 1)[1]
        with pyzmq.ZMQ(f"etcd://app:app%20pw@{host_part}") as z, \
                pyzmq.ZMQ(etcd_url, etcd_options={"user": "app", "password": "app pw"}) as y:
            qid = z.create_queue("A", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            eid = y.create_exchange("E")
            y.bind("E", "A")
            y.send(eid, b"through an authenticated directory")
            assert z.receive2(timeout=5) == (qid, b"through an authenticated directory")
        # the user may touch its own prefix only
        with pytest.raises(pyzmq.Error, match="permission denied"):
            with EtcdDirectory(etcd_cluster.url + "/elsewhere", user="app", password="app pw") as d:
                d.register("Q", "A", "127.0.0.1:1")
    finally:
        ctl("auth", "disable", user="root:rootpw")
        ctl("user", "delete", "app", user=None)
        ctl("user", "delete", "root")
        ctl("role", "delete", "wiring")


def test_a_binder_follows_an_owner_that_moved_through_the_watch(etcd_url):
    """The wiring layer's follow-a-moved-owner path (ZMQ._follow_moved) on
    etcd: the queue's owner dies and comes back on another port; a send
    that waits re-points its binding from what the watch reported."""
    owner_code = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
z.create_queue("MOVER", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("READY", flush=True)
print("GOT", z.receive(timeout=30).decode(), flush=True)
z.close()
"""
    with pyzmq.ZMQ(etcd_url, hwm=1) as z:
        with Peer(owner_code, etcd_url) as first:
            first.expect("READY")
            eid = z.create_exchange("E")
            z.bind("E", "MOVER")
            z.send(eid, b"one")
            assert first.expect("GOT") == "one"
            assert first.wait() == 0         # closed: its name is free at once
        with Peer(owner_code, etcd_url) as second:       # the same name, a new port
            second.expect("READY")
            for k in range(3):      # fills the pipe to the dead address, then waits and follows
                z.send(eid, b"two", timeout=15)
            assert second.expect("GOT", timeout=20) == "two"


def test_etcd_bench_prints_both_backends():
    import subprocess
    import sys
    from helpers import ROOT
    run = subprocess.run([sys.executable, str(ROOT / "perf" / "etcd_bench.py"), "--names", "20",
                          "--lookups", "20", "--clients", "1", "--failovers", "0", "--watch", "20"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith(("zmq_server", "etcd "))]
    assert {(r[0], r[2]) for r in rows} == {(backend, op) for backend in ("zmq_server", "etcd")
                                            for op in ("register", "lookup", "watch")}
    assert "median watch latency, etcd / zmq_server: " in run.stdout


def test_tls_with_client_certificates(tmp_path):
    """etcd+tls:// against a node that serves https and requires a client
    certificate (a throwaway CA made with openssl)."""
    from pyzmq.testing import EtcdCluster, make_test_certs
    tls = make_test_certs(str(tmp_path))
    with EtcdCluster(size=1, tls=tls) as cluster:
        good = f"{cluster.url}?ca={tls['ca']}&cert={tls['client_cert']}&key={tls['client_key']}"
        with pyzmq.ZMQ(good) as z, \
                pyzmq.ZMQ(cluster.url, etcd_options={"ca": tls["ca"], "cert": tls["client_cert"],
                                                     "key": tls["client_key"]}) as y:
            qid = z.create_queue("T", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            eid = y.create_exchange("E")
            y.bind("E", "T")
            y.send(eid, b"over a TLS directory")
            assert z.receive2(timeout=5) == (qid, b"over a TLS directory")
            y._directory.watch(["T"])        # the watch stream is TLS too
            assert wait_until(lambda: (y._directory.watched("T") or (0, None))[1] is not None, 5)
        started = time.monotonic()
        with pytest.raises(pyzmq.Error, match="TLS with the etcd node .* failed .*SSL.*give ca= .*cert= and key="):
            EtcdDirectory(f"{cluster.url}?ca={tls['ca']}")           # no client certificate
        with pytest.raises(pyzmq.Error, match="TLS with the etcd node .* failed .*CERTIFICATE_VERIFY_FAILED"):
            EtcdDirectory(cluster.url)                               # the system's CAs do not know it
        assert time.monotonic() - started < 3                        # at once, not after the timeout


def test_an_owner_paused_longer_than_its_ttl_registers_again_and_reports_what_it_lost(etcd_url):
    ttl = 2
    with Peer(KEEPER, etcd_url + f"?ttl={ttl}") as peer, EtcdDirectory(etcd_url) as other:
        peer.expect("READY")
        kept = other.lookup("KEPT")
        other.watch(["KEPT", "TAKEN"])
        assert wait_until(lambda: (other.watched("KEPT") or (0, None))[1] == kept, 5)
        os.kill(peer.proc.pid, signal.SIGSTOP)       # as a long GC pause or a cut-off link would
        try:
            assert wait_until(lambda: other.watched("KEPT")[1] is None, ttl + 3, 0.02)  # lease expired
            other.register("Q", "TAKEN", "127.0.0.1:4445")
        finally:
            os.kill(peer.proc.pid, signal.SIGCONT)
        assert peer.expect("LOST TAKEN").startswith("another process registered it")
        assert wait_until(lambda: other.watched("KEPT")[1] == kept, 10)
        assert other.lookup("TAKEN") == ("Q", "127.0.0.1:4445", "")
        peer.tell("quit")
        peer.wait()


def test_an_instance_collected_while_open_abandons_its_etcd_lease_without_a_request(etcd_url):
    # ZMQ.__del__ calls the backend's _abandon(); EtcdDirectory had none, so
    # the collection raised AttributeError (reported as unraisable) and left
    # its threads running.  Now: no error, the threads end, the name goes
    # with the lease's TTL.
    import gc
    import sys
    import warnings
    seen = []
    hook, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        z = pyzmq.ZMQ(etcd_url, etcd_options={"ttl": 2})
        z.create_queue("abandoned", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        directory = z._directory
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del z
            gc.collect()
    finally:
        sys.unraisablehook = hook
    assert not seen, [str(u.exc_value) for u in seen]
    assert directory.closed
    for t in (directory._keeper, directory._watcher):
        if t is not None:
            t.join(5.0)
            assert not t.is_alive(), t.name
    with pyzmq.ZMQ(etcd_url) as other:
        deadline = time.monotonic() + 10
        while "abandoned" in other.names():
            assert time.monotonic() < deadline, "the name outlived its lease"
            time.sleep(0.2)
    directory.close()


def test_zmq_names_lists_and_shows_the_names_of_an_etcd_directory(etcd_url):
    import json
    import subprocess
    import sys
    from helpers import child_env
    with pyzmq.ZMQ(etcd_url) as owner:
        owner.create_queue("names-q", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        run = lambda *a: subprocess.run([sys.executable, "-m", "pyzmq.names", "-d", etcd_url, *a],
                                        capture_output=True, text=True, timeout=60, env=child_env())
        r = run("ls", "names-*", "--json")
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert [d["name"] for d in rows] == ["names-q"]
        assert rows[0]["kind"] == "queue" and rows[0]["owner"]["pid"] == os.getpid()
        r = run("info", "names-q", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["name"] == "names-q", r.stderr
        assert run("ping").returncode == 0
    with EtcdDirectory(etcd_url) as client:
        check_zmq_names_watch(etcd_url, client)     # the same lines as test_names.py's on zmq_server


def test_zmq_names_takes_no_lease_and_says_one_line_when_the_cluster_goes(etcd_cluster, etcd_url):
    # zmq_names took a lease it never used: a lease in the cluster for every
    # run, and lease warnings before its error line when the cluster went
    import subprocess
    import sys
    from helpers import child_env

    def leases():
        return {lease["ID"] for lease in etcd_cluster._call(0, "/v3/lease/leases", {}).get("leases") or []}
    with EtcdDirectory(etcd_url) as owner:
        owner.register("E", "ro.a", "127.0.0.1:1")
        before = leases()
        with EtcdDirectory(etcd_url, lease=False) as reader:       # what zmq_names uses
            assert reader.lease_id is None and [r["name"] for r in reader.list("ro.*")] == ["ro.a"]
            assert reader.info("ro.a")["address"] == "127.0.0.1:1"
            with reader.subscribe("ro.*") as watch:
                owner.register("E", "ro.b", "127.0.0.1:2")
                assert [watch.get(5)[1]["name"] for _ in range(2)] == ["ro.a", "ro.b"]
            with pytest.raises(pyzmq.Error, match="read-only .*lease=False"):
                reader.register("E", "ro.c", "127.0.0.1:3")
            assert leases() <= before
        proc = subprocess.Popen([sys.executable, "-m", "pyzmq.names", "-d", etcd_url, "-t", "2", "watch", "ro.*"],
                                env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lines = []
            reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True)
            reader.start()
            assert wait_until(lambda: lines, 15), "zmq_names printed nothing"
            assert leases() <= before                       # the owner's, no new one
            for i in range(etcd_cluster.size):
                etcd_cluster.kill(i)
            assert proc.wait(20) == 1
            err = proc.stderr.read().splitlines()
            assert len(err) == 1 and err[0].startswith("zmq_names: the watch of 'ro.*' ended"), err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def drain(watch, count, timeout=10):
    """The next ``count`` events of ``watch`` as (type, name, address)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        item = watch.get(max(0.0, deadline - time.monotonic()))
        if item is not None:
            got.append((item[0], item[1]["name"], item[1]["address"]))
    return got


def test_subscribe_gives_the_records_at_one_revision_then_every_change(etcd_url):
    with EtcdDirectory(etcd_url) as a, EtcdDirectory(etcd_url) as b:
        a.register("E", "E1", "127.0.0.1:1")
        a.register("Q", "Q1", "127.0.0.1:2")
        with b.subscribe("E*") as es, b.subscribe("*") as every, b.subscribe("Q1", exact=True) as q1:
            assert es.synced.is_set() and sorted(es.records()) == ["E1"]
            assert sorted(every.records()) == ["E1", "Q1"] and sorted(q1.records()) == ["Q1"]
            assert (es.snapshot_size, every.snapshot_size, q1.snapshot_size) == (1, 2, 1)
            assert es.records()["E1"]["kind"] == "exchange" and es.records()["E1"]["owner"]["pid"] == os.getpid()
            assert drain(es, 1) == [("added", "E1", "127.0.0.1:1")]
            assert sorted(drain(every, 2)) == [("added", "E1", "127.0.0.1:1"), ("added", "Q1", "127.0.0.1:2")]
            assert drain(q1, 1) == [("added", "Q1", "127.0.0.1:2")]
            a.register("E", "E2", "127.0.0.1:3")
            a.register("E", "E2", "127.0.0.1:4")       # moved: changed
            a.register("E", "E2", "127.0.0.1:4")       # the same record again: no event
            a.register("Q", "Q2", "127.0.0.1:5")
            a.unregister("E1")
            a.register("Q", "Q1", "127.0.0.1:6")
            assert drain(es, 3) == [("added", "E2", "127.0.0.1:3"), ("changed", "E2", "127.0.0.1:4"),
                                    ("removed", "E1", "127.0.0.1:1")]
            assert drain(every, 5) == [("added", "E2", "127.0.0.1:3"), ("changed", "E2", "127.0.0.1:4"),
                                       ("added", "Q2", "127.0.0.1:5"), ("removed", "E1", "127.0.0.1:1"),
                                       ("changed", "Q1", "127.0.0.1:6")]
            assert drain(q1, 1) == [("changed", "Q1", "127.0.0.1:6")]
            assert es.get(0.3) is None and every.get(0) is None and q1.get(0) is None   # nothing doubled
            assert sorted(es.records()) == ["E2"]
            a.close()                                   # the lease revoked: its names go at once
            assert sorted(drain(every, 3)) == [("removed", "E2", "127.0.0.1:4"),
                                               ("removed", "Q1", "127.0.0.1:6"),
                                               ("removed", "Q2", "127.0.0.1:5")]
        with pytest.raises(pyzmq.Error, match="closed"):
            es.get(0)
        with pytest.raises(ValueError):
            b.subscribe("")
    with pytest.raises(pyzmq.Error, match="closed"):
        every.get(0)


def test_zmq_names_and_info_through_etcd(etcd_url):
    with pyzmq.ZMQ(etcd_url) as owner, pyzmq.ZMQ(etcd_url) as other:
        owner.create_queue("jobs.a", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        owner.create_exchange("jobs.b", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        owner.create_queue("else", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        assert other.names("jobs.*") == ["jobs.a", "jobs.b"]
        assert other.names() == ["else", "jobs.a", "jobs.b"]
        info = other.info("jobs.b")
        assert set(info) == {"name", "kind", "address", "key", "owner", "registered"}
        assert (info["name"], info["kind"], info["key"]) == ("jobs.b", "exchange", None)
        assert info["address"].startswith("127.0.0.1:") and info["owner"]["pid"] == os.getpid()
        with pytest.raises(pyzmq.DirectoryError, match="no global object named 'nobody'"):
            other.info("nobody")

        async def through_asyncio():        # the asyncio ZMQ asks in the loop's executor
            import pyzmq.asyncio
            async with await pyzmq.asyncio.ZMQ.connect(etcd_url) as z:
                return await z.names("jobs.*"), await z.info("jobs.b")
        import asyncio
        names, info_async = asyncio.run(asyncio.wait_for(through_asyncio(), 30))
        assert names == ["jobs.a", "jobs.b"] and info_async == info


def test_a_watch_survives_the_sigkill_of_the_node_it_streams_from(etcd_cluster, etcd_url):
    # the leader listed first: the watch streams from it, so its kill moves
    # the stream and holds the registrations up for an election
    node = etcd_cluster.leader()
    order = [node] + [i for i in range(etcd_cluster.size) if i != node]
    url = "etcd://" + ",".join(etcd_cluster.endpoint(i) for i in order) + "/" + parse_url(etcd_url)["prefix"].strip("/")
    with EtcdDirectory(url, timeout=10) as a, EtcdDirectory(url, timeout=10) as b:
        a.register("E", "E0", "127.0.0.1:1")
        watch = b.subscribe("E*")
        assert drain(watch, 1) == [("added", "E0", "127.0.0.1:1")]
        assert wait_until(lambda: b._watch_conn is not None, 5)
        assert etcd_cluster.client_ports.index(b._watch_conn.port) == node
        etcd_cluster.kill(node)
        killed = time.monotonic()
        for i in range(1, 6):                           # while the stream moves and a new
            a.register("E", f"E{i}", "127.0.0.1:1")     # leader is elected
        a.unregister("E0")
        got = drain(watch, 6, timeout=15)
        print(f"6 events through the kill of the leader the watch streamed from, "
              f"the last {time.monotonic() - killed:.2f} s after it")
        assert got == [("added", f"E{i}", "127.0.0.1:1") for i in range(1, 6)] + [("removed", "E0", "127.0.0.1:1")]
        assert watch.get(0.3) is None                   # nothing lost, nothing twice
        assert etcd_cluster.client_ports.index(b._watch_conn.port) != node
        watch.close()


def test_a_watch_nobody_reads_ends_at_its_bound_saying_it_fell_behind(etcd_url):
    # the events of a watch nobody read were kept without a bound
    from helpers import check_watch_bound
    with EtcdDirectory(etcd_url) as owner, EtcdDirectory(etcd_url) as watcher:
        check_watch_bound(watcher, owner)       # (test_names.py runs the same on zmq_server)


def test_a_watch_ends_with_a_clear_error_when_the_cluster_is_gone(etcd_cluster, etcd_url):
    with EtcdDirectory(etcd_url, timeout=2) as b:
        watch = b.subscribe("*")
        for i in range(etcd_cluster.size):
            etcd_cluster.kill(i)
        started = time.monotonic()
        with pytest.raises(pyzmq.Timeout, match="the watch of '\\*' ended, no answer for 2.* s: "
                                                "the etcd directory at .* did not .* within 2 s"):
            watch.get(15)
        took = time.monotonic() - started
        print(f"the watch ended {took:.2f} s after the whole cluster was killed (timeout 2 s)")
        assert 1.5 <= took < 6
        with pytest.raises(pyzmq.Timeout):
            watch.get(0)                                # it stays ended


def test_changes_made_while_the_watch_stream_hangs_are_not_lost(etcd_cluster, etcd_url, monkeypatch):
    # The stream sits on a node that hangs (SIGSTOP) while a name changes
    # through the other nodes; when the silent stream is given up, the
    # watcher read the revision again and streamed from the one after it,
    # so the change was never reported to the name followed.  Now it
    # resumes after the last revision it handled.
    from pyzmq import etcd_directory
    monkeypatch.setattr(etcd_directory, "WATCH_IDLE", 1.0)     # give up a silent stream sooner
    leader = etcd_cluster.leader()
    follower = next(i for i in range(etcd_cluster.size) if i != leader)
    prefix = parse_url(etcd_url)["prefix"].strip("/")

    def url(first):
        order = [first] + [i for i in range(etcd_cluster.size) if i != first]
        return "etcd://" + ",".join(etcd_cluster.endpoint(i) for i in order) + "/" + prefix
    with EtcdDirectory(url(leader)) as a, EtcdDirectory(url(follower), timeout=10) as b:
        a.register("Q", "A", "127.0.0.1:1")
        b.watch(["A"])
        watch = b.subscribe("A", exact=True)
        assert drain(watch, 1) == [("added", "A", "127.0.0.1:1")]
        assert wait_until(lambda: (b.watched("A") or (0, None))[1] == ("Q", "127.0.0.1:1", ""), 5)
        assert etcd_cluster.client_ports.index(b._watch_conn.port) == follower
        etcd_cluster.pause(follower)
        try:
            a.register("Q", "A", "127.0.0.1:2")          # committed by the leader and the third node
            assert drain(watch, 1, timeout=10) == [("changed", "A", "127.0.0.1:2")]
            assert wait_until(lambda: b.watched("A")[1] == ("Q", "127.0.0.1:2", ""), 5)
        finally:
            etcd_cluster.resume(follower)
        assert watch.get(0.3) is None
        watch.close()


def test_close_after_the_lease_vanished_from_the_cluster(etcd_url):
    # Before: close() let the backend's internal _LeaseGone out ("etcdserver:
    # requested lease not found") when the cluster no longer had the lease,
    # as after a cluster replaced under a running client (seen in the
    # restart test).  A lease that is gone needs no revoking.
    d = EtcdDirectory(etcd_url, timeout=5)
    d.register("E", "VANISHING", "127.0.0.1:4444")
    with EtcdDirectory(etcd_url, timeout=5) as other:
        other._call("/lease/revoke", {"ID": str(d._lease)}, time.monotonic() + 5, "revoke a lease",
                    role="main")
    d.close()
    assert d.closed
