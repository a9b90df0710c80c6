"""Errors that say what to do (issue 16, items 4 and 5): an unreachable
directory, a hostname with a scheme, a misspelt local name, a name held by
another instance of this process, keys read from files."""

import os
import socket
import subprocess
import sys

import pytest

import pyzmq
from pyzmq.testing import PeerProcess


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- an unreachable directory --------------------------------------------------

def test_unreachable_directory_is_public_and_says_what_to_do():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(pyzmq.DirectoryUnreachable) as info:
        pyzmq.ZMQ(address, timeout=2)
    assert isinstance(info.value, pyzmq.Error)
    text = str(info.value)
    assert address in text and "Connection refused" in text
    assert "zmq_server" in text and "pyzmq.Directory()" in text
    assert info.value.reason == "Connection refused"
    assert "DirectoryUnreachable" in pyzmq.__all__


def test_a_host_name_that_does_not_resolve_is_not_called_refused():
    """A misspelt directory host failed as "Connection refused", sending the
    user to start a zmq_server: it says the name does not resolve."""
    with pytest.raises(pyzmq.DirectoryUnreachable) as info:
        pyzmq.ZMQ("no-such-directory-host.invalid:5682", timeout=2)
    text = str(info.value)
    assert "no-such-directory-host.invalid:5682" in text
    assert "does not resolve" in text and "refused" not in text
    assert "check the host name" in text
    assert info.value.reason.startswith("host name does not resolve")
    out = subprocess.run([sys.executable, "-m", "pyzmq.names", "-d", "no-such-directory-host.invalid",
                          "ping"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "does not resolve" in out.stderr, out.stderr


# -- hostnames -----------------------------------------------------------------

def test_hostname_with_tcp_scheme_says_it_takes_none():
    with pytest.raises(ValueError) as info:
        pyzmq.ZMQ("tcp://127.0.0.1:5682")
    assert "a hostname takes no scheme" in str(info.value)
    assert "'127.0.0.1:5682'" in str(info.value)
    assert "IPv6" not in str(info.value)


@pytest.mark.parametrize("hostname", ["ipc:///tmp/x", "http://host:80", "udp://h"])
def test_hostname_with_unknown_scheme_has_its_own_message(hostname):
    with pytest.raises(ValueError) as info:
        pyzmq.ZMQ(hostname)
    assert "unknown scheme" in str(info.value) and hostname.split("//")[0] in str(info.value)
    assert "IPv6" not in str(info.value)


def test_ipv6_without_brackets_still_says_so():
    with pytest.raises(ValueError, match="IPv6 address in brackets"):
        pyzmq.ZMQ("::1:5682")


# -- a misspelt name -----------------------------------------------------------

def test_misspelt_local_queue_is_neither_local_nor_global(directory):
    with pyzmq.ZMQ(directory) as zmq:
        zmq.create_exchange("mex")
        zmq.create_queue("mq")
        with pytest.raises(pyzmq.DirectoryError) as info:
            zmq.bind("mex", "mqq")
        text = str(info.value)
        assert "'mqq'" in text
        assert "neither an object of this instance nor a global name" in text
        assert "did you mean 'mq'?" in text
        with pytest.raises(pyzmq.DirectoryError, match="neither an object of this instance"):
            zmq.bind("nosuch", "mq")
        zmq.bind("mex", "mq")       # the right names still work
        assert zmq.bindings == [("mex", "mq")]


# -- a name held by another instance -------------------------------------------

def test_rerun_cell_name_held_by_this_process(directory):
    """A notebook cell run twice makes a second instance while the first lives."""
    first = pyzmq.ZMQ(directory)
    first.create_exchange("cell", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    try:
        second = pyzmq.ZMQ(directory)
        with pytest.raises(pyzmq.Error) as info:
            second.create_exchange("cell", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        assert "already registered by another instance (in this process: close it first)" \
            in str(info.value)
        first.close()
        second.create_exchange("cell", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")   # now it may
        second.close()
    finally:
        first.close()


def test_name_held_by_another_process(directory):
    code = """
        import sys, pyzmq
        zmq = pyzmq.ZMQ(sys.argv[1])
        zmq.create_queue("theirs", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        print("ready", flush=True)
        sys.stdin.readline()
    """
    with PeerProcess(code, directory) as peer:
        peer.expect("ready")
        with pyzmq.ZMQ(directory) as zmq:
            with pytest.raises(pyzmq.Error) as info:
                zmq.create_queue("theirs", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        assert str(info.value).endswith("is already registered by another process")


# -- keys ----------------------------------------------------------------------

@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "alice.key"
    proc = subprocess.run([sys.executable, "-m", "pyzmq.curve", str(path)], capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 0, proc.stderr
    return path, proc.stdout.strip()


def test_key_files_from_zmq_keygen_work_as_read(directory, keyfile):
    path, public = keyfile
    secret_text = path.read_text()
    assert secret_text.endswith("\n")               # what made open(path).read() fail
    public_text = (path.parent / "alice.key.pub").read_text()
    assert pyzmq.curve_public(secret_text) == public
    # accepted with the newline everywhere a key is taken
    with pyzmq.ZMQ(directory, secret_key=secret_text, allowed_keys=[public_text]) as owner, \
            pyzmq.ZMQ(directory, secret_key=" " + secret_text) as binder:
        eid = owner.create_exchange("secure", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        binder.create_queue("Q")
        binder.bind("secure", "Q")
        owner.send(eid, b"encrypted")
        assert binder.receive(timeout=5) == b"encrypted"


def test_directory_key_with_whitespace(tmp_path, keyfile):
    path, public = keyfile
    from pyzmq.testing import ServerProcess
    with ServerProcess(quiet=True, extra_args=["--curve-secret", str(path)]) as server:
        assert server.public_key == public
        with pyzmq.ZMQ(server.address, directory_key=public + "\n") as zmq:
            zmq.create_queue("Q", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")


def test_load_key(tmp_path, keyfile):
    path, public = keyfile
    secret = pyzmq.load_key(path)
    assert len(secret) == 40 and secret == path.read_text().strip()
    assert pyzmq.load_key(str(path) + ".pub") == public
    assert pyzmq.curve_public(secret) == public
    commented = tmp_path / "commented"
    commented.write_text(f"# alice\n\n  {public}  \n")
    assert pyzmq.load_key(commented) == public
    two = tmp_path / "two"
    two.write_text(public + "\n" + public + "\n")
    with pytest.raises(ValueError, match="expected one CURVE key"):
        pyzmq.load_key(two)
    bad = tmp_path / "bad"
    bad.write_text("short\n")
    with pytest.raises(ValueError, match="bad: key must be 40 Z85 characters"):
        pyzmq.load_key(bad)
    with pytest.raises(FileNotFoundError):
        pyzmq.load_key(tmp_path / "missing")
