"""DirectoryClient against a real zmq_server process over real TCP."""

import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pyzmq import protocol as p
from pyzmq.directory import DirectoryClient, DirectoryError, parse_hostname
from pyzmq.errors import Error, Timeout
from pyzmq.testing import ServerProcess
from helpers import TcpProxy, child_env, free_port, wait_until

KEY = "1/.@})TAeU!GLIwz*kUIbyZ=V!T=?.Y>QSnrwf*="  # a Z85 CURVE public key (40 characters)


def is_free(client, name):
    try:
        client.lookup(name)
    except DirectoryError as exc:
        return exc.code == p.NOT_FOUND
    return False


def is_registered(client, name):
    try:
        client.lookup(name)
        return True
    except Error:
        return False


@pytest.fixture
def client(directory):
    with DirectoryClient(directory, timeout=3.0) as c:
        yield c


# -- basics -------------------------------------------------------------------

def test_register_lookup_unregister_round_trip(client):
    client.register("E", "orders", "127.0.0.1:5555")
    client.register("Q", "jobs", "10.0.0.7:6000", key=KEY)
    assert client.lookup("orders") == ("E", "127.0.0.1:5555", "")
    assert client.lookup("jobs") == ("Q", "10.0.0.7:6000", KEY)
    assert client.names() == ["jobs", "orders"]
    client.unregister("orders")
    with pytest.raises(Error, match="no global object named 'orders'"):
        client.lookup("orders")
    assert client.lookup("jobs") == ("Q", "10.0.0.7:6000", KEY)
    assert client.names() == ["jobs"]


def test_unicode_name_round_trip(client):
    client.register("E", "prix-€-日本", "[::1]:7000")
    assert client.lookup("prix-€-日本") == ("E", "[::1]:7000", "")


def test_reregister_by_owner_replaces_record(client):
    client.register("E", "svc", "127.0.0.1:1000")
    client.register("Q", "svc", "127.0.0.1:2000")
    assert client.lookup("svc") == ("Q", "127.0.0.1:2000", "")


def test_ping_and_properties(client, directory):
    client.ping()
    assert client.connected
    assert client.address == directory
    assert client.local_ip == "127.0.0.1"


def test_lookup_unknown_name_error_text(client, directory):
    with pytest.raises(DirectoryError) as info:
        client.lookup("E")
    assert str(info.value) == f"no global object named 'E' in the directory at {directory}"
    assert info.value.code == p.NOT_FOUND
    assert isinstance(info.value, Error)


def test_invalid_arguments_are_refused_before_sending(client):
    with pytest.raises(ValueError, match="kind"):
        client.register("X", "n", "127.0.0.1:1")
    with pytest.raises(ValueError, match="wildcard"):
        client.register("E", "n", "0.0.0.0:1")
    with pytest.raises(ValueError, match="255"):
        client.register("E", "n" * 256, "127.0.0.1:1")
    with pytest.raises(ValueError, match="Z85"):
        client.register("E", "n", "127.0.0.1:1", key="short")
    with pytest.raises(TypeError):
        client.lookup(b"bytes")
    client.ping()  # the connection is untouched


# -- ownership ----------------------------------------------------------------

def test_duplicate_from_second_connection_is_refused(directory, client):
    client.register("E", "E", "127.0.0.1:5555")
    with DirectoryClient(directory, timeout=3.0) as other:
        with pytest.raises(DirectoryError) as info:
            other.register("E", "E", "127.0.0.1:6666")
        # both connections are this process's: it says so, and what to do
        assert str(info.value) == ("global name 'E' is already registered by another "
                                   "instance (in this process: close it first)")
        assert info.value.code == p.DUPLICATE
        assert other.names() == []
    assert client.lookup("E") == ("E", "127.0.0.1:5555", "")


def test_only_the_owner_may_unregister(directory, client):
    client.register("Q", "mine", "127.0.0.1:5555")
    with DirectoryClient(directory, timeout=3.0) as other:
        with pytest.raises(DirectoryError, match="cannot unregister 'mine': it is registered by another process") as info:
            other.unregister("mine")
        assert info.value.code == p.NOT_OWNER
        with pytest.raises(DirectoryError, match="no global object") as info:
            other.unregister("nobody")
        assert info.value.code == p.NOT_FOUND
    assert client.lookup("mine") == ("Q", "127.0.0.1:5555", "")
    client.unregister("mine")
    assert is_free(client, "mine")


def test_names_vanish_at_once_when_the_client_closes(directory, client):
    owner = DirectoryClient(directory, timeout=3.0)
    owner.register("E", "short-lived", "127.0.0.1:5555")
    owner.register("Q", "short-lived-q", "127.0.0.1:5556")
    assert is_registered(client, "short-lived")
    owner.close()   # revokes the lease: no waiting for it to expire
    assert is_free(client, "short-lived") and is_free(client, "short-lived-q")
    # ... and someone else may take them now.
    client.register("E", "short-lived", "127.0.0.1:7777")


OWNER = """
import sys, time
from pyzmq.directory import DirectoryClient
c = DirectoryClient(sys.argv[1], timeout=3.0, ttl=float(sys.argv[2]))
c.register("E", "doomed", "127.0.0.1:5555")
print("registered", c.lease_ttl, flush=True)
time.sleep(60)
"""


def start_owner(directory, ttl):
    child = subprocess.Popen([sys.executable, "-c", OWNER, directory, str(ttl)], stdout=subprocess.PIPE,
                             text=True, env=child_env())
    ready = []
    reader = threading.Thread(target=lambda: ready.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(10.0)
    assert ready and ready[0].startswith("registered"), "child did not register"
    return child, float(ready[0].split()[1])


def test_names_vanish_within_the_ttl_when_owner_process_is_killed(directory, client):
    child, ttl = start_owner(directory, p.DEFAULT_TTL)
    try:
        assert ttl == p.DEFAULT_TTL <= 5.0
        assert client.lookup("doomed") == ("E", "127.0.0.1:5555", "")
        child.send_signal(signal.SIGKILL)
        child.wait(5.0)
        started = time.monotonic()
        assert wait_until(lambda: is_free(client, "doomed"), 10.0), "name still held 10 s after SIGKILL"
        elapsed = time.monotonic() - started
        print(f"name freed {elapsed:.3f} s after SIGKILL (lease TTL {ttl:g} s)")
        assert elapsed < 5.0
    finally:
        child.kill()
        child.wait()


def test_an_owner_that_stops_renewing_loses_its_names_then_takes_them_back(directory, client):
    child, ttl = start_owner(directory, 1.0)
    try:
        assert ttl == 1.0
        time.sleep(3 * ttl)     # several TTLs: the keeper thread renews while the program sleeps
        assert client.lookup("doomed") == ("E", "127.0.0.1:5555", "")
        child.send_signal(signal.SIGSTOP)   # a frozen owner renews nothing
        started = time.monotonic()
        assert wait_until(lambda: is_free(client, "doomed"), 5.0), "a frozen owner kept its name"
        print(f"frozen owner's name freed after {time.monotonic() - started:.3f} s (TTL 1 s)")
        child.send_signal(signal.SIGCONT)   # it finds its lease gone, takes a new one, registers again
        assert wait_until(lambda: is_registered(client, "doomed"), 10.0), "the owner did not register again"
    finally:
        child.kill()
        child.wait()


def test_lease_ttl_is_asked_for_and_clamped(directory):
    with DirectoryClient(directory, timeout=3.0, ttl=2.5) as c:
        assert c.lease_ttl == 2.5
    with DirectoryClient(directory, timeout=3.0, ttl=0.01) as c:
        assert c.lease_ttl == p.MIN_TTL
    for bad, error in ((0, ValueError), (-1, ValueError), (float("nan"), ValueError), ("4", TypeError)):
        with pytest.raises(error, match="ttl"):
            DirectoryClient(directory, ttl=bad)


def test_server_max_ttl_bounds_leases():
    with ServerProcess(extra_args=["--max-ttl", "2"]) as server:
        with DirectoryClient(server.address, timeout=3.0, ttl=60) as c:
            assert c.lease_ttl == 2.0


# -- logs ---------------------------------------------------------------------

def test_server_logs_registration_and_removal(directory_server):
    with DirectoryClient(directory_server.address, timeout=3.0) as c:
        c.register("E", "logged", "127.0.0.1:5555")
        program = os.path.basename(sys.argv[0])
        peer = f"pid {os.getpid()} {program} on {socket.gethostname()} from 127.0.0.1"
        line = directory_server.wait_for_log(r"registered 'logged'", 5.0)
        assert line == f"zmq_server: registered 'logged' kind E at 127.0.0.1:5555 by {peer}"
        c.unregister("logged")
        line = directory_server.wait_for_log(r"removed 'logged'", 5.0)
        assert line == f"zmq_server: removed 'logged' kind E at 127.0.0.1:5555 by {peer} (unregistered)"


# -- connecting ---------------------------------------------------------------

@pytest.mark.parametrize("hostname, error", [
    ("", ValueError),
    ("   ", ValueError),
    (":5682", ValueError),
    ("host:", ValueError),
    ("host:0", ValueError),
    ("host:65536", ValueError),
    ("host:http", ValueError),
    ("host:-1", ValueError),
    ("a:b:c", ValueError),
    ("[::1", ValueError),
    ("[::1]x", ValueError),
    ("user@host:1", ValueError),
    (None, TypeError),
    (5682, TypeError),
    (b"localhost:5682", TypeError),
])
def test_malformed_hostname(hostname, error):
    with pytest.raises(error, match="hostname"):
        DirectoryClient(hostname, timeout=1.0)


@pytest.mark.parametrize("timeout, error", [(0, ValueError), (-1, ValueError), (float("nan"), ValueError),
                                            (float("inf"), ValueError), ("5", TypeError), (None, TypeError)])
def test_bad_timeout(directory, timeout, error):
    with pytest.raises(error, match="timeout"):
        DirectoryClient(directory, timeout=timeout)


def test_unregister_during_outage_succeeds(directory_server):
    """With the connection gone the directory no longer holds the name: nothing to wait for."""
    client = DirectoryClient(directory_server.address, timeout=0.5)
    try:
        client.register("E", "fleeting", "127.0.0.1:5555")
        directory_server.kill()
        assert wait_until(lambda: not client.connected, 3.0)
        client.unregister("fleeting")
        assert client.names() == []
        directory_server.start()
        assert wait_until(lambda: client.connected, 5.0)
        assert is_free(client, "fleeting")
    finally:
        client.close()


class CuttingProxy(TcpProxy):
    """A real TCP proxy between a client and the directory that, once armed
    with some bytes, cuts the connection that carries them: it passes that
    chunk on, drops what the server answers from then on, and closes both
    sides a moment later (the server has handled the request, its reply is
    lost).  New connections are closed at once until ``open`` is set again."""

    def __init__(self, upstream):
        self.armed = None
        self.cut = threading.Event()
        self.open = threading.Event()
        self.open.set()
        super().__init__(upstream)

    def admit(self):
        return self.open.is_set()

    def new_link(self):
        return {"dropping": False}

    def pump(self, src, dst, direction, link):
        while True:
            chunk = src.recv(65536)
            if not chunk:
                break
            if direction == "down" and link["dropping"]:
                continue
            if direction == "up" and self.armed is not None and self.armed in chunk:
                self.armed = None
                self.open.clear()
                link["dropping"] = True
                dst.sendall(chunk)
                time.sleep(0.3)     # (the server handles it; its answer is dropped)
                self.cut.set()
                break
            dst.sendall(chunk)


def test_an_unregister_sent_again_after_its_reply_was_lost_succeeds(directory):
    # The client sends a request again when the connection it went over
    # breaks before the answer.  An UNREGISTER whose first copy had already
    # withdrawn the name then met the name taken by someone else meanwhile
    # (NOT_OWNER): the caller got an error for an unregister that worked.
    proxy = CuttingProxy(directory)
    try:
        with DirectoryClient(proxy.address, timeout=10.0) as client, \
                DirectoryClient(directory, timeout=5.0) as other:
            client.register("E", "resent.unreg", "127.0.0.1:1")
            proxy.armed = b"resent.unreg"
            done = {}

            def unregister():
                try:
                    client.unregister("resent.unreg")
                    done["ok"] = True
                except Exception as exc:    # (reported below)
                    done["error"] = exc

            caller = threading.Thread(target=unregister)
            caller.start()
            assert proxy.cut.wait(5), "the UNREGISTER never went through the proxy"
            assert wait_until(lambda: is_free(other, "resent.unreg"), 5.0), "the first copy did not withdraw it"
            other.register("E", "resent.unreg", "127.0.0.1:2")     # taken before the copy sent again
            proxy.open.set()
            caller.join(15)
            assert not caller.is_alive()
            assert done == {"ok": True}, done
            assert client.names() == []
            assert other.lookup("resent.unreg") == ("E", "127.0.0.1:2", "")    # the other's, untouched
    finally:
        proxy.close()


def test_parse_hostname():
    assert parse_hostname("localhost") == ("localhost", 5682)
    assert parse_hostname("10.1.2.3:99") == ("10.1.2.3", 99)
    assert parse_hostname("[::1]:7000") == ("::1", 7000)
    assert parse_hostname("[::1]") == ("::1", 5682)


def test_refused_connection_fails_fast_naming_the_address():
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(Error, match=f"cannot reach the directory at {address}"):
        DirectoryClient(address, timeout=2.0)
    assert time.monotonic() - started < 1.0


def test_silent_directory_times_out_within_timeout():
    """A listener that accepts TCP but never answers HELLO: bounded by the timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(Timeout, match=f"directory at {address} accepted the connection but did not "
                                          "answer the ZeroMQ greeting within 0.7 s"):
            DirectoryClient(address, timeout=0.7)
        elapsed = time.monotonic() - started
        print(f"silent directory: failed after {elapsed:.3f} s (timeout 0.7 s)")
        assert 0.6 < elapsed < 1.5


def test_unroutable_directory_fails_within_timeout():
    # 10.255.255.1 is normally unroutable (SYN dropped) or unreachable at once;
    # a sandbox may even put a proxy there.  In every case the constructor must
    # give up within its timeout with an Error naming the address.
    started = time.monotonic()
    with pytest.raises(Error, match="10.255.255.1:5682"):
        DirectoryClient("10.255.255.1", timeout=1.0)
    elapsed = time.monotonic() - started
    print(f"unroutable directory: failed after {elapsed:.3f} s (timeout 1 s)")
    assert elapsed < 2.0


def test_foreign_server_is_reported():
    """Something that is not a zmq_server (here: an HTTP-like banner) is named as such."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def fake_http():
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                time.sleep(0.5)

        threading.Thread(target=fake_http, daemon=True).start()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(Error, match=f"server at {address} does not speak the directory protocol"):
            DirectoryClient(address, timeout=2.0)


def test_request_to_a_stalled_directory_times_out(directory_server):
    """The directory answers, then stops (SIGSTOP): a request gives up in time."""
    client = DirectoryClient(directory_server.address, timeout=0.8)
    try:
        os.kill(directory_server.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(Timeout, match="did not answer within 0.8 s"):
            client.lookup("anything")
        assert time.monotonic() - started < 1.5
    finally:
        os.kill(directory_server.pid, signal.SIGCONT)
        client.close()


# -- resilience ---------------------------------------------------------------

def test_server_restart_client_reconnects_and_reregisters(directory_server):
    owner = DirectoryClient(directory_server.address, timeout=2.0)
    try:
        owner.register("E", "survivor", "127.0.0.1:5555")
        owner.register("Q", "survivor-q", "127.0.0.1:5556", key=KEY)
        directory_server.kill()
        assert wait_until(lambda: not owner.connected, 3.0), "client did not notice the server died"
        directory_server.start()  # same port
        started = time.monotonic()
        with DirectoryClient(directory_server.address, timeout=2.0) as observer:
            assert wait_until(lambda: is_registered(observer, "survivor-q"), 5.0), \
                "names were not registered again after the restart"
            print(f"re-registered {time.monotonic() - started:.3f} s after restart")
            assert observer.lookup("survivor") == ("E", "127.0.0.1:5555", "")
            assert observer.lookup("survivor-q") == ("Q", "127.0.0.1:5556", KEY)
        assert owner.connected and owner.reconnects >= 1
        owner.unregister("survivor")  # still the owner on the new connection
    finally:
        owner.close()


def test_request_during_outage_fails_within_timeout_then_recovers(directory_server):
    client = DirectoryClient(directory_server.address, timeout=0.8)
    try:
        client.register("E", "patient", "127.0.0.1:5555")
        directory_server.kill()
        started = time.monotonic()
        with pytest.raises(Error, match=f"directory at {directory_server.address} is gone"):
            client.lookup("patient")
        assert time.monotonic() - started < 1.5
        directory_server.start()
        assert wait_until(lambda: client.connected, 5.0)
        assert client.lookup("patient") == ("E", "127.0.0.1:5555", "")
    finally:
        client.close()


def test_request_rides_over_a_quick_restart(directory_server):
    """A request sent on a dead connection is retried on a fresh one within its timeout."""
    client = DirectoryClient(directory_server.address, timeout=5.0)
    try:
        client.register("E", "rider", "127.0.0.1:5555")
        directory_server.kill()
        directory_server.start()
        assert client.lookup("rider") == ("E", "127.0.0.1:5555", "")
    finally:
        client.close()


def test_no_request_slips_onto_a_new_connection_before_the_lease_is_checked(directory_server, monkeypatch):
    """The keeper's monitor may see HANDSHAKE_SUCCEEDED after libzmq has
    already attached the new connection's pipe.  A request admitted in that
    window reached the restarted directory before the names were registered
    again (NOT_FOUND, about 1 run in 8).  Here the monitor never reports the
    new handshake at all, the widest such window: no request may reach the
    restarted directory then.  (With ZMQ_IMMEDIATE a send that the DEALER
    took counted as the link being up; without it, which the client now
    does, requests wait for the monitor, so this one says the directory is
    out of reach, never a NOT_FOUND from a directory that lacks the name.)"""
    import zmq
    import zmq.utils.monitor as zmon
    client = DirectoryClient(directory_server.address, timeout=2.0)
    try:
        client.register("E", "rider", "127.0.0.1:5555")
        real = zmon.recv_monitor_message
        lagging = threading.Event()

        def recv(sock, flags=0):
            while True:
                event = real(sock, flags)
                if not (lagging.is_set() and event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED):
                    return event

        monkeypatch.setattr(zmon, "recv_monitor_message", recv)
        lagging.set()
        directory_server.kill()
        assert wait_until(lambda: not client.connected, 3.0)
        directory_server.start()
        for _ in range(2):
            with pytest.raises(Error) as info:
                client.lookup("rider")
            assert not isinstance(info.value, DirectoryError), info.value
            assert "is gone" in str(info.value)
    finally:
        client.close()


_TORN_READ = """
import sys, time, zmq
from pyzmq import protocol as p
from pyzmq.directory import DirectoryClient
from pyzmq.testing import ServerProcess
with ServerProcess(quiet=True) as server:
    client = DirectoryClient(server.address, timeout=5.0)
    sock = client._sock
    with client._lock:              # (the keeper and direct calls wait: this thread reads the socket)
        try:
            while True:
                sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            pass                    # (a recv that finds nothing restarts libzmq's count of recvs)
        for i in range(50):
            sock.send_multipart([p.encode_header(900000 + i), p.encode_request(p.Ping())])
        deadline = time.monotonic() + 10
        while sock.poll(100) == 0 and time.monotonic() < deadline:
            pass
        time.sleep(0.3)             # (all 50 replies in)
        for i in range(49):
            sock.recv(zmq.NOBLOCK)
            sock.recv(zmq.NOBLOCK)
        sock.recv(zmq.NOBLOCK)      # the 99th recv: the first frame of the 50th reply
        server.kill()
        time.sleep(0.5)             # (libzmq's I/O thread sees the connection end)
        sock.recv(zmq.NOBLOCK)      # the 100th: libzmq handles its pending commands first
    print("read whole", flush=True)
    client.close()
"""


def test_a_reply_being_read_when_the_connection_drops_does_not_abort_the_client():
    # libzmq handles a socket's pending commands at every 100th recv, which
    # with the protocol's two-frame replies is always a second frame; with
    # ZMQ_IMMEDIATE, which the client's DEALER had, a connection that
    # dropped meanwhile ends the socket's pipe right then, between the two
    # frames, and libzmq aborts the process ("Assertion failed: !_more
    # (src/fq.cpp:80)", seen once under stress with many clients and a
    # server shutting their connections).  Here the client's own DEALER is
    # brought to that point on purpose.
    r = subprocess.run([sys.executable, "-c", _TORN_READ], capture_output=True, text=True, timeout=60,
                       env=child_env())
    assert r.returncode == 0 and "read whole" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])


def test_taken_name_is_dropped_on_reregistration(directory_server, caplog):
    first = DirectoryClient(directory_server.address, timeout=2.0)
    try:
        first.register("E", "contested", "127.0.0.1:1111")
        directory_server.kill()
        assert wait_until(lambda: not first.connected, 3.0)
        # Hold the keeper back while another process takes the name.
        with first._lock:
            directory_server.start()
            thief = DirectoryClient(directory_server.address, timeout=2.0)
            thief.register("E", "contested", "127.0.0.1:3333")
        try:
            assert wait_until(lambda: first.connected, 5.0)
            assert wait_until(lambda: "contested" not in first.names(), 2.0)
            assert thief.lookup("contested") == ("E", "127.0.0.1:3333", "")
            assert any("contested" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
        finally:
            thief.close()
    finally:
        first.close()


def test_close_is_idempotent_and_stops_the_thread(directory):
    client = DirectoryClient(directory, timeout=3.0)
    keeper = client._keeper
    assert keeper.daemon and keeper.is_alive()
    client.close()
    client.close()
    assert not keeper.is_alive()
    assert not client.connected and client.closed
    with pytest.raises(Error, match="closed"):
        client.ping()


def test_dropped_client_is_collected_and_its_thread_ends(directory):
    client = DirectoryClient(directory, timeout=3.0)
    keeper = client._keeper
    del client
    gc.collect()
    keeper.join(3.0)
    assert not keeper.is_alive()


def test_client_does_not_keep_the_interpreter_alive(directory):
    code = f"from pyzmq.directory import DirectoryClient; c = DirectoryClient({directory!r}); c.register('E', 'x', '127.0.0.1:1')"
    result = subprocess.run([sys.executable, "-c", code], env=child_env(), timeout=10, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_concurrent_requests_from_many_threads(client):
    errors = []

    def worker(n):
        try:
            for i in range(50):
                name = f"t{n}-{i}"
                client.register("E", name, f"127.0.0.1:{1000 + i}")
                assert client.lookup(name) == ("E", f"127.0.0.1:{1000 + i}", "")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(client.names()) == 400


# -- the server process -------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_server_exits_cleanly_on_signal(sig):
    server = ServerProcess().start()
    with DirectoryClient(server.address, timeout=2.0) as c:
        c.register("E", "bye", "127.0.0.1:5555")
        os.kill(server.pid, sig)
        assert server._proc.wait(5.0) == 0
    assert server.wait_for_log("zmq_server: stopped", 1.0)


def test_server_command_line():
    env = child_env()
    out = subprocess.run([sys.executable, "-m", "pyzmq.server", "--help"], env=env, capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0 and "--port" in out.stdout
    out = subprocess.run([sys.executable, "-m", "pyzmq.server", "--port", "70000"], env=env,
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "70000" in out.stderr


def test_server_reports_a_port_in_use(directory_server):
    with pytest.raises(Error, match="exited with status 1"):
        ServerProcess(port=directory_server.port, ready_timeout=5).start()


def test_an_interrupted_request_does_not_shift_later_replies(directory_server):
    # Ctrl-C between a request and its reply used to leave the reply unread:
    # the next request then got it as its own answer (A's record for B)
    import threading
    with DirectoryClient(directory_server.address, timeout=5.0) as c:
        c.register("E", "A", "127.0.0.1:1111")
        c.register("E", "B", "127.0.0.1:2222")
        os.kill(directory_server.pid, signal.SIGSTOP)
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        try:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                c.lookup("A")
        finally:
            timer.cancel()
            os.kill(directory_server.pid, signal.SIGCONT)
        assert c.lookup("B") == ("E", "127.0.0.1:2222", "")
        assert c.lookup("A") == ("E", "127.0.0.1:1111", "")


def test_idle_clients_do_not_spin(directory):
    """The keeper sleeps in poll when there is nothing to do (it once spun
    on its wake-up socket: 10 idle clients used 0.8 of a core)."""
    import resource
    clients = [DirectoryClient(directory, timeout=3.0) for _ in range(10)]
    try:
        time.sleep(0.3)
        before = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(2.0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"10 idle clients: {cpu:.3f} s of CPU in 2 s")
        assert cpu < 0.4
    finally:
        for c in clients:
            c.close()
