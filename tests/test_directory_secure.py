"""The secure directory connection (CURVE handshake, sealed frames), end to end:
a real zmq_server started with --curve-secret/--curve-allow, real clients,
and a real TCP proxy in between where a test needs to watch or tamper."""

import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import pyzmq
from pyzmq import dirsecure
from pyzmq import protocol as p
from pyzmq.directory import DirectoryClient, DirectoryError
from pyzmq.testing import ServerProcess
from helpers import COMMANDS, ROOT, Peer, child_env

pytestmark = pytest.mark.skipif(not pyzmq._zmq.has("curve"), reason="libzmq without CURVE")


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def keys():
    """Keypairs (public, secret) of the server and of two clients."""
    return {name: pyzmq.curve_keypair() for name in ("server", "alice", "mallory")}


@pytest.fixture
def secure_server(tmp_path, keys):
    """A zmq_server with a secret key that admits alice only."""
    secret = write(tmp_path / "server.key", keys["server"][1] + "\n")
    allow = write(tmp_path / "allow", f"# who may use this directory\n\n{keys['alice'][0]}\n", 0o644)
    server = ServerProcess(extra_args=["--curve-secret", secret, "--curve-allow", allow])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def alice(server, keys, **kw):
    return DirectoryClient(server.address, server_key=keys["server"][0], secret_key=keys["alice"][1], **kw)


class FrameProxy:
    """A TCP proxy that forwards whole frames and lets a test watch or change them.

    ``edit(direction, index, body)`` ("up" is client to server) returns the
    list of bodies to forward in its place; every byte passed is recorded.
    """

    def __init__(self, upstream, edit=None):
        self.upstream = upstream
        self.edit = edit or (lambda direction, index, body: [body])
        self.recorded = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.upstream.rsplit(":", 1)
            up = socket.create_connection((host, int(port)))
            for src, dst, direction in ((down, up, "up"), (up, down, "down")):
                threading.Thread(target=self._pump, args=(src, dst, direction), daemon=True).start()

    def _pump(self, src, dst, direction):
        index = 0
        try:
            while True:
                header = self._exactly(src, 4)
                body = self._exactly(src, struct.unpack(">I", header)[0])
                for out in self.edit(direction, index, body):
                    frame = struct.pack(">I", len(out)) + out
                    self.recorded += frame
                    dst.sendall(frame)
                index += 1
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _exactly(sock, n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def close(self):
        # shutdown() wakes the accept() blocked in the other thread (close()
        # alone does not), so the acceptor ends with the proxy
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._acceptor.join(5)


# ---------------------------------------------------------------------------
# the handshake's outcomes

def test_allowed_client_registers_and_looks_up(secure_server, keys):
    assert secure_server.public_key == keys["server"][0]
    with alice(secure_server, keys) as c:
        assert c.secure
        c.register("E", "prices", "127.0.0.1:5555", keys["alice"][0])
        c.register("Q", "plain-queue", "127.0.0.1:5556")
        assert c.lookup("prices") == ("E", "127.0.0.1:5555", keys["alice"][0])
        assert c.lookup("plain-queue") == ("Q", "127.0.0.1:5556", "")
        c.unregister("prices")
        with pytest.raises(DirectoryError) as info:
            c.lookup("prices")
        assert info.value.code == p.NOT_FOUND
    assert secure_server.wait_for_log(f"registered 'prices' kind E at 127.0.0.1:5555 by 127.0.0.1")
    assert any(keys["alice"][0] in line for line in secure_server.logs())


def test_a_name_can_only_carry_the_connections_own_key(secure_server, keys):
    with alice(secure_server, keys) as c:
        with pytest.raises(DirectoryError) as info:
            c.register("E", "spoof", "127.0.0.1:5555", keys["mallory"][0])
        assert info.value.code == p.AUTH
        assert "own key" in str(info.value)


def test_client_key_not_on_the_list_is_refused(secure_server, keys):
    with pytest.raises(DirectoryError) as info:
        DirectoryClient(secure_server.address, server_key=keys["server"][0], secret_key=keys["mallory"][1])
    assert info.value.code == p.AUTH
    assert keys["mallory"][0] in str(info.value) and "not allowed" in str(info.value)
    # a key made on the spot is not on the list either
    with pytest.raises(DirectoryError):
        DirectoryClient(secure_server.address, server_key=keys["server"][0])
    assert secure_server.wait_for_log("refused 127.0.0.1")


def test_wrong_server_key_is_refused(secure_server, keys):
    # an impostor's key (or a typo): the client's HELLO cannot be opened, and
    # nothing the real server could say would open on the client side either
    with pytest.raises(DirectoryError) as info:
        DirectoryClient(secure_server.address, server_key=keys["mallory"][0], secret_key=keys["alice"][1])
    assert info.value.code == p.AUTH
    assert "wrong public key" in str(info.value)


def test_impostor_server_cannot_prove_the_key(tmp_path, keys):
    # A server with another secret key, even one admitting everybody, cannot
    # make a WELCOME the client opens: the client refuses to go on.
    with ServerProcess(extra_args=["--curve-secret", write(tmp_path / "k", keys["mallory"][1])]) as impostor:
        with pytest.raises(DirectoryError):
            DirectoryClient(impostor.address, server_key=keys["server"][0], secret_key=keys["alice"][1])


def test_plain_client_and_secure_server_say_so(secure_server, directory, keys):
    with pytest.raises(DirectoryError) as info:
        DirectoryClient(secure_server.address)
    assert info.value.code == p.BAD_HELLO
    assert "requires CURVE" in str(info.value)
    # the answer is not authenticated, so it must not suggest a key to trust
    assert keys["server"][0] not in str(info.value)
    with pytest.raises(DirectoryError) as info:
        DirectoryClient(directory, server_key=keys["server"][0])
    assert info.value.code == p.BAD_HELLO
    assert "does not use CURVE" in str(info.value)


def test_server_without_a_list_admits_any_key(tmp_path, keys):
    with ServerProcess(extra_args=["--curve-secret", write(tmp_path / "k", keys["server"][1])]) as server:
        with DirectoryClient(server.address, server_key=keys["server"][0]) as c:
            c.register("Q", "anyone", "127.0.0.1:6000")
            assert c.lookup("anyone")[0] == "Q"


def test_bad_arguments(keys, directory):
    with pytest.raises(ValueError, match="needs server_key"):
        DirectoryClient(directory, secret_key=keys["alice"][1])
    with pytest.raises(ValueError, match="directory_key"):
        DirectoryClient(directory, server_key="short")
    with pytest.raises(TypeError, match="directory_key"):
        DirectoryClient(directory, server_key=b"x" * 40)
    with pytest.raises(ValueError, match="needs a directory"):
        pyzmq.ZMQ(directory_key=keys["server"][0])


# ---------------------------------------------------------------------------
# what someone on the path sees and can do

def test_the_wire_carries_no_names_or_addresses(secure_server, directory, keys):
    for upstream, secure in ((secure_server.address, True), (directory, False)):
        proxy = FrameProxy(upstream)
        try:
            kw = dict(server_key=keys["server"][0], secret_key=keys["alice"][1]) if secure else {}
            with DirectoryClient(proxy.address, **kw) as c:
                c.register("Q", "secret-plans", "127.0.0.1:7777")
                assert c.lookup("secret-plans")[1] == "127.0.0.1:7777"
            time.sleep(0.05)
            seen = bytes(proxy.recorded)
            assert len(seen) > 100
            # the plain run proves the proxy sees the traffic at all
            assert (b"secret-plans" in seen) is not secure
            assert (b"127.0.0.1:7777" in seen) is not secure
        finally:
            proxy.close()


def test_a_changed_reply_is_never_accepted(secure_server, keys):
    with alice(secure_server, keys) as owner:
        owner.register("E", "target", "127.0.0.1:5555")

        def flip(direction, index, body):
            # after the handshake (WELCOME, READY), change one bit of every reply
            if direction == "down" and index >= 2:
                body = bytearray(body)
                body[-1] ^= 1
                body = bytes(body)
            return [body]

        proxy = FrameProxy(secure_server.address, flip)
        try:
            c = DirectoryClient(proxy.address, timeout=1.5, server_key=keys["server"][0],
                                secret_key=keys["alice"][1])
            try:
                with pytest.raises(pyzmq.Error):
                    c.lookup("target")
            finally:
                c.close()
        finally:
            proxy.close()
        assert owner.lookup("target") == ("E", "127.0.0.1:5555", "")   # the server kept serving


def test_a_replayed_request_ends_the_connection(secure_server, keys):
    with alice(secure_server, keys) as owner:
        owner.register("Q", "counted", "127.0.0.1:5555")

        def replay(direction, index, body):
            # the client's first sealed request (after CURVE_HELLO, INITIATE) arrives twice
            return [body, body] if direction == "up" and index == 2 else [body]

        proxy = FrameProxy(secure_server.address, replay)
        try:
            with DirectoryClient(proxy.address, server_key=keys["server"][0], secret_key=keys["alice"][1]) as c:
                assert c.lookup("counted")[1] == "127.0.0.1:5555"
                assert secure_server.wait_for_log("replayed, reordered or lost", timeout=5)
                # the client notices the drop, reconnects with a fresh handshake, goes on
                assert c.lookup("counted")[1] == "127.0.0.1:5555"
                assert c.reconnects >= 1
        finally:
            proxy.close()


def test_garbage_in_handshakes_and_sealed_frames(secure_server, keys):
    rng = random.Random(6)
    addr = ("127.0.0.1", secure_server.port)

    def frame(body):
        return struct.pack(">I", len(body)) + body

    def read_frame(sock):
        sock.settimeout(5)
        header = FrameProxy._exactly(sock, 4)
        return FrameProxy._exactly(sock, struct.unpack(">I", header)[0])

    hello_len = 1 + 4 + 1 + 32 + 8 + 64 + 16
    for i in range(300):
        with socket.create_connection(addr) as s:
            kind = i % 4
            if kind == 0:      # random bytes of a CURVE_HELLO's length
                s.sendall(frame(bytes([p.CURVE_HELLO]) + rng.randbytes(hello_len - 1)))
            elif kind == 1:    # a real HELLO, then a random INITIATE
                shake = dirsecure.ClientHandshake(dirsecure.decode_key(keys["server"][0], "k"),
                                                  dirsecure.decode_key(keys["alice"][1], "k"))
                s.sendall(frame(shake.hello()))
                assert read_frame(s)[0] == p.WELCOME
                s.sendall(frame(bytes([p.INITIATE]) + rng.randbytes(rng.randrange(1, 300))))
            elif kind == 2:    # truncated CURVE_HELLO
                s.sendall(frame(bytes([p.CURVE_HELLO]) + rng.randbytes(rng.randrange(0, hello_len))))
            else:              # a full handshake, then a random sealed frame
                shake = dirsecure.ClientHandshake(dirsecure.decode_key(keys["server"][0], "k"),
                                                  dirsecure.decode_key(keys["alice"][1], "k"))
                s.sendall(frame(shake.hello()))
                s.sendall(frame(shake.initiate(read_frame(s))))
                shake.ready(read_frame(s))
                s.sendall(frame(bytes([p.BOX]) + rng.randbytes(rng.randrange(1, 200))))
            # every such connection is answered with an error or closed: it never hangs
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    with alice(secure_server, keys) as c:   # still serving well-formed clients
        c.register("Q", "after-garbage", "127.0.0.1:5555")
        assert c.lookup("after-garbage")[0] == "Q"


# ---------------------------------------------------------------------------
# restarts, the command line, the wiring layer

def test_reconnect_after_restart_runs_a_new_handshake(secure_server, keys):
    with alice(secure_server, keys) as c:
        c.register("E", "survivor", "127.0.0.1:5555")
        secure_server.kill()
        secure_server.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and c.reconnects == 0:
            time.sleep(0.05)
        assert c.reconnects >= 1
        with alice(secure_server, keys) as other:
            # registered again by the keeper, on a fresh secure connection
            assert other.lookup("survivor") == ("E", "127.0.0.1:5555", "")


def run_server(*args):
    env = child_env()
    return subprocess.run([sys.executable, "-m", "pyzmq.server", "--port", "0", *args],
                          capture_output=True, text=True, timeout=20, env=env)


def test_command_line_errors(tmp_path, keys):
    r = run_server("--curve-allow", write(tmp_path / "a", keys["alice"][0]))
    assert r.returncode == 2 and "--curve-allow needs --curve-secret" in r.stderr
    r = run_server("--curve-secret", write(tmp_path / "bad", "not a key\n"))
    assert r.returncode == 2 and "bad line 1" in r.stderr
    r = run_server("--curve-secret", str(tmp_path / "missing"))
    assert r.returncode == 2 and "missing" in r.stderr
    two = write(tmp_path / "two", keys["alice"][1] + "\n" + keys["server"][1] + "\n")
    r = run_server("--curve-secret", two)
    assert r.returncode == 2 and "expected one key, found 2" in r.stderr
    r = run_server("--curve-secret", write(tmp_path / "k", keys["server"][1]),
                   "--curve-allow", write(tmp_path / "none", "# nobody yet\n"))
    assert r.returncode == 2 and "lists no keys" in r.stderr


def test_key_files_with_hash_keys_and_comments(tmp_path):
    # '#' is a Z85 character (never a key's first one): it may sit inside a key
    while True:
        public, secret = pyzmq.curve_keypair()
        if "#" in public:
            break
    allow = write(tmp_path / "allow", f"# a comment, then a key holding '#'\n  {public}  \n\n")
    server_public, server_secret = pyzmq.curve_keypair()
    with ServerProcess(extra_args=["--curve-secret", write(tmp_path / "k", server_secret),
                                   "--curve-allow", allow]) as server:
        with DirectoryClient(server.address, server_key=server_public, secret_key=secret) as c:
            c.ping()


def test_world_readable_secret_is_warned_about(tmp_path, keys):
    with ServerProcess(extra_args=["--curve-secret", write(tmp_path / "k", keys["server"][1], 0o644)]) as server:
        assert server.wait_for_log("readable by other users")


def test_zmq_keygen_writes_a_private_keypair(tmp_path):
    path = tmp_path / "id"
    env = child_env()
    r = subprocess.run([sys.executable, "-m", "pyzmq.curve", str(path)], capture_output=True, text=True,
                       env=env, timeout=20)
    assert r.returncode == 0, r.stderr
    secret = path.read_text().strip()
    assert pyzmq.curve_public(secret) == r.stdout.strip() == (tmp_path / "id.pub").read_text().strip()
    assert os.stat(path).st_mode & 0o777 == 0o600
    r = subprocess.run([sys.executable, "-m", "pyzmq.curve", str(path)], capture_output=True, text=True,
                       env=env, timeout=20)
    assert r.returncode == 2 and "not overwriting" in r.stderr
    assert path.read_text().strip() == secret


OWNER = COMMANDS + """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1], directory_key=sys.argv[2], secret_key=sys.argv[3], allowed_keys=[sys.argv[4]])
e = z.create_exchange("feed", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
while (line := next_command(z)) != "quit":
    z.send(e, line.encode())
z.close()
"""


def test_wiring_over_a_secure_directory(secure_server, keys, tmp_path):
    # the owner is alice; bob (a second process of alice's) reads her feed
    with Peer(OWNER, secure_server.address, keys["server"][0], keys["alice"][1], keys["alice"][0]) as owner:
        owner.expect("ready")
        z = pyzmq.ZMQ(secure_server.address, directory_key=keys["server"][0], secret_key=keys["alice"][1])
        try:
            z.create_queue("in")
            z.bind("feed", "in")
            owner.tell("hello")
            assert z.receive(timeout=10) == b"hello"
        finally:
            z.close()
        # mallory is not even let into the directory
        with pytest.raises(DirectoryError) as info:
            pyzmq.ZMQ(secure_server.address, directory_key=keys["server"][0], secret_key=keys["mallory"][1])
        assert info.value.code == p.AUTH
        owner.tell("quit")
        assert owner.wait() == 0, owner.err()


# ---------------------------------------------------------------------------
# the channel itself (pure code: our framing over libsodium's boxes)

def pair():
    server_public, server_secret = dirsecure.keypair()
    client_public, client_secret = dirsecure.keypair()
    client = dirsecure.ClientHandshake(server_public, client_secret)
    server = dirsecure.ServerHandshake(server_secret, {client_public})
    welcome = server.welcome(client.hello())
    ready, server_channel, who = server.ready(client.initiate(welcome))
    assert who == client_public
    return client.ready(ready), server_channel


def test_channel_round_trip_and_numbering():
    client, server = pair()
    for i in range(3):
        assert server.open(client.seal(b"req%d" % i)) == b"req%d" % i
        assert client.open(server.seal(b"rep%d" % i)) == b"rep%d" % i


@pytest.mark.parametrize("attack", ["replay", "reorder", "reflect", "flip", "plain", "short"])
def test_channel_refuses(attack):
    client, server = pair()
    first, second = client.seal(b"one"), client.seal(b"two")
    frames = {
        "replay": [first, first],
        "reorder": [second],
        "reflect": [server.seal(b"mine")],
        "flip": [first[:-1] + bytes([first[-1] ^ 0x80])],
        "plain": [p.encode_request(p.Ping())],
        "short": [bytes([p.BOX]) + b"\0" * 8],
    }[attack]
    with pytest.raises(p.ProtocolError) as info:
        for body in frames:
            server.open(body)
    assert info.value.code == p.AUTH


# ---------------------------------------------------------------------------
# each proof in the handshake is checked (these fail if a check is removed)

def raw(key):
    return dirsecure.decode_key(key, "key")


def send_frame(sock, body):
    sock.sendall(struct.pack(">I", len(body)) + body)


def read_frame(sock):
    sock.settimeout(5)
    header = FrameProxy._exactly(sock, 4)
    return FrameProxy._exactly(sock, struct.unpack(">I", header)[0])


def test_a_welcome_not_made_with_the_servers_key_is_refused(keys):
    # Someone in between answers the client's HELLO with a well-formed
    # WELCOME made with their own key: the client must not go on.
    from pyzmq import _box
    listener = socket.create_server(("127.0.0.1", 0))

    def impostor():
        conn, _ = listener.accept()
        with conn:
            hello = read_frame(conn)
            client_eph = hello[6:38]
            key = _box.shared_key(client_eph, raw(keys["mallory"][1]))
            eph_public, _ = _box.keypair()
            nonce = os.urandom(8)
            send_frame(conn, bytes([p.WELCOME]) + nonce + _box.seal(key, dirsecure._N_WELCOME + nonce, eph_public))
            try:
                read_frame(conn)    # an INITIATE here would mean the client went on
                went_on.append(True)
            except OSError:
                pass

    went_on = []
    t = threading.Thread(target=impostor, daemon=True)
    t.start()
    try:
        with pytest.raises(DirectoryError) as info:
            DirectoryClient(f"127.0.0.1:{listener.getsockname()[1]}", timeout=3, server_key=keys["server"][0],
                            secret_key=keys["alice"][1])
        assert info.value.code == p.AUTH
        assert "WELCOME does not open" in str(info.value)
        t.join(5)
        assert not went_on
    finally:
        listener.close()


def test_a_changed_ready_is_refused(secure_server, keys):
    def flip_ready(direction, index, body):
        if direction == "down" and index == 1:
            body = body[:-1] + bytes([body[-1] ^ 1])
        return [body]

    proxy = FrameProxy(secure_server.address, flip_ready)
    try:
        with pytest.raises(DirectoryError) as info:
            alice(proxy, keys)
        assert info.value.code == p.AUTH and "READY does not open" in str(info.value)
    finally:
        proxy.close()


def handshake_until_initiate(server, keys, claimed_public, vouch_key, vouched_eph=None):
    """Run a handshake by hand, claiming ``claimed_public`` with a vouch sealed
    under ``vouch_key(server_eph, client_eph_secret)`` and naming
    ``vouched_eph`` (default: this connection's C'); return the server's answer."""
    from pyzmq import _box
    server_public = raw(keys["server"][0])
    eph_public, eph_secret = _box.keypair()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        to_server = _box.shared_key(server_public, eph_secret)
        nonce = os.urandom(8)
        send_frame(s, bytes([p.CURVE_HELLO]) + p.MAGIC + bytes([p.VERSION]) + eph_public + nonce
                   + _box.seal(to_server, dirsecure._N_HELLO + nonce, bytes(64)))
        welcome = read_frame(s)
        server_eph = _box.unseal(to_server, dirsecure._N_WELCOME + welcome[1:9], welcome[9:])
        session = _box.shared_key(server_eph, eph_secret)
        vouch_nonce = os.urandom(8)
        vouch = _box.seal(vouch_key(server_eph, eph_public), dirsecure._N_VOUCH + vouch_nonce,
                          (vouched_eph or eph_public) + server_public)
        nonce = os.urandom(8)
        send_frame(s, bytes([p.INITIATE]) + nonce
                   + _box.seal(session, dirsecure._N_INITIATE + nonce, claimed_public + vouch_nonce + vouch))
        return read_frame(s)


def test_the_vouch_must_be_made_with_the_claimed_key(secure_server, keys):
    from pyzmq import _box
    alice_public = raw(keys["alice"][0])
    # the honest vouch, for the record: READY
    assert handshake_until_initiate(
        secure_server, keys, alice_public,
        lambda server_eph, _: _box.shared_key(server_eph, raw(keys["alice"][1])))[0] == p.READY
    # mallory claims alice's key but can only vouch with her own
    answer = handshake_until_initiate(
        secure_server, keys, alice_public,
        lambda server_eph, _: _box.shared_key(server_eph, raw(keys["mallory"][1])))
    assert p.decode_reply(answer) == p.ErrorReply(p.AUTH, "the client does not prove that it holds the "
                                                          "secret key of the public key it presents")
    # a thief of the directory's own secret key cannot pose as alice either:
    # the vouch is boxed to the one-connection key S', which the thief lacks
    answer = handshake_until_initiate(
        secure_server, keys, alice_public,
        lambda server_eph, _: _box.shared_key(alice_public, raw(keys["server"][1])))
    assert p.decode_reply(answer).code == p.AUTH


def test_the_vouch_must_name_this_connection(secure_server, keys):
    # alice's genuine vouch, but for another connection's key C': refused
    from pyzmq import _box
    other_eph, _ = _box.keypair()
    answer = handshake_until_initiate(
        secure_server, keys, raw(keys["alice"][0]),
        lambda server_eph, _: _box.shared_key(server_eph, raw(keys["alice"][1])), vouched_eph=other_eph)
    assert p.decode_reply(answer).code == p.AUTH


def test_a_reflected_frame_with_the_right_command_byte_is_refused():
    client, server = pair()
    sealed = client.seal(b"ping")
    # sent back to the client as if from the server: same key, other label
    with pytest.raises(p.ProtocolError) as info:
        client.open(bytes([p.BOX_REPLY]) + sealed[1:])
    assert info.value.code == p.AUTH and "does not open" in str(info.value)


def test_a_refused_clients_key_is_not_sent_in_clear(secure_server, keys):
    proxy = FrameProxy(secure_server.address)
    try:
        with pytest.raises(DirectoryError) as info:
            DirectoryClient(proxy.address, server_key=keys["server"][0], secret_key=keys["mallory"][1])
        time.sleep(0.05)
        seen = bytes(proxy.recorded)
        assert b"not allowed" in seen                 # the refusal went through the proxy
        assert keys["mallory"][0].encode() not in seen and raw(keys["mallory"][0]) not in seen
        assert keys["mallory"][0] in str(info.value)  # the client names its own key
        assert secure_server.wait_for_log("key " + re.escape(keys["mallory"][0]) + " is not allowed")
    finally:
        proxy.close()


def test_refused_after_a_restart_backs_off_and_says_why(secure_server, keys, tmp_path, caplog):
    with alice(secure_server, keys, timeout=1.0) as c:
        c.register("Q", "mine", "127.0.0.1:5555")
        # the directory comes back with a list that no longer holds alice
        allow = write(tmp_path / "allow2", keys["mallory"][0] + "\n")
        secure_server.extra_args[-1] = allow
        secure_server.kill()
        with caplog.at_level("WARNING", logger="pyzmq.directory"):
            secure_server.start()
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and not secure_server.wait_for_log("is not allowed", 0.1):
                pass
            time.sleep(4)
            with pytest.raises(DirectoryError) as info:
                c.lookup("mine")
        assert info.value.code == p.AUTH and "not allowed" in str(info.value)
        refusals = [r for r in caplog.records if "not allowed" in r.getMessage()]
        assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
        attempts = sum(1 for line in secure_server.logs() if "is not allowed" in line)
        assert 1 <= attempts <= 4, attempts   # not one every half second


def test_directory_bench_prints_both_rows():
    # the script behind perf/README.md's plain-vs-CURVE figures still runs
    r = subprocess.run([sys.executable, str(ROOT / "perf" / "directory_bench.py"), "--connects", "3",
                        "--lookups", "50"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.split()}
    assert {"plain", "curve", "ratio"} <= set(rows), r.stdout
    assert re.match(r"curve\s+[\d.]+ ms\s+[\d.]+ ms\s+[\d,]+$", rows["curve"]), rows["curve"]
