"""Types (issue 16, item 3): mypy --strict, run from outside the checkout as
a user would run it, finds the installed package and its types, reports
nothing on the examples, and gives the types the overloads promise."""

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pyzmq
import pyzmq.asyncio

ROOT = Path(__file__).resolve().parent.parent


def mypy(tmp_path, *targets, options=("--strict",)):
    """Run ``mypy --strict`` (or mypy with other ``options``) with this
    interpreter, from a directory outside the checkout (so pyzmq is found
    the way an installed package is)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", *options, "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), *map(str, targets)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_mypy_strict_reports_nothing_on_the_examples(tmp_path):
    examples = sorted((ROOT / "examples").glob("*.py"))
    assert len(examples) >= 4
    rc, out = mypy(tmp_path, *examples)
    assert rc == 0, out
    assert "Success: no issues found" in out


def test_mypy_reports_nothing_on_the_package(tmp_path):
    """The package's own modules, checked under the project's settings
    (pyproject.toml's [tool.mypy]): their annotations agree with each
    other and with the C core's stub, _zmq.pyi."""
    rc, out = mypy(tmp_path, ROOT / "pyzmq",
                   options=("--config-file", str(ROOT / "pyproject.toml")))
    assert rc == 0, out
    assert "Success: no issues found" in out


GOOD = """
    import asyncio
    from typing import List, Optional, Tuple
    from typing_extensions import assert_type
    import pyzmq
    import pyzmq.asyncio

    with pyzmq.ZMQ() as zmq:
        assert_type(zmq, pyzmq.ZMQ)
        eid = zmq.create_exchange("E")
        assert_type(eid, int)
        assert_type(zmq.create_queue("Q"), int)
        assert_type(zmq.send(eid, b"x"), bool)
        assert_type(zmq.send(eid, bytearray(b"x"), timeout=1, block=False), bool)
        assert_type(zmq.receive(), bytes)
        assert_type(zmq.receive(timeout=1), bytes)
        assert_type(zmq.receive(1.5), bytes)
        assert_type(zmq.receive(copy=False), pyzmq.Frame)
        assert_type(zmq.receive(None, True, False), pyzmq.Frame)
        assert_type(zmq.receive(block=False), Optional[bytes])
        assert_type(zmq.receive(block=False, copy=False), Optional[pyzmq.Frame])
        assert_type(zmq.receive2(), Tuple[int, bytes])
        assert_type(zmq.receive2(copy=False), Tuple[int, pyzmq.Frame])
        assert_type(zmq.receive2(block=False), Optional[Tuple[int, bytes]])
        assert_type(zmq.receive_many(10), List[bytes])
        assert_type(zmq.receive_many(max_count=10, timeout=0), List[bytes])
        assert_type(zmq.send_many(eid=eid, messages=[b"x"]), int)
        frame = zmq.receive(copy=False)
        zmq.send(eid, frame)                      # a Frame is a buffer
        assert_type(bytes(frame), bytes)
        assert_type(frame.queue_id, int)
        assert_type(zmq.bindings, List[Tuple[str, str]])
        zmq.bind("E", "Q", hwm=5)

    with pyzmq.Directory() as directory:
        assert_type(directory, pyzmq.Directory)
        assert_type(directory.address, str)

    assert_type(pyzmq.load_key("alice.key"), str)
    assert_type(pyzmq.curve_keypair(), Tuple[str, str])

    try:
        pass
    except pyzmq.DirectoryUnreachable as exc:
        assert_type(exc.reason, str)

    async def main() -> None:
        async with await pyzmq.asyncio.ZMQ.connect("127.0.0.1:1", timeout=1) as azmq:
            assert_type(azmq, pyzmq.asyncio.ZMQ)
            e = await azmq.create_exchange("E")
            assert_type(e, int)
            await azmq.bind("E", "Q")
            assert_type(await azmq.close(), int)
            assert_type(await pyzmq.asyncio.ZMQ.connect("127.0.0.1:1"), pyzmq.asyncio.ZMQ)
            assert_type(await azmq.send(e, b"x", timeout=1), bool)
            assert_type(await azmq.receive(), bytes)
            assert_type(await azmq.receive(timeout=1), bytes)
            assert_type(await azmq.receive(copy=False), pyzmq.Frame)
            assert_type(await azmq.receive2(), Tuple[int, bytes])
            assert_type(azmq.receive_now(), Optional[bytes])
            assert_type(azmq.receive_now(copy=False), Optional[pyzmq.Frame])
            assert_type(azmq.send_now(e, b"x"), bool)
"""

BAD = {
    "zmq.send(eid, 'text')": "send",                          # str is not a buffer
    "zmq.receive().queue_id": "queue_id",                     # bytes, not a Frame
    "zmq.receive(block=False).decode()": "decode",            # may be None
    "zmq.create_queue(1)": "create_queue",
    "zmq.bind('E', 'Q', hwm='5')": "bind",
    "pyzmq.ZMQ(timeout='5')": "ZMQ",
    "zmq.recieve()": "recieve",                               # a typo is caught
    "zmq.receive_many('5')": "receive_many",
}


def test_overloads_and_public_types(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(textwrap.dedent(GOOD))
    rc, out = mypy(tmp_path, good)
    assert rc == 0, out


def test_wrong_uses_are_reported(tmp_path):
    """The types are not Any: each wrong use below is an error on its line."""
    lines = ["import pyzmq", "zmq = pyzmq.ZMQ()", "eid = zmq.create_exchange('E')"]
    first = len(lines) + 1
    lines += list(BAD)
    bad = tmp_path / "bad.py"
    bad.write_text("\n".join(lines) + "\n")
    rc, out = mypy(tmp_path, bad)
    assert rc == 1, out
    for number, (code, what) in enumerate(BAD.items(), first):
        assert f"bad.py:{number}: error" in out, f"no error for {code!r}:\n{out}"


def test_asyncio_zmq_takes_the_same_arguments():
    """asyncio.ZMQ spells out ZMQ's arguments (for the types): they must stay the same."""
    assert (inspect.signature(pyzmq.asyncio.ZMQ.__init__).parameters
            == inspect.signature(pyzmq.ZMQ.__init__).parameters)


def test_package_ships_its_types():
    try:
        import tomllib
    except ImportError:             # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = data["tool"]["setuptools"]["package-data"]["pyzmq"]
    assert "py.typed" in shipped and "*.pyi" in shipped
    assert (ROOT / "pyzmq" / "py.typed").exists() and (ROOT / "pyzmq" / "_zmq.pyi").exists()


def test_cython_code_can_cimport_the_core_without_warnings(tmp_path):
    """The C-level declarations (src/_zmq.pxd, found through
    src/pyzmq/_zmq.pxd) are cimportable as pyzmq._zmq with include/ and src/
    on the include path, and Cython says nothing of their layout."""
    pytest.importorskip("Cython")
    user = tmp_path / "user.pyx"
    user.write_text("from pyzmq._zmq cimport Engine\n\n"
                    "def exchanges(Engine e):\n    return e.nex\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cython", "-3", "-I", str(ROOT / "include"),
         "-I", str(ROOT / "src"), str(user), "-o", str(tmp_path / "user.c")],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "warning" not in out.lower(), out
    assert (tmp_path / "user.c").exists()
