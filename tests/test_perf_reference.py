"""The benchmark's reference tools: perf/c (C directly on libzmq, the
physical limit of the stack) and perf/pyzmq_socket (the pyzmq socket
binding, import name ``zmq``, used the ordinary way).

Each pair runs over tcp://127.0.0.1 with small counts; the tests check the
output format, that the numbers are sane, that the two implementations
interoperate, that a wrong message size fails loudly and that bad
arguments exit with status 2 and a usage text.  Self-contained: needs no
conftest.py and does not import our own ``pyzmq`` package.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "perf" / "c"
PY_DIR = ROOT / "perf" / "pyzmq_socket"
TOOLS = ("local_lat", "remote_lat", "local_thr", "remote_thr")
KINDS = ("c", "pyzmq")
TIMEOUT = 60  # seconds for any one process; normal runs take well under 1 s

LAT_LINES = (
    r"message size: (\d+) \[B\]",
    r"roundtrip count: (\d+)",
    r"average latency: (\d+\.\d{3}) \[us\]",
)
THR_LINES = (
    r"message size: (\d+) \[B\]",
    r"message count: (\d+)",
    r"mean throughput: (\d+) \[msg/s\]",
    r"mean throughput: (\d+\.\d{3}) \[Mb/s\]",
)


# --------------------------------------------------------------- fixtures


def _load_build_module():
    spec = importlib.util.spec_from_file_location(
        "perf_c_build", C_DIR / "build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def c_tools() -> dict[str, list[str]]:
    build = _load_build_module()
    try:
        paths = build.build()
    except (build.CompilerNotFound, build.LibzmqNotFound) as exc:
        pytest.skip(f"cannot build the C perf tools: {exc}")
    return {name: [path] for name, path in paths.items()}


@pytest.fixture(scope="module")
def pyzmq_tools() -> dict[str, list[str]]:
    pytest.importorskip("zmq", reason="the pyzmq socket binding is not installed")
    return {
        name: [sys.executable, "-I", str(PY_DIR / f"{name}.py")]
        for name in TOOLS
    }


def _tools(request, kind: str) -> dict[str, list[str]]:
    return request.getfixturevalue(f"{kind}_tools")


def free_endpoint() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


# ---------------------------------------------------------------- helpers


def run_pair(local_cmd, remote_cmd):
    """Start the local (binding) side, then run the remote side; return
    both CompletedProcess objects once both have exited."""
    local = subprocess.Popen(
        local_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT,
    )
    try:
        remote = subprocess.run(
            remote_cmd, capture_output=True, text=True, timeout=TIMEOUT,
            cwd=ROOT,
        )
        out, err = local.communicate(timeout=TIMEOUT)
    finally:
        if local.poll() is None:
            local.kill()
            local.communicate()
    return (
        subprocess.CompletedProcess(local_cmd, local.returncode, out, err),
        remote,
    )


def parse_report(stdout: str, patterns) -> list[str]:
    lines = stdout.splitlines()
    assert len(lines) == len(patterns), f"unexpected output:\n{stdout}"
    values = []
    for line, pattern in zip(lines, patterns):
        m = re.fullmatch(pattern, line)
        assert m, f"line {line!r} does not match {pattern!r}"
        values.append(m.group(1))
    return values


def check_ok(proc: subprocess.CompletedProcess, expect_stdout: bool):
    assert proc.returncode == 0, (
        f"{proc.args} exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
    )
    assert proc.stderr == "", proc.stderr
    if not expect_stdout:
        assert proc.stdout == "", proc.stdout


def check_latency(local, remote, size, count):
    check_ok(local, expect_stdout=False)
    check_ok(remote, expect_stdout=True)
    got_size, got_count, latency = parse_report(remote.stdout, LAT_LINES)
    assert int(got_size) == size
    assert int(got_count) == count
    assert float(latency) > 0


def check_throughput(local, remote, size, count):
    check_ok(local, expect_stdout=True)
    check_ok(remote, expect_stdout=False)
    got_size, got_count, msgs, mbits = parse_report(local.stdout, THR_LINES)
    assert int(got_size) == size
    assert int(got_count) == count
    assert int(msgs) > 0
    assert float(mbits) > 0
    # Mb/s is derived from the printed msg/s, up to the 3-decimal rounding.
    assert abs(float(mbits) - int(msgs) * size * 8 / 1e6) <= 0.0005 + 1e-9


# ------------------------------------------------------------------ pairs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [1, 1000])
def test_latency_pair(request, kind, size):
    tools = _tools(request, kind)
    ep, count = free_endpoint(), 1000
    local, remote = run_pair(
        [*tools["local_lat"], ep, str(size), str(count)],
        [*tools["remote_lat"], ep, str(size), str(count)],
    )
    check_latency(local, remote, size, count)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size,count", [(1, 100_000), (65536, 2_000)])
def test_throughput_pair(request, kind, size, count):
    tools = _tools(request, kind)
    ep = free_endpoint()
    local, remote = run_pair(
        [*tools["local_thr"], ep, str(size), str(count)],
        [*tools["remote_thr"], ep, str(size), str(count)],
    )
    check_throughput(local, remote, size, count)


@pytest.mark.parametrize("local_kind,remote_kind", [("c", "pyzmq"), ("pyzmq", "c")])
def test_mixed_pairs_interoperate(request, local_kind, remote_kind):
    local_tools = _tools(request, local_kind)
    remote_tools = _tools(request, remote_kind)
    ep = free_endpoint()
    local, remote = run_pair(
        [*local_tools["local_lat"], ep, "10", "200"],
        [*remote_tools["remote_lat"], ep, "10", "200"],
    )
    check_latency(local, remote, 10, 200)
    ep = free_endpoint()
    local, remote = run_pair(
        [*local_tools["local_thr"], ep, "10", "5000"],
        [*remote_tools["remote_thr"], ep, "10", "5000"],
    )
    check_throughput(local, remote, 10, 5000)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("test", ["lat", "thr"])
def test_wrong_message_size_fails_loudly(request, kind, test):
    """local_* expects 2-byte messages, remote_* sends 1-byte ones."""
    tools = _tools(request, kind)
    ep = free_endpoint()
    local = subprocess.Popen(
        [*tools[f"local_{test}"], ep, "2", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    # remote_lat would wait forever for its reply (and remote_thr, with
    # linger -1, may wait for a peer that is gone): killed below.
    remote = subprocess.Popen(
        [*tools[f"remote_{test}"], ep, "1", "10"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    try:
        out, err = local.communicate(timeout=TIMEOUT)
    finally:
        for proc in (local, remote):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert local.returncode == 1, (local.returncode, out, err)
    assert out == ""
    assert f"local_{test}: message 0 has 1 bytes, expected 2" in err


# -------------------------------------------------------------- arguments

BAD_ARGS = [
    pytest.param([], id="none"),
    pytest.param(["tcp://127.0.0.1:1", "1"], id="too-few"),
    pytest.param(["tcp://127.0.0.1:1", "1", "10", "x"], id="too-many"),
    pytest.param(["", "1", "10"], id="empty-endpoint"),
    pytest.param(["tcp://127.0.0.1:1", "-1", "10"], id="negative-size"),
    pytest.param(["tcp://127.0.0.1:1", "1k", "10"], id="junk-size"),
    pytest.param(["tcp://127.0.0.1:1", "2147483648", "10"], id="huge-size"),
    pytest.param(["tcp://127.0.0.1:1", "1", "0"], id="zero-count"),
    pytest.param(["tcp://127.0.0.1:1", "1", " 10"], id="space-count"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("args", BAD_ARGS)
def test_bad_arguments_exit_2_with_usage(request, kind, tool, args):
    cmd = [*_tools(request, kind)[tool], *args]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=ROOT)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert f"usage: {tool} <" in proc.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_unusable_endpoint_exits_1(request, kind):
    tools = _tools(request, kind)
    proc = subprocess.run([*tools["local_thr"], "tcp://no-such-host", "1", "1"],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=ROOT)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "local_thr: cannot bind to tcp://no-such-host" in proc.stderr


# ---------------------------------------------------------- import hygiene


def test_pyzmq_scripts_import_only_the_binding(pyzmq_tools):
    """With -I, the scripts import the binding `zmq` and never our own
    package `pyzmq` (checked with -X importtime, which lists every module
    imported)."""
    for name in TOOLS:
        cmd = [sys.executable, "-I", "-X", "importtime",
               str(PY_DIR / f"{name}.py")]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=TIMEOUT, cwd=ROOT)
        assert proc.returncode == 2, proc.stderr  # usage: zmq was imported
        modules = {
            line.rsplit("|", 1)[1].strip()
            for line in proc.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2
        }
        assert "zmq" in modules, proc.stderr
        ours = sorted(m for m in modules if m == "pyzmq" or m.startswith("pyzmq."))
        assert not ours, f"{name}.py imported our package: {ours}"


def test_pyzmq_scripts_ignore_a_stray_zmq_module(tmp_path):
    """Run without -I, a zmq.py next to the script (and in the current
    directory) must not shadow the binding."""
    pytest.importorskip("zmq", reason="the pyzmq socket binding is not installed")
    (tmp_path / "zmq.py").write_text("raise ImportError('stray zmq.py imported')\n")
    shutil.copy(PY_DIR / "_cli.py", tmp_path / "_cli.py")     # what the scripts share
    for name in TOOLS:
        script = tmp_path / f"{name}.py"
        shutil.copy(PY_DIR / f"{name}.py", script)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                              text=True, timeout=TIMEOUT, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "stray zmq.py" not in proc.stderr
        assert f"usage: {name} <" in proc.stderr


def test_build_is_incremental(c_tools):
    """A second build() with fresh binaries compiles nothing (the binaries
    keep their modification time) and returns the same paths."""
    build = _load_build_module()
    before = {name: Path(p[0]).stat().st_mtime_ns for name, p in c_tools.items()}
    paths = build.build()
    assert paths == {name: p[0] for name, p in c_tools.items()}
    after = {name: Path(p).stat().st_mtime_ns for name, p in paths.items()}
    assert after == before


# ------------------------------------------- the latency path's references


@pytest.fixture(scope="module")
def path_tools() -> dict[str, list[str]]:
    """wiring_lat (the path in C) and py_floor_lat (the same steps from a
    Python loop, one minimal C call each): perf/path_lat.py's c-direct and
    py-floor shapes."""
    build = _load_build_module()
    try:
        paths = build.build(tools=build.EXTRA_TOOLS)
        build.build_pyfloor(sys.executable)
    except (build.CompilerNotFound, build.LibzmqNotFound) as exc:
        pytest.skip(f"cannot build the C perf tools: {exc}")
    return {
        "c-direct": [paths["wiring_lat"]],
        "py-floor": [sys.executable, str(ROOT / "perf" / "py_floor_lat.py")],
    }


@pytest.mark.parametrize("shape", ["c-direct", "py-floor"])
@pytest.mark.parametrize("size", [1, 5000])
def test_latency_path_references_echo_every_message(path_tools, shape, size):
    a, b, count = free_endpoint(), free_endpoint(), 300
    cmd = path_tools[shape]
    tail = ["direct"] if shape == "c-direct" else []
    local, remote = run_pair([*cmd, "local", a, b, str(size), str(count), *tail],
                             [*cmd, "remote", a, b, str(size), str(count), *tail])
    check_latency(local, remote, size, count)


def test_py_floor_lat_usage_exits_with_the_usage_text():
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / "py_floor_lat.py"), "sideways"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1
    assert "py_floor_lat.py local" in proc.stderr


def test_path_lat_cpu_mode_prints_cpu_per_round_trip_of_each_side(path_tools):
    """--cpu (with --pin where there are two CPUs): a line per shape with
    each side's CPU time per round trip, from wait4's rusage."""
    pin = ["--pin"] if len(os.sched_getaffinity(0)) >= 2 else []
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / "path_lat.py"), "--cpu", *pin,
                           "--reps", "1", "--count", "300", "--sizes", "1",
                           "--shapes", "c-reqrep", "c-direct"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = re.findall(r"1 B  (c-reqrep|c-direct)\s+local\s+([\d.-]+)\s+remote\s+([\d.-]+)",
                      proc.stdout)
    assert [r[0] for r in rows] == ["c-reqrep", "c-direct"], proc.stdout
    for _, local, remote in rows:
        assert float(local) > 0 and float(remote) > 0, proc.stdout
    assert ("pinned" in proc.stdout) == bool(pin)
