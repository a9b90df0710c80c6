"""The README's first example runs as written, and so does the secured deployment
of README.md and docs/security.md (shell block, then Python block)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs():
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})


# -- the secured deployment, as README.md and docs/security.md write it --------

import os
import shlex
import subprocess
import sys

import pytest

import pyzmq
from helpers import ROOT, child_env


def _blocks(text, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/security.md"])
def test_secured_deployment_runs_as_written(doc, tmp_path, monkeypatch):
    """The shell block that makes the keys and starts a CURVE zmq_server
    runs line by line (the server on a free port instead of 5682), then the
    Python block after it connects alice with those files, and bob, an
    allowed client, gets what she publishes; zmq_names reads the directory
    with the keys (-k, -s)."""
    text = (ROOT / doc).read_text()
    shell = next(b for b in _blocks(text, "sh") if "zmq_keygen" in b and "--curve-allow" in b)
    python = next(b for b in _blocks(text, "python") if "directory_key=DIRECTORY_PUBLIC" in b)
    env = child_env(PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    server = None
    try:
        for line in shell.splitlines():
            command = line.split("#")[0].strip()
            if not command:
                continue
            if command.startswith("zmq_server"):
                assert server is None
                server = subprocess.Popen(shlex.split(command) + ["--port", "0"], cwd=tmp_path, env=env,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
                for said in server.stdout:
                    match = re.match(r"zmq_server: listening on (\S+):(\d+) \(CURVE", said)
                    if match:
                        address = f"{match.group(1)}:{match.group(2)}"
                        break
                else:
                    pytest.fail(f"{doc}: {command!r} never said it listens")
            else:
                out = subprocess.run(command, shell=True, cwd=tmp_path, env=env,
                                     capture_output=True, text=True, timeout=30)
                assert out.returncode == 0, f"{doc}: {command!r} failed: {out.stderr}"
        assert server is not None, f"{doc}: the block starts no zmq_server"
        monkeypatch.chdir(tmp_path)             # the block may read the key files by name
        keys = {"DIRECTORY_PUBLIC": pyzmq.load_key("directory.key.pub"),
                "ALICE_SECRET": pyzmq.load_key("alice.key"),
                "BOB_PUBLIC": pyzmq.load_key("bob.key.pub")}
        scope = {"pyzmq": pyzmq, **keys}
        exec(compile(python.replace('"dirhost"', repr(address)), doc, "exec"), scope)
        with scope["zmq"] as alice, pyzmq.ZMQ(address, directory_key=keys["DIRECTORY_PUBLIC"],
                                              secret_key=pyzmq.load_key("bob.key")) as bob:
            eid = alice.create_exchange("prices", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            bob.create_queue("mine")
            bob.bind("prices", "mine")
            alice.send(eid, b"42")
            assert bob.receive(timeout=10) == b"42"
            names = subprocess.run([sys.executable, "-m", "pyzmq.names", "-d", address,
                                    "-k", keys["DIRECTORY_PUBLIC"], "-s", "alice.key", "ls"],
                                   env=env, capture_output=True, text=True, timeout=30)
            assert names.returncode == 0, names.stderr
            assert names.stdout.startswith("prices\texchange\t")
    finally:
        if server is not None:
            server.kill()
            server.wait()
