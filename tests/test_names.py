"""LIST, INFO and WATCH, ZMQ.names/info, bind(wait=) and the zmq_names tool,
against a real zmq_server and real processes."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import pyzmq
from pyzmq import protocol as p
from pyzmq.directory import DirectoryClient, DirectoryError
from pyzmq.testing import child_env
from helpers import COMMANDS, Peer, check_zmq_names_watch, wait_until

FIELDS = {"name", "kind", "address", "key", "owner", "registered"}


@pytest.fixture
def client(directory):
    with DirectoryClient(directory, timeout=5.0) as c:
        yield c


def zmq_names(directory, *args, timeout=20):
    return subprocess.run([sys.executable, "-m", "pyzmq.names", "-d", directory, *args], env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_list_matches_globs_and_pages_in_order(directory, client):
    for i in range(2500):
        client.register("E" if i % 2 else "Q", f"svc.{i:04d}", f"127.0.0.1:{1000 + i}")
    client.register("E", "other", "127.0.0.1:1")
    with DirectoryClient(directory, timeout=5.0) as observer:
        names = [e.name for e in observer.list("svc.*")]
        assert names == [f"svc.{i:04d}" for i in range(2500)]     # 3 pages of at most 1000
        assert [e.name for e in observer.list("svc.00[0-2]?")] == [f"svc.{i:04d}" for i in range(30)]
        assert [e.name for e in observer.list("*er")] == ["other"]
        assert observer.list("nothing*") == []
        assert len(observer.list()) == 2501
        first = observer.list("svc.0001")[0]
        assert (first.kind, first.address, first.key, first.pid) == ("E", "127.0.0.1:1001", "", os.getpid())
        with pytest.raises(ValueError, match="pattern"):
            observer.list("")


def test_info_says_who_owns_a_name_and_since_when(client):
    before = time.time()
    client.register("Q", "jobs", "127.0.0.1:6000")
    entry = client.info("jobs")
    assert (entry.name, entry.kind, entry.address, entry.key) == ("jobs", "Q", "127.0.0.1:6000", "")
    assert (entry.host, entry.pid, entry.program) == (socket.gethostname(), os.getpid(),
                                                      os.path.basename(sys.argv[0]))
    assert before - 1 <= entry.registered_ms / 1000 <= time.time() + 1
    with pytest.raises(DirectoryError) as info:
        client.info("nobody")
    assert info.value.code == p.NOT_FOUND


def test_watch_gives_a_snapshot_then_changes(directory, client):
    client.register("E", "feed.a", "127.0.0.1:1")
    client.register("E", "feed.b", "127.0.0.1:2")
    client.register("E", "unrelated", "127.0.0.1:3")
    with DirectoryClient(directory, timeout=5.0) as watcher:
        with watcher.subscribe("feed.*") as watch:
            assert watch.synced.is_set()
            assert sorted(watch.records()) == ["feed.a", "feed.b"]
            assert {watch.get(1)[0], watch.get(1)[0]} == {"added"}
            client.register("Q", "feed.c", "127.0.0.1:4")
            client.register("E", "not-a-feed", "127.0.0.1:5")
            client.register("E", "feed.a", "127.0.0.1:9")      # moved
            client.unregister("feed.b")
            seen = [watch.get(5) for _ in range(3)]
            assert [(kind, e.name) for kind, e in seen] == [("added", "feed.c"), ("changed", "feed.a"),
                                                            ("removed", "feed.b")]
            assert seen[1][1].address == "127.0.0.1:9"
            assert watch.get(0.3) is None                       # nothing about the other names


def test_watch_sees_a_killed_owner_leave_within_the_ttl(directory):
    code = """
import sys, time
from pyzmq.directory import DirectoryClient
c = DirectoryClient(sys.argv[1], timeout=3.0)
c.register("E", "mortal", "127.0.0.1:5555")
print("registered", flush=True)
time.sleep(60)
"""
    with DirectoryClient(directory, timeout=5.0) as watcher, watcher.subscribe("mortal", exact=True) as watch:
        with Peer(code, directory) as owner:
            owner.expect("registered")
            assert watch.get(5)[0] == "added"
            owner.proc.kill()
            started = time.monotonic()
            kind, entry = watch.get(10)
            print(f"removed event {time.monotonic() - started:.3f} s after SIGKILL")
            assert (kind, entry.name) == ("removed", "mortal")
            assert time.monotonic() - started < 5.0


def test_a_watch_resyncs_after_a_directory_restart(directory_server):
    with DirectoryClient(directory_server.address, timeout=5.0) as owner, \
            DirectoryClient(directory_server.address, timeout=5.0) as watcher:
        owner.register("E", "w.kept", "127.0.0.1:1")
        watch = watcher.subscribe("w.*")
        assert watch.get(2)[0] == "added"
        directory_server.kill()
        directory_server.start()
        owner.register("E", "w.new", "127.0.0.1:2")         # after the owner registered its names again
        deadline = time.monotonic() + 10
        while sorted(watch.records()) != ["w.kept", "w.new"] and time.monotonic() < deadline:
            watch.get(0.2)
        assert sorted(watch.records()) == ["w.kept", "w.new"]
        watch.close()
        with pytest.raises(pyzmq.Error, match="closed"):
            watch.get(0)


def test_zmq_names_and_info_of_an_instance(directory):
    with pyzmq.ZMQ(directory) as z:
        z.create_exchange("prices.eu", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        z.create_queue("prices.jobs", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        assert z.names() == ["prices.eu", "prices.jobs"]
        assert z.names("*.eu") == ["prices.eu"]
        d = z.info("prices.eu")
        assert set(d) == FIELDS and d["kind"] == "exchange" and d["key"] is None
        assert d["owner"] == {"host": socket.gethostname(), "pid": os.getpid(),
                              "program": os.path.basename(sys.argv[0])}
        assert d["registered"].endswith("Z") and d["registered"][:4].isdigit()
        assert z.info("prices.jobs")["kind"] == "queue"
    with pytest.raises(pyzmq.Error, match="no directory"):
        pyzmq.ZMQ().names()


PRODUCER = COMMANDS + """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
e = z.create_exchange("late-feed", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
while (line := next_command(z)) != "quit":
    z.send(e, line.encode())
z.close()
"""


def test_bind_waits_for_a_producer_that_starts_later(directory):
    with pyzmq.ZMQ(directory) as z:
        z.create_queue("in")
        peers = []

        def start_producer():
            time.sleep(1.0)
            peers.append(Peer(PRODUCER, directory))

        starter = threading.Thread(target=start_producer)
        starter.start()
        started = time.monotonic()
        try:
            z.bind("late-feed", "in", wait=20)
            waited = time.monotonic() - started
            print(f"bind(wait=) returned {waited:.3f} s after it was called")
            assert waited >= 0.9
            starter.join()
            peers[0].expect("ready")
            peers[0].tell("hello")
            assert z.receive(timeout=10) == b"hello"
            peers[0].tell("quit")
            assert peers[0].wait() == 0, peers[0].err()
        finally:
            starter.join()
            for peer in peers:
                peer.close()


def test_bind_wait_gives_up_in_time(directory):
    with pyzmq.ZMQ(directory) as z:
        z.create_queue("in")
        started = time.monotonic()
        with pytest.raises(pyzmq.Error, match="no global object named 'never'.*waited 0.5 s") as info:
            z.bind("never", "in", wait=0.5)
        assert 0.4 < time.monotonic() - started < 3.0
        assert info.value.code == p.NOT_FOUND
        with pytest.raises(pyzmq.Error, match="no exchange 'never': it is neither an object"):
            z.bind("never", "in")                       # without wait: at once, with the hint
        with pytest.raises(ValueError, match="wait"):
            z.bind("never", "in", wait=-1)


def test_zmq_names_tool(directory, client):
    client.register("E", "tool.a", "127.0.0.1:1111")
    client.register("Q", "tool.b", "127.0.0.1:2222", key="1/.@})TAeU!GLIwz*kUIbyZ=V!T=?.Y>QSnrwf*=")
    r = zmq_names(directory, "ls", "tool.*", "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert [d["name"] for d in items] == ["tool.a", "tool.b"]
    assert all(set(d) == FIELDS for d in items)
    assert items[0]["kind"] == "exchange" and items[1]["kind"] == "queue"
    assert items[1]["key"] == "1/.@})TAeU!GLIwz*kUIbyZ=V!T=?.Y>QSnrwf*=" and items[0]["key"] is None
    assert items[0]["owner"]["pid"] == os.getpid()
    r = zmq_names(directory, "ls")
    assert r.returncode == 0 and "tool.a\texchange\t127.0.0.1:1111" in r.stdout
    r = zmq_names(directory, "info", "tool.b", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["address"] == "127.0.0.1:2222"
    r = zmq_names(directory, "info", "missing")
    assert r.returncode == 2 and "no global object named 'missing'" in r.stderr
    assert zmq_names(directory, "ping").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    r = zmq_names(dead, "-t", "1", "ping")
    assert r.returncode == 1 and "cannot reach the directory" in r.stderr


def test_zmq_names_watch_prints_the_snapshot_then_events(directory, client):
    check_zmq_names_watch(directory, client)       # (test_etcd.py runs the same on etcd)


def test_a_watch_ends_when_its_client_closes(directory):
    # it did not: iterating the watch of a closed DirectoryClient waited forever
    watcher = DirectoryClient(directory, timeout=5.0)
    watch = watcher.subscribe("*")
    watcher.close()
    started = time.monotonic()
    with pytest.raises(pyzmq.Error, match="the watch of '\\*' ended: the directory client .* is closed"):
        watch.get(5)
    assert time.monotonic() - started < 1
    watch.close()


def test_a_watch_nobody_reads_ends_at_its_bound_saying_it_fell_behind(directory, client):
    # the events of a watch nobody read were kept without a bound
    from helpers import check_watch_bound
    with DirectoryClient(directory, timeout=5.0) as watcher:
        check_watch_bound(watcher, client)      # (test_etcd.py runs the same on etcd)


@pytest.mark.parametrize("idle_timeout", ["30", "0"])
def test_a_stopped_watcher_past_max_queued_is_reconnected_and_resyncs(idle_timeout):
    # A watcher whose process is stopped does not read its socket: the
    # server's ROUTER dropped its events past the queue's mark without a
    # word, so the watch kept a stale record once it ran again.  Now the
    # server ends its watches and shuts its connection, and the client
    # watches again from the current records.  With --idle-timeout 0 the
    # server did not track connections, so it could not shut this one: the
    # watch ended and its client was never told (STALE); it tracks them
    # whatever the timeout now.
    import signal
    from pyzmq.testing import ServerProcess
    from helpers import wait_until
    name = "flood." + "x" * 240                     # big events (about 600 bytes) fill the
    hosts = ("a" * 240 + ".h", "b" * 240 + ".h")    # kernel's buffers sooner
    changes = 10_000
    last = f"{hosts[(changes - 1) % 2]}:{changes}"
    code = """
import sys, time
from pyzmq.directory import DirectoryClient
c = DirectoryClient(sys.argv[1], timeout=5.0, ttl=60.0)     # (a lease that outlives the stop)
w = c.subscribe("flood.*", max_unread=10**6)
print("READY", flush=True)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    w.get(0.2)
    if [e.address for e in w.records().values()] == [sys.argv[2]]:
        print("CURRENT", flush=True)
        break
else:
    print("STALE", [e.address[-12:] for e in w.records().values()], flush=True)
c.close()
"""
    with ServerProcess(quiet=True, extra_args=["--max-queued", "200", "--max-ttl", "600",
                                               "--idle-timeout", idle_timeout]) as server:
        with Peer(code, server.address, last) as watcher:
            watcher.expect("READY")
            import zmq
            ctx = zmq.Context()
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            try:
                sock.connect(f"tcp://{server.address}")
                sock.send_multipart([p.encode_header(0), p.encode_request(p.Lease(60_000, "t", 0, "t"))])
                assert sock.poll(5000)
                lease = p.decode_reply(sock.recv_multipart()[1]).lease
                os.kill(watcher.proc.pid, signal.SIGSTOP)
                sent = got = 0
                while got < changes:        # pipelined, fewer in flight than --max-queued
                    while sent < changes and sent - got < 20:
                        sent += 1
                        sock.send_multipart([p.encode_header(sent), p.encode_request(
                            p.Register(lease, "E", name, f"{hosts[(sent - 1) % 2]}:{sent}"))])
                    assert sock.poll(10_000), "no answer to a REGISTER"
                    assert isinstance(p.decode_reply(sock.recv_multipart()[1]), p.Ok)
                    got += 1
            finally:
                os.kill(watcher.proc.pid, signal.SIGCONT)
                ctx.destroy(linger=0)
            said = watcher.lines.get(timeout=40)
            assert said is not None and said.strip() == "CURRENT", (said, watcher.err())
        assert wait_until(lambda: any("fell 200 messages behind (--max-queued): its watches ended and its "
                                      "connection was closed" in line for line in server.logs()), 5), \
            server.logs()[-5:]


def test_zmq_names_reads_without_a_lease_and_watches_under_one():
    # zmq_names took a lease for every command, though LIST, INFO and PING
    # need none: on a directory whose leases were all taken (--max-leases)
    # it could not even list.  Now it reads without one; a WATCH still
    # lives under a lease (the lease is what ends the watch of a client that
    # went away, and what caps its watches), so `watch` takes one then, and
    # says so clearly when the directory has none to give.
    from pyzmq.testing import ServerProcess
    with ServerProcess(quiet=True, extra_args=["--max-leases", "1"]) as server:
        with DirectoryClient(server.address, timeout=5.0) as owner:     # the only lease
            owner.register("E", "held", "127.0.0.1:1")
            r = zmq_names(server.address, "ls")
            assert r.returncode == 0 and r.stdout.startswith("held\texchange\t127.0.0.1:1\t"), (r.stdout, r.stderr)
            r = zmq_names(server.address, "info", "held")
            assert r.returncode == 0 and "address: 127.0.0.1:1" in r.stdout, r.stderr
            r = zmq_names(server.address, "ping")
            assert r.returncode == 0, r.stderr
            r = zmq_names(server.address, "watch")
            assert r.returncode == 1 and "refused a lease" in r.stderr and "--max-leases" in r.stderr, r.stderr
            with DirectoryClient(server.address, timeout=5.0, lease=False) as reader:
                assert [e.name for e in reader.list()] == ["held"]
                with pytest.raises(pyzmq.Error, match="without a lease"):
                    reader.register("E", "mine", "127.0.0.1:2")


def test_a_lease_free_client_whose_lease_went_unanswered_asks_again_at_the_next_subscribe(directory_server):
    # A DirectoryClient(lease=False) asks for its lease at the first
    # subscribe().  When that LEASE went unanswered (a directory stalled
    # past the timeout), the client kept a wanted lease that nothing would
    # ask for again: every later subscribe() waited for it and raised
    # Timeout, though the directory answered again.  Now the timed-out
    # LEASE fails the calls waiting for it and the next subscribe() asks.
    import signal
    with DirectoryClient(directory_server.address, timeout=5.0) as owner, \
            DirectoryClient(directory_server.address, timeout=1.0, lease=False) as reader:
        owner.register("E", "late.one", "127.0.0.1:1")
        os.kill(directory_server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(pyzmq.Timeout):
                reader.subscribe("late.*")
            time.sleep(0.5)         # (the LEASE's own deadline passes too)
        finally:
            os.kill(directory_server.pid, signal.SIGCONT)
        watch = None
        for _ in range(3):          # (the stalled link may still be catching up at first)
            try:
                watch = reader.subscribe("late.*")
                break
            except pyzmq.Timeout:
                continue
        assert watch is not None, "the lease-free client never took a lease again"
        assert sorted(watch.records()) == ["late.one"]
        owner.register("E", "late.two", "127.0.0.1:2")
        events = [watch.get(5), watch.get(5)]       # the snapshot's record, then the change
        assert [(kind, entry.name) for kind, entry in events] == [("added", "late.one"), ("added", "late.two")]
        watch.close()


@pytest.mark.parametrize("lease", [True, False])
def test_a_watch_whose_new_lease_is_refused_ends_saying_why(lease):
    # After a directory restart the client needs a new lease; when the
    # directory refuses it (here its only lease is taken first), nothing
    # asked again: the Watch of a client holding names (lease=True) waited
    # for ever, and so would its names.  Now the Watch ends with the
    # refusal, and that client asks again after a back-off and registers
    # its names once it has a lease.
    from pyzmq.testing import ServerProcess
    with ServerProcess(quiet=True, extra_args=["--max-leases", "1"]) as server:
        with DirectoryClient(server.address, timeout=3.0, lease=lease) as client:
            if lease:
                client.register("E", "mine", "127.0.0.1:1")
            watch = client.subscribe("*")
            server.kill()
            assert wait_until(lambda: not client.connected, 5.0)
            server.start()
            taker = DirectoryClient(server.address, timeout=3.0)       # the only lease
            try:
                ended, deadline = None, time.monotonic() + 10
                while ended is None and time.monotonic() < deadline:
                    try:
                        watch.get(0.2)
                    except DirectoryError as exc:
                        ended = exc
                assert ended is not None, "the watch went on waiting for a lease the directory refused"
                assert ended.code == p.LIMIT and "refused a lease" in str(ended) and "--max-leases" in str(ended)
            finally:
                taker.close()
            if lease:
                with DirectoryClient(server.address, timeout=3.0, lease=False) as reader:
                    assert wait_until(lambda: [e.name for e in reader.list()] == ["mine"], 15.0), \
                        "the client did not take a lease again and register its name"
            again = None
            for _ in range(15):     # (lease=True: its new lease may still be on its way)
                try:
                    again = client.subscribe("*")
                    break
                except (DirectoryError, pyzmq.Timeout):
                    time.sleep(0.2)
            assert again is not None
            assert sorted(again.records()) == (["mine"] if lease else [])
            again.close()
