"""zmq_server's safe defaults and abuse limits, with a real server process."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pyzmq import protocol as p
from pyzmq.directory import DirectoryClient, DirectoryError
from pyzmq.server import RateLimitedLog, ready_line, startup_warnings
from pyzmq.testing import ServerProcess, child_env
from helpers import wait_until


def test_default_address_is_loopback_and_the_ready_line_says_how_to_go_further():
    proc = subprocess.Popen([sys.executable, "-m", "pyzmq.server", "--port", "0"], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("zmq_server: listening on 127.0.0.1:")
        assert "to listen on the network give an address, e.g. zmq_server 0.0.0.0" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert "warning" not in proc.stderr.read()


def test_startup_warnings():
    assert startup_warnings("127.0.0.1", False, False) == []
    assert startup_warnings("127.0.0.5", True, True) == []
    [plain] = startup_warnings("0.0.0.0", False, False)
    assert "plain mode on 0.0.0.0" in plain and "any client" in plain and "--curve-secret" in plain
    [open_] = startup_warnings("127.0.0.1", True, False)
    assert "without --curve-allow: any client key is admitted" in open_
    assert len(startup_warnings("10.1.2.3", True, False)) == 1
    assert startup_warnings("10.1.2.3", True, True) == []
    assert "this host only" not in ready_line("10.1.2.3", 5682)
    assert ready_line("127.0.0.1", 5682, "k" * 40).startswith(
        "zmq_server: listening on 127.0.0.1:5682 (CURVE, public key " + "k" * 40 + ") -- this host only")


def test_curve_without_an_allow_list_warns(tmp_path):
    import pyzmq
    secret = tmp_path / "k"
    secret.write_text(pyzmq.curve_keypair()[1] + "\n")
    secret.chmod(0o600)
    with ServerProcess(extra_args=["--curve-secret", str(secret)]) as server:
        assert server.wait_for_log("without --curve-allow: any client key is admitted", 5.0)


def test_global_record_cap_answers_limit(tmp_path):
    with ServerProcess(extra_args=["--max-records", "50"]) as server:
        with DirectoryClient(server.address, timeout=5.0) as a, DirectoryClient(server.address, timeout=5.0) as b:
            for i in range(25):
                a.register("E", f"a{i}", "127.0.0.1:1")
                b.register("E", f"b{i}", "127.0.0.1:1")
            with pytest.raises(DirectoryError, match="holds 50 names, its limit .*--max-records") as info:
                b.register("E", "one-more", "127.0.0.1:1")
            assert info.value.code == p.LIMIT
            a.register("Q", "a0", "127.0.0.1:2")       # replacing is not growing
            a.unregister("a1")
            b.register("E", "one-more", "127.0.0.1:1")  # room again


def test_a_client_with_10000_long_names_hits_the_cap_with_bounded_rss(directory_server):
    with DirectoryClient(directory_server.address, timeout=10.0) as c:
        rss_before = directory_server.rss_kib()
        for i in range(p.MAX_NAMES_PER_LEASE):
            c.register("E", f"{i:05d}".ljust(255, "x"), "h" * 249 + ":65535")
        with pytest.raises(DirectoryError) as info:
            c.register("E", "z" * 255, "127.0.0.1:1")
        assert info.value.code == p.LIMIT
        rss_after = directory_server.rss_kib()
        print(f"\n10,000 names of 255 bytes (addresses of 255): server VmRSS {rss_before} -> {rss_after} KiB, "
              f"{(rss_after - rss_before) * 1024 / 10000:.0f} bytes a name")
        assert rss_after - rss_before < 64 * 1024
    # all freed at once on close
    with DirectoryClient(directory_server.address, timeout=5.0) as d:
        assert d.list("0000*") == []


def test_logging_is_rate_limited_with_a_summary(tmp_path):
    with ServerProcess(extra_args=["--log-rate", "5"]) as server:
        with DirectoryClient(server.address, timeout=5.0) as c:
            for i in range(100):
                c.register("E", f"n{i}", "127.0.0.1:1")
            line = server.wait_for_log(r"more registrations not logged", 5.0)
            assert line and "at most 5 lines a second" in line
        def accounted():
            # the last window's summary comes with the server's next tick
            logged = [line for line in server.logs() if "registered 'n" in line]
            counts = [int(line.split()[1]) for line in server.logs() if "more registrations" in line]
            return len(logged), len(logged) + sum(counts)
        wait_until(lambda: accounted()[1] == 100, 5.0)
        logged, total = accounted()
        assert 5 <= logged < 40, logged
        assert total == 100


def test_rate_limited_log_in_isolation():
    lines, now = [], [0.0]
    log = RateLimitedLog(lines.append, per_second=3, clock=lambda: now[0])
    for i in range(10):
        log(f"line {i}", "registrations")
    log("refused", "refusals")
    assert lines == ["line 0", "line 1", "line 2"]
    now[0] = 1.5
    log("later")
    assert lines[3] == "zmq_server: 1 more refusals, 7 more registrations not logged (at most 3 lines a second)"
    assert lines[4] == "later"


def test_sigterm_with_clients_and_watches_stops_without_tracebacks():
    server = ServerProcess().start()
    clients = [DirectoryClient(server.address, timeout=3.0) for _ in range(5)]
    try:
        for i, c in enumerate(clients):
            c.register("E", f"held{i}", "127.0.0.1:5555")
        watch = clients[0].subscribe("*")
        os.kill(server.pid, signal.SIGTERM)
        assert server._proc.wait(10) == 0
        time.sleep(0.2)
        logs = "\n".join(server.logs())
        assert "zmq_server: stopped" in logs
        assert "Traceback" not in logs and "CancelledError" not in logs and "Exception" not in logs, logs
        watch.close()
    finally:
        for c in clients:
            c.close()


def test_metrics_are_served_over_http():
    import re
    import urllib.request
    with ServerProcess(extra_args=["--metrics", "127.0.0.1:0"]) as server:
        line = server.wait_for_log(r"metrics on http://", 5.0)
        url = re.search(r"(http://\S+)", line).group(1)
        with DirectoryClient(server.address, timeout=5.0) as c:
            c.register("E", "m.e", "127.0.0.1:1")
            c.register("Q", "m.q1", "127.0.0.1:2")
            c.register("Q", "m.q2", "127.0.0.1:3")
            for _ in range(7):
                c.lookup("m.e")
            with pytest.raises(DirectoryError):
                c.lookup("nothing")
            with DirectoryClient(server.address, timeout=5.0) as other:
                with pytest.raises(DirectoryError):
                    other.register("E", "m.e", "127.0.0.1:9")
                text = urllib.request.urlopen(url, timeout=5).read().decode()
        values = {}
        for row in text.splitlines():
            if row and not row.startswith("#"):
                metric, value = row.rsplit(" ", 1)
                values[metric] = float(value)
        assert values["zmq_directory_clients"] == 2
        assert values['zmq_directory_names{kind="exchange"}'] == 1
        assert values['zmq_directory_names{kind="queue"}'] == 2
        assert values['zmq_directory_requests_total{result="ok",verb="LOOKUP"}'] == 7
        assert values['zmq_directory_requests_total{result="NOT_FOUND",verb="LOOKUP"}'] == 1
        assert values['zmq_directory_requests_total{result="ok",verb="REGISTER"}'] == 3
        assert values['zmq_directory_lookup_seconds_count'] == 8
        assert values['zmq_directory_refusals_total{reason="duplicate"}'] == 1
        print(f"\nscraped {len(values)} samples from {url}")


def test_idle_connections_from_one_source_are_capped_and_others_still_served():
    import resource
    import socket as socketlib
    import pyzmq
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with ServerProcess(quiet=True, extra_args=["--max-handshaking", "100"]) as server:
        idle = []
        try:
            for _ in range(1100):
                s = socketlib.socket()
                s.bind(("127.0.0.2", 0))
                s.connect(("127.0.0.1", server.port))
                idle.append(s)
            started = time.monotonic()
            with pyzmq.ZMQ(server.address) as owner, pyzmq.ZMQ(server.address) as binder:
                owner.create_queue("capped-q", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
                ex = binder.create_exchange("local-e")
                binder.bind("local-e", "capped-q")
                elapsed = time.monotonic() - started
                binder.send(ex, b"through")
                assert owner.receive(timeout=5) == b"through"
            print(f"\n1,100 idle connections from 127.0.0.2: register, look up and bind from 127.0.0.1 "
                  f"in {elapsed:.3f} s")
            assert elapsed < 1.0
            # all but --max-handshaking of the idle ones were dropped by the server
            time.sleep(0.5)
            dropped = 0
            for s in idle:
                s.setblocking(False)
                try:
                    while s.recv(4096):     # (the server's ZMTP greeting comes first)
                        pass
                    dropped += 1            # end of stream: dropped
                except BlockingIOError:
                    pass                    # still open
                except OSError:
                    dropped += 1
            print(f"the server dropped {dropped} of them at once")
            assert dropped >= 1000 - 100
        finally:
            for s in idle:
                s.close()


def test_connections_per_source_are_capped_through_zap():
    with ServerProcess(quiet=True, extra_args=["--max-per-source", "3"]) as server:
        clients = [DirectoryClient(server.address, timeout=3.0) for _ in range(3)]
        try:
            with pytest.raises(DirectoryError, match="too many connections") as info:
                DirectoryClient(server.address, timeout=3.0)
            assert info.value.code == p.AUTH
            clients.pop().close()
            deadline = time.monotonic() + 5
            while True:         # a slot is free once the server has seen the close
                try:
                    DirectoryClient(server.address, timeout=1.0).close()
                    break
                except DirectoryError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
        finally:
            for c in clients:
                c.close()


# -- the idle timeout (--idle-timeout) ------------------------------------------

def _closed_by_peer(sock, within):
    """True once the peer has closed ``sock`` (end of stream or reset), waiting up to ``within`` s."""
    import select
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            try:
                if sock.recv(4096) == b"":
                    return True     # (the server's ZMTP greeting comes first)
            except OSError:
                return True
    return False


def test_idle_connections_holding_nothing_are_closed_and_clients_ride_over_it():
    import re
    import socket as socketlib
    import urllib.request
    import zmq
    from zmq.utils.monitor import recv_monitor_message
    with ServerProcess(extra_args=["--idle-timeout", "1", "--metrics", "127.0.0.1:0"]) as server:
        url = re.search(r"(http://\S+)", server.wait_for_log(r"metrics on http://", 5.0)).group(1)
        # clients whose renewals (every TTL/4 = 2 s) are further apart than the timeout
        holder = DirectoryClient(server.address, timeout=3.0, ttl=8.0)
        bare = DirectoryClient(server.address, timeout=3.0, ttl=8.0)
        watcher = DirectoryClient(server.address, timeout=3.0, ttl=8.0)
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        try:
            holder.register("E", "idle.kept", "127.0.0.1:1")
            watch = watcher.subscribe("idle.*")
            # a raw TCP connection from 127.0.0.2 that never speaks: closed by the
            # idle timeout, well before libzmq's handshake limit (5 s) would
            raw = socketlib.socket()
            raw.bind(("127.0.0.2", 0))
            raw.connect(("127.0.0.1", server.port))
            started = time.monotonic()
            assert _closed_by_peer(raw, 4.0), "the idle raw connection was not closed"
            print(f"\nraw idle connection closed after {time.monotonic() - started:.2f} s (--idle-timeout 1)")
            raw.close()
            # a ZeroMQ peer that completed the handshake and then sends nothing (its
            # heartbeats would keep it forever): closed too
            dealer.linger = 0
            monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            dealer.connect(f"tcp://127.0.0.2:0;127.0.0.1:{server.port}")
            assert monitor.poll(4000), "the idle ZeroMQ peer was not disconnected"
            assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
            dealer.disable_monitor()
            monitor.close()
            assert wait_until(lambda: bare.reconnects >= 1, 5.0), "a client holding nothing was not cut"
            time.sleep(1.5)
            # the holder of a name and the watcher were never cut; the bare client
            # reconnected by itself, kept its lease and works
            assert holder.reconnects == 0 and watcher.reconnects == 0
            assert bare.lookup("idle.kept") == ("E", "127.0.0.1:1", "")
            bare.register("Q", "idle.later", "127.0.0.1:2")
            assert watch.get(timeout=3.0)[1].name == "idle.kept"
            assert watch.get(timeout=3.0)[1].name == "idle.later"
            cuts = bare.reconnects
            time.sleep(2.5)
            assert bare.reconnects == cuts, "a client holding a name was cut"
            assert holder.names() == ["idle.kept"] and bare.names() == ["idle.later"]
            assert not holder.lost and not bare.lost
            assert sorted(e.name for e in holder.list("idle.*")) == ["idle.kept", "idle.later"]
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            idle = re.search(r'zmq_directory_refusals_total\{reason="idle"\} (\S+)', text)
            assert idle and float(idle.group(1)) >= 3, text
            logs = "\n".join(server.logs())
            assert "closed an idle connection from 127.0.0.2" in logs
            assert "nothing sent for 1 s (--idle-timeout)" in logs
            watch.close()
        finally:
            dealer.close()
            ctx.term()
            for c in (holder, bare, watcher):
                c.close()


def test_idle_timeout_zero_disables_it_and_bad_values_are_refused(capsys):
    from pyzmq.server import parse_args
    assert parse_args(["--idle-timeout", "0"]).idle_timeout == 0
    assert parse_args([]).idle_timeout == 30
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(SystemExit):
            parse_args(["--idle-timeout", bad])
        assert "--idle-timeout must be a number of seconds >= 0" in capsys.readouterr().err
    with ServerProcess(extra_args=["--idle-timeout", "0"]) as server:
        with DirectoryClient(server.address, timeout=3.0, ttl=8.0) as bare:
            time.sleep(2.5)
            assert bare.reconnects == 0
            bare.ping()


# -- a reused fd is never shut down ----------------------------------------------

def _pair(listener):
    import socket as socketlib
    client = socketlib.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    return client, accepted


def test_the_idle_sweep_never_shuts_a_connection_that_took_over_a_stale_fd():
    """The server's table (fed by a monitor that may lag) still says fd N
    is connection A, idle, while A is gone and the kernel gave N to a new
    connection B: the sweep must leave B alone (its peer differs), and shut
    it once the table knows N is B and B is idle."""
    import socket as socketlib
    from pyzmq.server import Server
    listener = socketlib.create_server(("127.0.0.1", 0))
    server = Server(quiet=True, idle_timeout=1.0)
    a_client, a = _pair(listener)
    fd, a_peer = a.fileno(), a.getpeername()
    server.conns.accepted(fd, a_peer, now=0.0)
    a.close()
    a_client.close()
    b_client, b = _pair(listener)
    if b.fileno() != fd:        # (the kernel gives the lowest free number; make sure)
        os.dup2(b.fileno(), fd)
        b.close()
        b = socketlib.socket(fileno=fd)
    try:
        assert b.getpeername() != a_peer
        server._close_idle(100.0)
        b_client.sendall(b"still here")
        assert b.recv(64) == b"still here", "the sweep shut the connection that reused the fd"
        # the monitor catches up: N is B now; B idle long enough is shut
        server.conns.closed(fd)
        server.conns.accepted(fd, b.getpeername(), now=100.0)
        server._close_idle(150.0)
        assert _closed_by_peer(b_client, 2.0), "the idle connection was not shut"
        assert server.conns.fds[fd].shut
    finally:
        for s in (b, b_client, listener):
            s.close()


def test_shut_if_same_and_the_accept_plan_with_real_sockets():
    import socket as socketlib
    import zmq
    from pyzmq.server import _shut_if_same, plan_accepts
    listener = socketlib.create_server(("127.0.0.1", 0))
    client, conn = _pair(listener)
    try:
        other = ("127.0.0.1", client.getsockname()[1] + 1)
        assert not _shut_if_same(conn.fileno(), other)
        client.sendall(b"x")
        assert conn.recv(1) == b"x"
        assert not _shut_if_same(10 ** 6, conn.getpeername())   # no such fd
        assert _shut_if_same(conn.fileno(), conn.getpeername())
        assert _closed_by_peer(client, 2.0)
    finally:
        for s in (client, conn, listener):
            s.close()
    acc, dis = zmq.EVENT_ACCEPTED, zmq.EVENT_DISCONNECTED
    # fd 7 came, went and came again: only its last accept names a live connection
    assert plan_accepts([(acc, 7), (dis, 7), (acc, 7), (acc, 8), (dis, 9)], acc) == {2, 3}
    assert plan_accepts([(acc, 7), (dis, 7)], acc) == set()


def test_connections_table_keeps_what_messages_showed_before_the_accept():
    from pyzmq.server import Connections
    conns = Connections(max_per_source=10, max_handshaking=2)
    early = conns.seen(5, now=1.0)          # a message ahead of its ACCEPTED event
    assert not early.confirmed and conns.idle(100.0, 1.0) == []   # never acted on
    assert conns.accepted(5, ("10.0.0.1", 4000), now=2.0)
    assert conns.fds[5] is early and early.confirmed and early.last == 2.0
    assert conns.accepted(6, ("10.0.0.1", 4001), now=2.0)
    assert not conns.accepted(7, ("10.0.0.1", 4002), now=2.0)      # a third in the handshake
    assert conns.admit("10.0.0.1")
    assert [c.fd for c in conns.idle(3.5, 1.0)] == [5, 6, 7]
    conns.seen(6, now=3.0)
    assert [c.fd for c in conns.idle(3.5, 1.0)] == [5, 7]
    for fd in (5, 6, 7):
        conns.closed(fd)
    assert conns.fds == {} and conns.total == {} and conns.pending == {}
    conns.seen(9, now=1.0)
    conns.closed(9)                          # an unconfirmed entry counts for nothing
    assert conns.total == {}


def test_at_the_open_files_limit_connections_past_its_room_are_refused_and_said(tmp_path):
    # Under a low open-files limit the server used to reach it: libzmq then
    # could not accept (its I/O thread spun on the listening socket, a core's
    # worth), and the server could not duplicate an accepted fd, so that
    # connection was neither counted, capped nor timed out.  Now it keeps
    # room: past it a connection is shut at once, counted and logged.
    import functools
    import re
    import resource
    import socket

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))   # soft and hard: it cannot raise it
    popen = functools.partial(subprocess.Popen, preexec_fn=low_limit)
    with ServerProcess(popen=popen) as server:
        line = server.wait_for_log("open-files limit 64", 5.0)
        assert line, server.logs()
        room = int(re.search(r"room for (\d+) connections, more are refused", line).group(1))
        assert 1 <= room < 64 and "ulimit" in line
        pid = server.proc.pid
        ticks = lambda: sum(int(x) for x in open(f"/proc/{pid}/stat").read().split()[13:15])
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(80)]
        try:
            def shut_by_server(s):
                s.settimeout(0.05)
                try:
                    while True:
                        if not s.recv(4096):        # (after the ZMTP greeting, if any)
                            return True
                except socket.timeout:
                    return False
                except OSError:
                    return True
            closed = set()
            deadline = time.monotonic() + 4      # (within the 5 s handshake limit)
            while len(closed) < 80 - room and time.monotonic() < deadline:
                closed.update(i for i, s in enumerate(socks) if i not in closed and shut_by_server(s))
            before = ticks()
            time.sleep(1.0)
            print(f"room {room}; {len(closed)} of 80 connections shut at once; server CPU "
                  f"{ticks() - before} ticks in 1 s with them open; fds {len(os.listdir(f'/proc/{pid}/fd'))}")
            assert len(closed) >= 80 - room                  # the rest held (until the handshake limit)
            assert len(os.listdir(f"/proc/{pid}/fd")) < 64   # never at the limit for long
            assert server.wait_for_log("refused a connection from 127.0.0.1", 2.0), server.logs()
        finally:
            for s in socks:
                s.close()
        with DirectoryClient(server.address, timeout=5.0) as client:   # room again: served
            client.register("E", "after", "127.0.0.1:1")
            assert client.lookup("after") == ("E", "127.0.0.1:1", "")
    assert any(re.search(r"refused \d+ connections \(the last from 127.0.0.1\)", line) for line in server.logs()), \
        server.logs()


def test_the_heartbeat_option_and_its_bad_values():
    for bad in ("-1", "0.01", "nan", "7200"):
        r = subprocess.run([sys.executable, "-m", "pyzmq.server", "--port", "0", "--heartbeat", bad],
                           capture_output=True, text=True, timeout=20, env=child_env())
        assert r.returncode == 2 and "--heartbeat must be 0 (none) or 0.1 to 3600 seconds" in r.stderr, r.stderr
    with ServerProcess(extra_args=["--heartbeat", "0"]) as server:     # none: TCP keepalive only
        with DirectoryClient(server.address, timeout=5.0) as client:
            client.register("E", "beat", "127.0.0.1:1")
            assert client.lookup("beat") == ("E", "127.0.0.1:1", "")


def test_a_watcher_that_falls_behind_is_handled_once_per_outbox():
    """A full queue ends a watcher's watches once: the rest of its events
    in the same outbox are not tried (found in review: each failed send
    scanned every lease's watches again, so a lease of 10,000 names ending
    with one stopped `*` watcher held the loop for seconds).  Other
    clients' events in the same outbox still go."""
    from types import SimpleNamespace
    from pyzmq.server import Server

    behind, sent, dropped = [], [], []
    fake = SimpleNamespace(registry=SimpleNamespace(outbox=[]), _fell_behind=behind.append,
                           _dropped=lambda what, why: dropped.append((what, why)))
    fake.registry.outbox += [(b"stuck", b"h", b"e%d" % i) for i in range(10_000)]
    fake.registry.outbox += [(b"fine", b"h", b"e")]

    def send(event):
        if event[0] == b"stuck":
            return False
        sent.append(event)
        return True

    Server._send_outbox(fake, send)
    assert behind == [b"stuck"]
    assert sent == [(b"fine", b"h", b"e")]
    assert dropped == [("event", "behind")] * 10_000     # none of them without a count
    assert fake.registry.outbox == []


def test_the_state_schedule_writes_soon_and_boundedly():
    """StateSchedule (no I/O, times passed in): a change is written soon;
    a stream of changes makes a bounded number of writes, fewer when a
    write takes long; a failed write is tried again later."""
    from pyzmq.server import StateSchedule
    s = StateSchedule(saved=0, delay=0.05, min_gap=0.1, share=0.2, retry=1.0)
    assert s.due(0, 0.0) is None                     # nothing changed
    assert s.due(1, 10.0) == 10.05                   # a change: soon
    assert s.due(3, 10.04) == 10.05                  # more changes meanwhile: the same write
    s.start(3, 10.05)
    assert s.due(4, 10.06) is None                   # one write at a time
    s.done(True, 10.06)
    assert s.saved == 3
    assert s.due(4, 10.07) == 10.15                  # the next no sooner than min_gap after the last began
    # under a stream of changes, every 1 ms for 10 s, writes that take 1 ms:
    # about one every min_gap, not one per change
    s = StateSchedule(delay=0.05, min_gap=0.1, share=0.2)
    writes, changes, now, due = 0, 0, 0.0, None
    while now < 10.0:
        changes += 1
        if due is None:
            due = s.due(changes, now)
        if due is not None and now >= due:
            s.start(changes, now)
            s.done(True, now + 0.001)
            writes, due = writes + 1, None
        now += 0.001
    assert 80 <= writes <= 100, writes
    # writes that take 0.1 s: at most a fifth of the time goes to them
    s = StateSchedule(delay=0.05, min_gap=0.1, share=0.2)
    s.start(1, 0.0)
    s.done(True, 0.1)
    assert s.due(2, 0.1) == 0.5
    s.start(2, 0.5)
    s.done(False, 0.6)                               # failed: again after retry, the change still unsaved
    assert s.saved == 1 and s.due(2, 0.6) == 1.6


def test_a_connection_to_shut_with_no_fd_left_is_shut_at_a_later_sweep():
    """The shut of a watcher that fell behind is what tells its client, so
    when no fd is left to check and shut its connection through (the
    open-files limit, no spare left either) it waits for a later sweep
    instead of being skipped (before, the watches ended and the client was
    never told).  Real sockets, in a child whose fds are all taken."""
    code = r"""
import os, resource, socket
from pyzmq.server import Server, Conn
server = Server()
a, b = socket.socketpair()
conn = Conn(a.fileno(), 0.0)
conn.peer, conn.address, conn.confirmed = a.getpeername(), "local", True
server.conns.fds[conn.fd] = conn
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
fill = []
try:
    while True:
        fill.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
server._shut_conn(conn)
print("waiting" if conn in server._to_shut and not conn.shut else "not kept")
b.setblocking(False)
try:
    print("open" if b.recv(1) is None else "closed")
except BlockingIOError:
    print("open")
os.close(fill.pop())
server._shut_later()
b.setblocking(True)
b.settimeout(5)
print("shut" if b.recv(1) == b"" and conn.shut and not server._to_shut else "not shut")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=child_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["waiting", "open", "shut"], (r.stdout, r.stderr)


def test_a_client_whose_replies_do_not_fit_its_queue_is_disconnected_not_left_waiting():
    """A client that sends requests and reads none (a stopped process; here
    a raw DEALER pipelining LISTs of big replies) fills its queue
    (--max-queued): the server dropped the rest of its replies without a
    word, so whatever it waited for never came, and it could not tell a
    lost reply from a slow one.  Now the first reply that does not fit
    shuts its connection (logged): the client sees the disconnection, and
    a DirectoryClient sends its unanswered requests again on the next
    connection."""
    with ServerProcess(quiet=True, extra_args=["--max-queued", "200"]) as server:    # (the smallest allowed)
        with DirectoryClient(server.address, timeout=5.0) as owner:
            _register_big_names(owner)
            got, shut = _flood_lists_unread(server, 3000)
            assert shut, f"the server kept the connection of a client it could not answer ({got})"
            assert got < 3000
            assert owner.lookup(BIG_NAME % 0) == ("E", "127.0.0.1:1", "")   # others still served


BIG_NAME = "big.%03d." + "x" * 200


def _register_big_names(owner):
    """100 names whose LIST (big.*) is a reply of about 25 KB."""
    for i in range(100):
        owner.register("E", BIG_NAME % i, "127.0.0.1:1")


def _flood_lists_unread(server, count):
    """A raw DEALER pipelines count LISTs of the big names and reads none
    (75 MB for 3,000: past every buffer) until the server logs that it
    dropped a reply; then it reads what had come, as a stopped client
    running again would, until it sees its connection end (30 s at most).
    Returns (replies read, whether the connection was shut)."""
    import zmq
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = 0
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(f"tcp://{server.address}")
        for i in range(count):
            sock.send_multipart([p.encode_header(i + 1), p.encode_request(p.List("big.*", "", 1000))])
        assert wait_until(lambda: any("fell 200 messages behind (--max-queued): a reply to it was "
                                      "dropped" in line for line in server.logs()), 20), server.logs()[-5:]
        got, deadline = 0, time.monotonic() + 30
        while not monitor.poll(0) and time.monotonic() < deadline:
            if sock.poll(100):
                sock.recv_multipart()
                got += 1
        shut = bool(monitor.poll(0))
        sock.close(linger=0)    # (before its DEALER connects again and sends the rest)
        return got, shut
    finally:
        ctx.destroy(linger=0)


def test_a_max_queued_below_a_clients_window_is_refused_at_the_start():
    # A DirectoryClient keeps up to 100 requests in flight (the names it
    # registers again under a new lease go in waves of 100); a server whose
    # --max-queued could not hold their replies shut the client's connection
    # at each burst, and the client reconnected, sent again, and was shut
    # again (with --max-queued 10: 10-20 s of that for 5,000 names).  Such a
    # value is now refused at the start, saying why and what to give.
    for bad in ("10", "199", "0"):
        r = subprocess.run([sys.executable, "-m", "pyzmq.server", "--port", "0", "--max-queued", bad],
                           capture_output=True, text=True, timeout=20, env=child_env())
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert f"--max-queued {bad} is too small" in r.stderr and "at least 200" in r.stderr, r.stderr
    with ServerProcess(quiet=True, extra_args=["--max-queued", "200"]) as server:
        with DirectoryClient(server.address, timeout=5.0) as client:
            for i in range(300):        # (three waves of the keeper's window)
                client.register("E", f"q.{i}", "127.0.0.1:1")
            server.kill()
            server.start()
            with DirectoryClient(server.address, timeout=5.0, lease=False) as reader:
                assert wait_until(lambda: len(reader.list("q.*")) == 300, 20), "the names did not come back"
            assert client.reconnects == 1, "the client was disconnected again after the restart"


def _scrape(url):
    import urllib.request
    values = {}
    for row in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
        if row and not row.startswith("#"):
            metric, value = row.rsplit(" ", 1)
            values[metric] = float(value)
    return values


def test_every_reply_the_server_does_not_send_is_counted():
    # The server counted (and logged) only the first reply that did not fit
    # a client's queue: the replies dropped after it, while that connection
    # was being shut, and every reply or event for a connection already
    # gone, left no trace on the server's side.  Now each one is counted:
    # zmq_directory_dropped_total{what="reply"|"event", why="behind"|"gone"}
    # (a reply to a connection gone is counted the same way; when the server
    # sees the peer gone before it answers is up to libzmq's timing, so that
    # row is not asserted here).
    import re
    with ServerProcess(quiet=True, extra_args=["--max-queued", "200", "--metrics", "127.0.0.1:0"]) as server:
        url = re.search(r"(http://\S+)", server.wait_for_log(r"metrics on http://", 5.0)).group(1)
        assert _scrape(url)['zmq_directory_dropped_total{what="reply",why="behind"}'] == 0
        with DirectoryClient(server.address, timeout=5.0) as owner:
            _register_big_names(owner)
            got, shut = _flood_lists_unread(server, 3000)   # behind: big LISTs, none read
            assert shut

            def counts():
                values = _scrape(url)
                return (values['zmq_directory_requests_total{result="ok",verb="LIST"}'],
                        values['zmq_directory_dropped_total{what="reply",why="behind"}'],
                        values['zmq_directory_dropped_total{what="reply",why="gone"}'],
                        values['zmq_directory_refusals_total{reason="reply_behind"}'])
            handled, behind, gone, shut = counts()
            print(f"\n{handled:.0f} LISTs handled, {got} replies read, {behind:.0f} dropped behind, "
                  f"{gone:.0f} gone, {shut:.0f} connection(s) shut")
            assert behind > shut >= 1               # a connection shut is logged once; each reply counted
            assert got + behind <= handled - gone   # (what was read was sent, not counted)
            assert owner.lookup(BIG_NAME % 0) == ("E", "127.0.0.1:1", "")
