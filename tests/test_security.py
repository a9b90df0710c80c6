"""The attacks of issue 11, each against real processes and a real zmq_server
on loopback: a keyless squatter taking a CURVE name, a pinned key that does
not match, a stranger meeting an owner whose ZAP handler is gone, a name
lost while the directory connection was down."""

import errno
import logging
import os
import signal
import time

import pytest

import pyzmq
from pyzmq.directory import DirectoryClient
from helpers import COMMANDS, Peer

pytestmark = pytest.mark.skipif(not pyzmq._zmq.has("curve"), reason="libzmq without CURVE")


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def is_free(directory, name):
    with DirectoryClient(directory) as d:
        try:
            d.lookup(name)
        except pyzmq.Error:
            return True
    return False


# A queue owner: "orders" with the secret key argv[2] (or plain with "-"),
# at port argv[3] (0: a free one); prints every message it gets.
QUEUE_OWNER = """
import sys, pyzmq
secret = None if sys.argv[2] == "-" else sys.argv[2]
z = pyzmq.ZMQ(sys.argv[1], secret_key=secret)
z.create_queue("orders", pyzmq.SCOPE_GLOBAL, "127.0.0.1:" + sys.argv[3])
print("ready", z._objects["orders"].address, flush=True)
while True:
    print("got", z.receive().decode(), flush=True)
"""


def _bound_then_owner_killed(directory, z, eid, secret=None, **bind_kw):
    """Bind z's exchange to a CURVE owner's "orders", check one message
    arrives, then kill the owner and wait until the directory freed the name."""
    with Peer(QUEUE_OWNER, directory, secret or pyzmq.curve_keypair()[1], 0) as owner:
        owner.expect("ready")
        pyzmq.ZMQ.bind(z, "E", "orders", **bind_kw)    # the blocking form for asyncio's too
        assert (z.send_now if hasattr(z, "send_now") else z.send)(eid, b"first")
        assert owner.expect("got") == "first"
        owner.proc.kill()
        owner.proc.wait(5)
    assert wait_until(lambda: is_free(directory, "orders"), 10.0)


@pytest.mark.parametrize("squatter_key", ["none", "its own"])
def test_a_squatter_gets_nothing(directory, caplog, squatter_key):
    # Before the fix the binder's blocked send followed the squatter's
    # keyless record and its messages arrived there in plaintext (999 of
    # 1000 here), or, with a key of the squatter's own, encrypted to it.
    with pyzmq.ZMQ(directory, hwm=1) as z:
        eid = z.create_exchange("E")
        _bound_then_owner_killed(directory, z, eid)
        secret = "-" if squatter_key == "none" else pyzmq.curve_keypair()[1]
        with Peer(QUEUE_OWNER, directory, secret, 0) as squatter:
            squatter.expect("ready")
            timeout = None
            with caplog.at_level(logging.WARNING, logger="pyzmq.wiring"):
                try:
                    for i in range(1000):
                        z.send(eid, b"secret %d" % i, timeout=3.0)
                except pyzmq.Timeout as exc:
                    timeout = exc
            got = [line for line in squatter.remaining_lines(quiet_for=1.0) if line.startswith("got")]
            assert got == [], f"the squatter read {len(got)} messages: {got[:3]}"
    assert timeout is not None, "every send went somewhere"
    text = str(timeout)
    assert "'orders'" in text and "not followed" in text, text
    assert ("no CURVE key" if squatter_key == "none" else "not the key the binding was made with") in text
    refusals = [r for r in caplog.records if "'orders'" in r.getMessage() and "not followed" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
    assert refusals[0].levelno == logging.WARNING


def test_the_real_owner_back_on_another_port_is_followed(directory):
    # "same key only" still follows an owner that restarted elsewhere
    public, secret = pyzmq.curve_keypair()
    with pyzmq.ZMQ(directory, hwm=1) as z:
        eid = z.create_exchange("E")
        _bound_then_owner_killed(directory, z, eid, secret)
        with Peer(QUEUE_OWNER, directory, secret, 0) as owner:
            owner.expect("ready")
            for i in range(20):
                z.send(eid, b"m%d" % i, timeout=20)
            got = []
            while not got or got[-1] != "m19":
                got.append(owner.expect("got", timeout=20))


def test_follow_never_stays_put(directory):
    public, secret = pyzmq.curve_keypair()
    with pyzmq.ZMQ(directory, hwm=1) as z:
        eid = z.create_exchange("E")
        _bound_then_owner_killed(directory, z, eid, secret, follow="never")
        with Peer(QUEUE_OWNER, directory, secret, 0) as owner:
            owner.expect("ready")
            with pytest.raises(pyzmq.Timeout, match="follow='never'"):
                for i in range(1000):
                    z.send(eid, b"m%d" % i, timeout=2.5)
            assert not [l for l in owner.remaining_lines(quiet_for=0.5) if l.startswith("got")]


@pytest.mark.parametrize("owner", ["another key", "no key"])
def test_a_pinned_key_that_does_not_match_is_refused(directory, owner):
    pinned, _ = pyzmq.curve_keypair()
    secret = pyzmq.curve_keypair()[1] if owner == "another key" else "-"
    with Peer(QUEUE_OWNER, directory, secret, 0) as peer, pyzmq.ZMQ(directory) as z:
        peer.expect("ready")
        z.create_exchange("E")
        with pytest.raises(pyzmq.Error) as info:
            z.bind("E", "orders", key=pinned)
        assert info.value.errno == errno.EACCES
        assert "'orders'" in str(info.value) and pinned in str(info.value)
        assert z.bindings == []


def test_a_pinned_key_that_matches_binds_and_follows_only_that_key(directory):
    public, secret = pyzmq.curve_keypair()
    with pyzmq.ZMQ(directory, hwm=1) as z:
        eid = z.create_exchange("E")
        _bound_then_owner_killed(directory, z, eid, secret, key=public)
        with Peer(QUEUE_OWNER, directory, pyzmq.curve_keypair()[1], 0) as other:
            other.expect("ready")
            with pytest.raises(pyzmq.Timeout, match="not the pinned key"):
                for i in range(1000):
                    z.send(eid, b"m%d" % i, timeout=2.5)
            assert not [l for l in other.remaining_lines(quiet_for=0.5) if l.startswith("got")]


def test_require_curve_refuses_a_keyless_record_at_bind(directory):
    with Peer(QUEUE_OWNER, directory, "-", 0) as peer, \
            pyzmq.ZMQ(directory, require_curve=True) as z:
        peer.expect("ready")
        z.create_exchange("E")
        with pytest.raises(pyzmq.Error, match="requires CURVE") as info:
            z.bind("E", "orders")
        assert info.value.errno == errno.EACCES
        z.create_queue("mine")
        z.bind("E", "mine")             # its own objects need no key


def test_bind_arguments_are_checked(directory):
    with pyzmq.ZMQ(directory) as z:
        z.create_exchange("E")
        z.create_queue("Q")
        with pytest.raises(ValueError, match="follow must be one of"):
            z.bind("E", "Q", follow="sometimes")
        with pytest.raises(ValueError, match="40 Z85"):
            z.bind("E", "Q", key="short")
        with pytest.raises(ValueError, match="pins the name to one key"):
            z.bind("E", "Q", key=pyzmq.curve_keypair()[0], follow="any-key")
        with pytest.raises(ValueError, match="both this instance's own"):
            z.bind("E", "Q", key=pyzmq.curve_keypair()[0])


# -- ZAP fails closed -----------------------------------------------------------

# An owner that lets only argv[3] in, then stops its ZAP handler and keeps
# sending on its exchange ZE; prints what reaches its queue ZQ.
ZAPLESS_OWNER = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1], secret_key=sys.argv[2], allowed_keys=[sys.argv[3]])
e = z.create_exchange("ZE", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
z.create_queue("ZQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
pyzmq._zmq._zap_stop()
assert not pyzmq._zmq._zap_running()
print("stopped", flush=True)
i = 0
while True:
    z.serve(0.02)
    z.send(e, b"stranger-%d" % i, block=False)
    i += 1
    m = z.receive(block=False)
    if m is not None:
        print("got", m.decode(), flush=True)
"""


def test_with_the_zap_handler_stopped_a_stranger_is_refused(directory):
    # Before ZMQ_ZAP_ENFORCE_DOMAIN, libzmq admitted any key once the
    # handler was gone: the stranger's bind() returned and it read
    # b"stranger-N" from an owner that allowed only a friend.
    friend, _ = pyzmq.curve_keypair()
    with Peer(ZAPLESS_OWNER, directory, pyzmq.curve_keypair()[1], friend) as owner, \
            pyzmq.ZMQ(directory, secret_key=pyzmq.curve_keypair()[1], bind_timeout=2.0) as z:
        owner.expect("stopped")
        z.create_queue("mine")
        z.create_exchange("out")
        with pytest.raises(pyzmq.Error) as sub:
            z.bind("ZE", "mine")
        assert z.receive(block=False) is None
        with pytest.raises(pyzmq.Error) as push:
            z.bind("out", "ZQ")
        assert z.bindings == []
        assert not [l for l in owner.remaining_lines(quiet_for=0.5) if l.startswith("got")]
    print("refused:", sub.value, "|", push.value)


def _zap(domain, key, mechanism=b"CURVE", version=b"1.0", extra=()):
    return pyzmq._zmq._zap_request([version, b"7", domain, b"127.0.0.1", b"", mechanism, key, *extra])


def test_the_zap_handler_answers_what_it_cannot_handle_with_500_and_keeps_serving():
    friend, _ = pyzmq.curve_keypair()
    stranger, _ = pyzmq.curve_keypair()
    with pyzmq.ZMQ(secret_key=pyzmq.curve_keypair()[1], allowed_keys=[friend]) as z:
        domain = z._zap_domain
        raw = pyzmq._zmq._z85_decode(friend)
        reply = _zap(domain, raw)
        assert reply[:5] == [b"1.0", b"7", b"200", b"OK", friend.encode()]
        assert b"X-Pyzmq-Wiring-Zap" in reply[5]    # the mark Frame.sender_key looks for
        assert _zap(domain, pyzmq._zmq._z85_decode(stranger))[2] == b"400"
        assert _zap(b"not-ours", raw)[2] == b"400"
        for bad in (_zap(domain, raw, version=b"2.0"),
                    _zap(domain, raw, mechanism=b"PLAIN"),
                    _zap(domain, b"short"),
                    _zap(domain, raw, extra=[b"more"]),
                    pyzmq._zmq._zap_request([b"1.0", b"7"])):
            assert bad[2] == b"500", bad
            assert bad[1] in (b"7", b"")
        # an exception inside the handler (here a policy entry whose
        # comparison raises) is a 500 for that request, not a dead thread
        class Raises:
            def __hash__(self):
                return hash(raw)

            def __eq__(self, other):
                raise RuntimeError("boom")
        pyzmq._zmq._zap_allow(b"odd-domain", [Raises()])
        try:
            reply = _zap(b"odd-domain", raw)
            assert reply[2] == b"500" and b"RuntimeError" in reply[3], reply
        finally:
            pyzmq._zmq._zap_forget(b"odd-domain")
        assert pyzmq._zmq._zap_running()
        assert _zap(domain, raw)[2] == b"200"


SENDER = """
import sys, pyzmq
secret = None if sys.argv[2] == "-" else sys.argv[2]
z = pyzmq.ZMQ(sys.argv[1], secret_key=secret)
e = z.create_exchange("S")
z.bind("S", sys.argv[3])
z.send(e, b"hello")
print("sent", flush=True)
sys.stdin.readline()
"""


def test_the_owner_reads_the_senders_key(directory):
    public, secret = pyzmq.curve_keypair()
    with pyzmq.ZMQ(directory, secret_key=pyzmq.curve_keypair()[1]) as z, \
            pyzmq.ZMQ(directory) as plain:
        z.create_queue("KQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        plain.create_queue("PQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        with Peer(SENDER, directory, secret, "KQ") as peer:
            peer.expect("sent")
            frame = z.receive(timeout=10, copy=False)
            assert bytes(frame) == b"hello"
            assert frame.sender_key == public
        with Peer(SENDER, directory, "-", "PQ") as peer:
            peer.expect("sent")
            frame = plain.receive(timeout=10, copy=False)
            assert bytes(frame) == b"hello" and frame.sender_key is None


# -- a name lost while reconnecting ---------------------------------------------

LOSING_OWNER = COMMANDS + """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1], on_lost=lambda name, why: print("lost", name, "|", why, flush=True))
z.create_exchange("src")
z.create_queue("contested", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
while (c := next_command(z)) != "quit":
    try:
        if c == "bind":
            z.bind("src", "contested")
        else:
            z.create_queue("contested", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        print("ok", c, flush=True)
    except pyzmq.Error as e:
        print("error", e.errno, e, flush=True)
    print("lost-map", sorted(z.lost), flush=True)
"""


def test_a_name_lost_while_reconnecting_reaches_the_application(directory_server):
    # Before: only a log line; the owner went on as if it held the name.
    with Peer(LOSING_OWNER, directory_server.address) as owner:
        owner.expect("ready")
        os.kill(owner.proc.pid, signal.SIGSTOP)     # so the thief wins the race
        try:
            directory_server.kill()
            directory_server.start()
            thief = DirectoryClient(directory_server.address)
            thief.register("Q", "contested", "127.0.0.1:3333")
        finally:
            os.kill(owner.proc.pid, signal.SIGCONT)
        try:
            line = owner.expect("lost", timeout=15)
            assert line.startswith("contested |") and "another process" in line, line
            for command in ("bind", "create"):
                owner.tell(command)
                error = owner.expect("error")
                assert error.startswith(str(errno.EADDRINUSE)) and "'contested'" in error, error
                assert owner.expect("lost-map") == "['contested']"
            assert thief.lookup("contested") == ("Q", "127.0.0.1:3333", "")
        finally:
            thief.close()
        owner.tell("quit")
        assert owner.wait(10) == 0, owner.err()


# -- the directory keeps a keyed name for its key for a while -----------------

from pyzmq import protocol as proto             # noqa: E402
from pyzmq.server import Registry               # noqa: E402


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _lease(reg, peer, key):
    """A lease in ``reg`` held by a client whose CURVE key (its ZAP User-Id)
    is ``key``; None: a client of a plain directory, with no proven key."""
    return reg.grant(60.0, 0.0, program=peer, key=key, peer=peer)


def test_registry_holds_a_keyed_name_for_its_key_during_the_grace_period():
    alice_key, mallory_key = pyzmq.curve_keypair()[0], pyzmq.curve_keypair()[0]
    clock = Clock()
    reg = Registry(key_grace=30.0, clock=clock)
    owner = _lease(reg, "alice", alice_key)
    assert isinstance(reg.register(owner, "Q", "orders", "127.0.0.1:1", alice_key), proto.Ok)
    reg.drop(owner)                                 # the owner went away
    assert isinstance(reg.lookup("orders"), proto.ErrorReply)
    mallory = _lease(reg, "mallory", mallory_key)
    for key in ("", mallory_key):
        reply = reg.register(mallory, "Q", "orders", "127.0.0.1:2", key)
        assert isinstance(reply, proto.ErrorReply) and reply.code == proto.AUTH
        assert "held for the CURVE key" in reply.message
    clock.now += 29.0
    back = _lease(reg, "alice again", alice_key)   # the real owner restarting wins
    assert isinstance(reg.register(back, "Q", "orders", "127.0.0.1:3", alice_key), proto.Ok)
    assert reg.lookup("orders").address == "127.0.0.1:3"
    assert isinstance(reg.unregister(back, "orders"), proto.Ok)   # a clean exit holds it too
    assert reg.register(mallory, "Q", "orders", "127.0.0.1:2", "").code == proto.AUTH
    clock.now += 30.5                               # the grace period is over
    assert isinstance(reg.register(mallory, "Q", "orders", "127.0.0.1:2", ""), proto.Ok)
    assert reg.reserved == {}


def test_registry_holds_a_keyed_name_when_its_lease_expires():
    # With leases an owner that is killed, frozen or cut off does not
    # revoke: its lease expires.  The name must be held then too.
    alice_key, mallory_key = pyzmq.curve_keypair()[0], pyzmq.curve_keypair()[0]
    clock = Clock()
    reg = Registry(key_grace=30.0, clock=clock)
    owner = _lease(reg, "alice", alice_key)
    reg.register(owner, "Q", "orders", "127.0.0.1:1", alice_key)
    assert reg.expire(owner.expires + 0.1) == 1
    reply = reg.register(_lease(reg, "mallory", mallory_key), "Q", "orders", "127.0.0.1:2", mallory_key)
    assert isinstance(reply, proto.ErrorReply) and reply.code == proto.AUTH, reply
    assert isinstance(reg.register(_lease(reg, "alice again", alice_key), "Q", "orders",
                                   "127.0.0.1:3", alice_key), proto.Ok)


def test_registry_grace_applies_to_keyed_names_on_secure_connections_only():
    clock = Clock()
    reg = Registry(key_grace=30.0, clock=clock)
    key = pyzmq.curve_keypair()[0]
    plain = _lease(reg, "plain", None)             # key not proven: nothing to hold
    reg.register(plain, "Q", "a", "127.0.0.1:1", key)
    secure = _lease(reg, "s", key)
    reg.register(secure, "Q", "b", "127.0.0.1:1", "")   # registered without a key
    reg.drop(plain)
    reg.drop(secure)
    other = _lease(reg, "o", pyzmq.curve_keypair()[0])
    assert isinstance(reg.register(other, "Q", "a", "127.0.0.1:2", ""), proto.Ok)
    assert isinstance(reg.register(other, "Q", "b", "127.0.0.1:2", ""), proto.Ok)
    none = Registry(key_grace=0.0, clock=clock)
    secure = _lease(none, "s", key)
    other = _lease(none, "o", pyzmq.curve_keypair()[0])
    none.register(secure, "Q", "c", "127.0.0.1:1", key)
    none.drop(secure)
    assert isinstance(none.register(other, "Q", "c", "127.0.0.1:2", ""), proto.Ok)


def test_registry_holds_a_bounded_number_of_names():
    clock = Clock()
    reg = Registry(key_grace=30.0, clock=clock, max_reserved=3)
    key = pyzmq.curve_keypair()[0]
    conn = _lease(reg, "s", key)
    for i in range(5):
        reg.register(conn, "Q", f"n{i}", "127.0.0.1:1", key)
    reg.drop(conn)
    assert list(reg.reserved) == ["n2", "n3", "n4"]


def _write(path, text, mode):
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_a_squatter_cannot_take_a_keyed_name_on_a_secure_directory(tmp_path):
    server_pub, server_sec = pyzmq.curve_keypair()
    alice_pub, alice_sec = pyzmq.curve_keypair()
    mallory_pub, mallory_sec = pyzmq.curve_keypair()
    secret = _write(tmp_path / "server.key", server_sec + "\n", 0o600)
    allow = _write(tmp_path / "allow", f"{alice_pub}\n{mallory_pub}\n", 0o644)
    from pyzmq.testing import ServerProcess
    with ServerProcess(extra_args=["--curve-secret", secret, "--curve-allow", allow,
                                   "--key-grace", "3"]) as server:
        with pyzmq.ZMQ(server.address, directory_key=server_pub, secret_key=alice_sec) as owner:
            owner.create_queue("orders", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        started = time.monotonic()
        for keyless in (True, False):
            with pyzmq.ZMQ(server.address, directory_key=server_pub, secret_key=mallory_sec) as m:
                with pytest.raises(pyzmq.DirectoryError, match="held for the CURVE key") as info:
                    if keyless:
                        m._directory.register("Q", "orders", "127.0.0.1:9")   # keyless
                    else:
                        m.create_queue("orders", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
                assert info.value.code == proto.AUTH
        with pyzmq.ZMQ(server.address, directory_key=server_pub, secret_key=alice_sec) as owner:
            owner.create_queue("orders", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")   # its owner may
        assert time.monotonic() - started < 3.0
        time.sleep(3.2)
        with pyzmq.ZMQ(server.address, directory_key=server_pub, secret_key=mallory_sec) as m:
            m.create_queue("orders", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")        # after the grace
        assert server.wait_for_log("refused 'orders'")


def test_the_server_warns_about_weak_curve_settings(tmp_path):
    from pyzmq.testing import ServerProcess
    server_pub, server_sec = pyzmq.curve_keypair()
    secret = _write(tmp_path / "server.key", server_sec + "\n", 0o600)
    with ServerProcess(extra_args=["--curve-secret", secret]) as server:
        assert server.wait_for_log("without --curve-allow: any client key is admitted")
    allow = _write(tmp_path / "allow", pyzmq.curve_keypair()[0] + "\n", 0o666)
    with ServerProcess(extra_args=["--curve-secret", secret, "--curve-allow", allow]) as server:
        assert server.wait_for_log("writable by other users")
    os.chmod(allow, 0o644)
    with ServerProcess(extra_args=["--curve-secret", secret, "--curve-allow", allow]) as server:
        time.sleep(0.2)
        assert not [l for l in server.logs() if "warning" in l], server.logs()


# -- zmq_keygen never writes through a planted link -----------------------------

def _keygen(path):
    import subprocess
    import sys
    from pyzmq.testing import child_env
    return subprocess.run([sys.executable, "-m", "pyzmq.curve", str(path)], capture_output=True,
                          text=True, env=child_env(), timeout=20)


@pytest.mark.parametrize("planted", ["PATH.pub", "PATH", "dangling PATH.pub"])
def test_zmq_keygen_refuses_a_planted_symlink(tmp_path, planted):
    # Before: PATH.pub was opened with open("w") and the link was followed,
    # overwriting its target with the public key.
    target = tmp_path / "victim"
    target.write_text("precious\n")
    path = tmp_path / "id"
    link = tmp_path / ("id" if planted == "PATH" else "id.pub")
    link.symlink_to(target if not planted.startswith("dangling") else tmp_path / "nowhere")
    r = _keygen(path)
    assert r.returncode == 2 and "not overwriting" in r.stderr, r.stderr
    assert target.read_text() == "precious\n"
    assert not (tmp_path / "nowhere").exists()
    if planted != "PATH":
        assert not path.exists(), "a secret key without its .pub was left behind"


def test_zmq_keygen_writes_both_files_new(tmp_path):
    path = tmp_path / "id"
    r = _keygen(path)
    assert r.returncode == 0, r.stderr
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(str(path) + ".pub").st_mode & 0o777 == 0o644 & ~os.umask(os.umask(0))
    assert (tmp_path / "id.pub").read_text().strip() == r.stdout.strip()


# -- the receiving side and asyncio follow the same policy -------------------

EXCHANGE_OWNER = """
import sys, pyzmq
secret = None if sys.argv[2] == "-" else sys.argv[2]
z = pyzmq.ZMQ(sys.argv[1], secret_key=secret)
e = z.create_exchange("feed", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
while True:
    z.send(e, sys.argv[3].encode())
    z.serve(0.05)
"""


def test_a_keyless_exchange_squatter_cannot_inject(directory):
    with pyzmq.ZMQ(directory) as z:
        z.create_queue("mine")
        with Peer(EXCHANGE_OWNER, directory, pyzmq.curve_keypair()[1], "real") as owner:
            owner.expect("ready")
            z.bind("feed", "mine")
            assert z.receive(timeout=10) == b"real"
            owner.proc.kill()
            owner.proc.wait(5)
        assert wait_until(lambda: is_free(directory, "feed"), 10.0)
        while z.receive(block=False) is not None:
            pass
        with Peer(EXCHANGE_OWNER, directory, "-", "injected") as squatter:
            squatter.expect("ready")
            with pytest.raises(pyzmq.Timeout, match="'feed' was not followed") as info:
                while True:
                    assert z.receive(timeout=3.0) != b"injected"
    assert "no CURVE key" in str(info.value)


def test_asyncio_sends_do_not_follow_a_squatter_either(directory):
    import asyncio
    import pyzmq.asyncio

    async def main(z, eid):
        for i in range(1000):
            await z.send(eid, b"secret %d" % i, timeout=3.0)

    with pyzmq.asyncio.ZMQ(directory, hwm=1) as z:
        eid = pyzmq.ZMQ.create_exchange(z, "E")     # the blocking form, outside a loop
        _bound_then_owner_killed(directory, z, eid)
        with Peer(QUEUE_OWNER, directory, "-", 0) as squatter:
            squatter.expect("ready")
            with pytest.raises(pyzmq.Timeout, match="'orders' was not followed"):
                asyncio.run(main(z, eid))
            assert not [l for l in squatter.remaining_lines(quiet_for=0.5) if l.startswith("got")]


def test_a_failing_on_lost_callback_does_not_stop_the_directory_client(directory_server, caplog):
    calls = []

    def on_lost(name, why):
        calls.append((name, why))
        raise RuntimeError("the application's bug")

    first = DirectoryClient(directory_server.address, timeout=2.0, on_lost=on_lost)
    try:
        first.register("Q", "contested", "127.0.0.1:1111")
        first.register("Q", "kept", "127.0.0.1:1112")
        directory_server.kill()
        assert wait_until(lambda: not first.connected, 3.0)
        with first._lock:                       # hold the keeper back while a thief comes
            directory_server.start()
            thief = DirectoryClient(directory_server.address, timeout=2.0)
            thief.register("Q", "contested", "127.0.0.1:3333")
        try:
            assert wait_until(lambda: calls, 5.0)
            assert calls[0][0] == "contested" and "another process" in calls[0][1]
            assert list(first.lost) == ["contested"]
            assert first.names() == ["kept"]
            first.ping()                        # the client still works
            assert thief.lookup("kept") == ("Q", "127.0.0.1:1112", "")
            assert any("on_lost callback failed" in r.getMessage() for r in caplog.records)
        finally:
            thief.close()
    finally:
        first.close()
    with pytest.raises(TypeError, match="on_lost"):
        pyzmq.ZMQ(on_lost="not callable")


def test_a_flood_of_one_key_cannot_push_another_keys_name_out_of_the_grace_period():
    # Before: the table of held names dropped its oldest entry, whoever's
    # it was, so an allowed client that registered and released enough
    # names of its own (a few connections' worth: 10 x 10,000 on a real
    # zmq_server) freed the real owner's name within the grace period and
    # took it.  Here with small limits: 3 names a connection, 6 held.
    clock = Clock()
    reg = Registry(max_names=3, key_grace=30.0, clock=clock, max_reserved=6)
    alice_key, mallory_key = pyzmq.curve_keypair()[0], pyzmq.curve_keypair()[0]
    alice = _lease(reg, "alice", alice_key)
    reg.register(alice, "Q", "orders", "127.0.0.1:1", alice_key)
    reg.drop(alice)
    for round in range(4):                          # 12 names released by one key
        mallory = _lease(reg, f"mallory {round}", mallory_key)
        for i in range(3):
            assert isinstance(reg.register(mallory, "Q", f"junk{round}.{i}", "127.0.0.1:2",
                                           mallory_key), proto.Ok)
        reg.drop(mallory)
    assert len(reg.reserved) <= 6                   # still bounded
    mallory = _lease(reg, "mallory again", mallory_key)
    reply = reg.register(mallory, "Q", "orders", "127.0.0.1:2", mallory_key)
    assert isinstance(reply, proto.ErrorReply) and reply.code == proto.AUTH, reply
    back = _lease(reg, "alice again", alice_key)
    assert isinstance(reg.register(back, "Q", "orders", "127.0.0.1:3", alice_key), proto.Ok)


@pytest.mark.parametrize("record", ["no key", "another key"])
def test_binding_again_with_a_pinned_key_checks_it(directory, record):
    # Before: bind() of a pair already bound returned at once, so a
    # bind(..., key=K) after a plain bind() to a squatter's record said
    # nothing, and the binding, unpinned, kept sending to the squatter.
    pinned, _ = pyzmq.curve_keypair()
    secret = "-" if record == "no key" else pyzmq.curve_keypair()[1]
    with Peer(QUEUE_OWNER, directory, secret, 0) as squatter, pyzmq.ZMQ(directory) as z:
        squatter.expect("ready")
        z.create_exchange("E")
        z.bind("E", "orders")
        with pytest.raises(pyzmq.Error) as info:
            z.bind("E", "orders", key=pinned)
        assert info.value.errno == errno.EACCES
        assert "'orders'" in str(info.value) and pinned in str(info.value)
        with pytest.raises(ValueError, match="already bound to .orders. with follow="):
            z.bind("E", "orders", follow="never")


def test_binding_again_with_the_key_it_has_pins_it(directory):
    public, secret = pyzmq.curve_keypair()
    with Peer(QUEUE_OWNER, directory, secret, 0) as owner, pyzmq.ZMQ(directory) as z:
        owner.expect("ready")
        eid = z.create_exchange("E")
        z.bind("E", "orders")
        z.bind("E", "orders")                   # still nothing the second time
        z.bind("E", "orders", key=public)       # the key it was made with: now pinned
        z.bind("E", "orders", follow="same-key")
        assert z.bindings == [("E", "orders")]
        (remote,) = z._remote
        assert remote.pinned and remote.expected == public and remote.follow == "same-key"
        z.send(eid, b"hello")
        assert owner.expect("got") == "hello"


# -- Frame.sender_key is only what this process's ZAP handler said ------------

import socket       # noqa: E402
import struct       # noqa: E402
import threading    # noqa: E402

_NULL_GREETING = (b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
                  + b"\x00" * 32)   # ZMTP 3.0, NULL mechanism


def _zmtp_frame(flags, body):
    return bytes([flags]) + bytes([len(body)]) + body


def _ready(socket_type, claimed_user_id):
    props = b""
    for name, value in ((b"Socket-Type", socket_type), (b"User-Id", claimed_user_id)):
        props += bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
    return _zmtp_frame(0x04, b"\x05READY" + props)


def _recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            break
        data += more
    return data


def _read_frame(sock):
    head = _recv_exactly(sock, 2)
    if len(head) < 2:
        return None, None
    flags, size = head[0], head[1]
    if flags & 0x02:
        size = struct.unpack(">Q", head[1:] + _recv_exactly(sock, 7))[0]
    return flags, _recv_exactly(sock, size)


def test_a_plain_peer_cannot_claim_a_sender_key(directory):
    # Before: a peer's own ZMTP metadata (a User-Id property in its READY)
    # came back as Frame.sender_key on a plain listener, where no ZAP
    # handler speaks: any key the owner trusts could be claimed.
    trusted = pyzmq.curve_keypair()[0]
    with pyzmq.ZMQ(directory) as z:
        z.create_queue("Q", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        port = int(z._objects["Q"].address.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(_NULL_GREETING)
            _recv_exactly(s, 64)
            s.sendall(_ready(b"PUSH", trusted.encode()))
            _read_frame(s)                              # the owner's READY
            s.sendall(_zmtp_frame(0x00, b"forged"))
            frame = z.receive(timeout=5, copy=False)
            assert bytes(frame) == b"forged"
            assert frame.sender_key is None, "a plain peer chose its sender_key"


def test_a_remote_exchange_cannot_claim_a_sender_key(directory):
    # Before: on a CURVE instance, a message its queue got from a remote
    # exchange (through its SUB, a client: no ZAP there) carried whatever
    # User-Id the exchange's side put in its READY, so an exchange owner
    # could pass its messages off as a trusted writer's.
    trusted = pyzmq.curve_keypair()[0]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()

    def fake_exchange():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(_NULL_GREETING)
            _recv_exactly(conn, 64)
            conn.sendall(_ready(b"XPUB", trusted.encode()))
            while not done.is_set():
                flags, body = _read_frame(conn)
                if flags is None:
                    return
                if not flags & 0x04 and body[:1] == b"\x01" and len(body) > 1 + 10:
                    # a subscription to a sync topic: answer it, then "publish"
                    conn.sendall(_zmtp_frame(0x01, body[1:]) + _zmtp_frame(0x00, b""))
                    conn.sendall(_zmtp_frame(0x00, b"forged"))

    thread = threading.Thread(target=fake_exchange, daemon=True)
    thread.start()
    registrar = DirectoryClient(directory)
    try:
        registrar.register("E", "feed", f"127.0.0.1:{port}")
        with pyzmq.ZMQ(directory, secret_key=pyzmq.curve_keypair()[1]) as z:
            z.create_queue("mine")
            z.bind("feed", "mine")
            frame = z.receive(timeout=5, copy=False)
            assert bytes(frame) == b"forged"
            assert frame.sender_key is None, "a remote exchange chose the sender_key"
    finally:
        done.set()
        registrar.close()
        listener.close()
        thread.join(5)


# An exchange owner: "E1" with the secret key argv[2], sending all the time.
SENDING_EXCHANGE_OWNER = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1], secret_key=sys.argv[2])
e = z.create_exchange("E1", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
i = 0
while True:
    z.serve(0.05)
    z.send(e, b"secret-%d" % i, block=False)
    i += 1
"""


def test_a_relay_gives_a_squatter_nothing(directory):
    # a relay (both sides remote) never follows: a keyless squatter of its
    # queue's name, at another port or at the dead owner's own port, reads nothing
    with Peer(SENDING_EXCHANGE_OWNER, directory, pyzmq.curve_keypair()[1]) as exchange:
        exchange.expect("ready")
        with Peer(QUEUE_OWNER, directory, pyzmq.curve_keypair()[1], 0) as owner, \
                pyzmq.ZMQ(directory) as relay:
            port = owner.expect("ready").rsplit(":", 1)[1]
            relay.bind("E1", "orders")
            assert owner.expect("got").startswith("secret-")
            owner.proc.kill()
            owner.proc.wait(5)
            for where in ("0", port):
                assert wait_until(lambda: is_free(directory, "orders"), 10.0)
                with Peer(QUEUE_OWNER, directory, "-", where) as squatter:
                    squatter.expect("ready")
                    relay.serve(2.0)
                    got = [l for l in squatter.remaining_lines(quiet_for=0.5) if l.startswith("got")]
                    assert got == [], f"the squatter at port {where} read {got[:3]}"


def test_a_record_with_anothers_key_at_an_address_of_this_process_is_not_taken_inproc(directory):
    # Before: a record at an address that an instance of this process
    # listens on was reached through inproc, whatever key the record named.
    # A squatter on a plain directory registering "orders" with the real
    # owner's public key at the address of another instance's queue made a
    # pinned bind() deliver, unencrypted, into that other queue.
    owner_key = pyzmq.curve_keypair()[0]
    with pyzmq.ZMQ(directory) as other, pyzmq.ZMQ(directory, bind_timeout=2.0) as z:
        other.create_queue("private", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        address = other._objects["private"].address
        squatter = DirectoryClient(directory)
        try:
            squatter.register("Q", "orders", address, owner_key)
            eid = z.create_exchange("E")
            try:
                z.bind("E", "orders", key=owner_key)
            except pyzmq.Error:
                pass            # the listener there is not a CURVE server of that key
            else:
                z.send(eid, b"for the owner only", block=False)
            with pytest.raises(pyzmq.Timeout):
                got = other.receive(timeout=1.0)
                pytest.fail(f"another instance's queue got {got!r}")
        finally:
            squatter.close()


def test_registry_held_names_carry_over_a_restart_for_what_is_left_of_their_grace():
    # what zmq_server --state writes and reads back (the real restart is in
    # test_directory_secure.py): a hold keeps the rest of its grace period,
    # a registered keyed name gets a whole one from the restart
    alice_key, mallory_key = pyzmq.curve_keypair()[0], pyzmq.curve_keypair()[0]
    clock = Clock()
    reg = Registry(key_grace=30.0, clock=clock)
    owner = _lease(reg, "alice", alice_key)
    for name in ("gone", "live"):
        reg.register(owner, "Q", name, "127.0.0.1:1", alice_key)
    reg.register(owner, "Q", "keyless", "127.0.0.1:1", "")
    reg.unregister(owner, "gone")
    clock.now += 20.0                                   # 10 s of its grace left
    saved = reg.held_for_keys(wall=5000.0)
    assert sorted((n, k) for n, k, _ in saved) == [("gone", alice_key), ("live", alice_key)]
    restarted = Registry(key_grace=30.0, clock=clock)
    assert restarted.restore_held(saved, wall=5004.0) == 2     # back 4 s later: 6 s left for "gone"
    mallory = _lease(restarted, "mallory", mallory_key)
    clock.now += 5.0
    for name in ("gone", "live"):
        assert restarted.register(mallory, "Q", name, "127.0.0.1:2", mallory_key).code == proto.AUTH
    clock.now += 2.0                                    # "gone"'s grace is over, "live"'s goes on
    assert isinstance(restarted.register(mallory, "Q", "gone", "127.0.0.1:2", mallory_key), proto.Ok)
    assert restarted.register(mallory, "Q", "live", "127.0.0.1:2", mallory_key).code == proto.AUTH
    assert restarted.restore_held([["late", alice_key, 4000.0]], wall=5004.0) == 0   # over already
