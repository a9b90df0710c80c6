"""The four perf tools on the wiring API (pyzmq/perftools.py, run as
perf/{local,remote}_{lat,thr}.py): real processes through a real
zmq_server, small counts.

Checked: the output lines, the batch variant, starting the remote side
first, argument errors (status 2 and a usage text), an unreachable or mute
zmq_server (a clear message, no hang), and the console-script entry points
declared in pyproject.toml.
"""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

import pyzmq

from helpers import PERF, ROOT, child_env, free_port

TIMEOUT = 30        # seconds for any one process; the runs below take < 1 s

LAT_LINES = (
    r"message size: (\d+) \[B\]",
    r"roundtrip count: (\d+)",
    r"average latency: (\d+\.\d+) \[us\]",
    r"\(one-way latency: half the average round trip of (\d+\.\d+) \[us\]\)",
)
THR_LINES = (
    r"message size: (\d+) \[B\]",
    r"message count: (\d+)",
    r"mean throughput: (\d+) \[msg/s\]",
    r"mean throughput: (\d+\.\d+) \[Mb/s\]",
)


def tool(name):
    return [sys.executable, str(PERF / f"{name}.py")]


def start(name, *args, stderr=subprocess.PIPE):
    return subprocess.Popen([*tool(name), *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=str(ROOT))


def finish(proc, timeout=TIMEOUT):
    """(returncode, stdout, stderr); a process still running after `timeout` is killed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} still running after {timeout} s; stdout={out!r} stderr={err!r}")
    return proc.returncode, out, err


def run(name, *args, timeout=TIMEOUT):
    return finish(start(name, *args), timeout)


def parse(out, patterns):
    """The numbers of the expected lines, which must be the whole output."""
    lines = out.strip().splitlines()
    assert len(lines) == len(patterns), out
    values = []
    for line, pattern in zip(lines, patterns):
        m = re.fullmatch(pattern, line)
        assert m, f"{line!r} does not match {pattern!r}"
        values.append(float(m.group(1)))
    return values


# ------------------------------------------------------------ measurements


@pytest.mark.parametrize("size", [1, 4096])
def test_latency_pair(directory, size):
    local = start("local_lat", directory, "127.0.0.1", "127.0.0.1", size, 200)
    remote = start("remote_lat", directory, size, 200)
    rc, out, err = finish(remote)
    assert rc == 0, err
    lrc, lout, lerr = finish(local)
    assert lrc == 0, lerr
    assert lout == ""                       # the echo side prints nothing
    got_size, count, latency, roundtrip = parse(out, LAT_LINES)
    assert (got_size, count) == (size, 200)
    assert 0 < latency < 100_000
    assert roundtrip == pytest.approx(2 * latency, abs=0.002)


@pytest.mark.parametrize("size", [1, 65536])
def test_throughput_pair(directory, size):
    count = 20_000 if size == 1 else 500
    local = start("local_thr", directory, "127.0.0.1", size, count)
    remote = start("remote_thr", directory, size, count)
    rc, out, err = finish(remote)
    assert rc == 0, err
    assert out == ""                        # the sending side prints nothing
    lrc, lout, lerr = finish(local)
    assert lrc == 0, lerr
    got_size, got_count, rate, mbps = parse(lout, THR_LINES)
    assert (got_size, got_count) == (size, count)
    assert rate > 0
    assert mbps == pytest.approx(rate * size * 8 / 1e6, rel=1e-3, abs=1e-3)


@pytest.mark.parametrize("count", [10_000, 1000 + 7])     # a whole and a partial last batch
def test_batch_throughput(directory, count):
    local = start("local_thr", directory, "127.0.0.1", 16, count, "--batch", 256)
    remote = start("remote_thr", directory, 16, count, "--batch", 256)
    rc, out, err = finish(remote)
    assert rc == 0, err
    lrc, lout, lerr = finish(local)
    assert lrc == 0, lerr
    got_size, got_count, rate, _ = parse(lout, THR_LINES)
    assert (got_size, got_count) == (16, count)
    assert rate > 0


def test_count_of_one(directory):
    """One message: nothing is timed after the first, and still a number comes out."""
    local = start("local_thr", directory, "127.0.0.1", 8, 1)
    remote = start("remote_thr", directory, 8, 1)
    assert finish(remote)[0] == 0
    rc, out, err = finish(local)
    assert rc == 0, err
    parse(out, THR_LINES)


@pytest.mark.parametrize("kind", ["lat", "thr"])
def test_remote_side_first_waits_for_the_local_side(directory, tmp_path, kind):
    log = tmp_path / "remote.err"
    with open(log, "w") as err:
        if kind == "lat":
            remote = start("remote_lat", directory, 32, 100, stderr=err)
        else:
            remote = start("remote_thr", directory, 32, 1000, stderr=err)
    try:
        deadline = time.monotonic() + 15
        while "waiting" not in log.read_text():
            assert remote.poll() is None, f"remote side exited early: {log.read_text()}"
            assert time.monotonic() < deadline, "the remote side never said it was waiting"
            time.sleep(0.05)
        assert "local_" + kind in log.read_text()      # it names what it waits for
        if kind == "lat":
            local = start("local_lat", directory, "127.0.0.1", "127.0.0.1", 32, 100)
        else:
            local = start("local_thr", directory, "127.0.0.1", 32, 1000)
        rc, out, _ = finish(remote)
        lrc, lout, lerr = finish(local)
    finally:
        if remote.poll() is None:
            remote.kill()
            remote.wait()
    assert rc == 0, log.read_text()
    assert lrc == 0, lerr
    if kind == "lat":
        assert parse(out, LAT_LINES)[:2] == [32, 100]
    else:
        assert parse(lout, THR_LINES)[:2] == [32, 1000]


# ------------------------------------------------------------ bad arguments


BAD_ARGS = [
    ("local_lat", []),
    ("local_lat", ["h:1", "127.0.0.1", "127.0.0.1", "1"]),            # count missing
    ("local_lat", ["h:1", "127.0.0.1", "127.0.0.1", "abc", "10"]),
    ("local_lat", ["h:1", "127.0.0.1", "127.0.0.1", "0", "10"]),
    ("remote_lat", ["h:1", "1"]),
    ("remote_lat", ["h:1", "1", "0"]),
    ("remote_lat", ["h:1", "-1", "10"]),
    ("remote_lat", ["h:1", "1.5", "10"]),
    ("local_thr", ["h:1", "127.0.0.1", "1", "-10"]),
    ("local_thr", ["h:1", "127.0.0.1", "1", "ten"]),
    ("local_thr", ["h:1", "127.0.0.1", "1", "10", "--batch", "0"]),
    ("remote_thr", ["h:1", "0", "10"]),
    ("remote_thr", ["h:1", "1", "10", "--batch", "x"]),
    ("remote_thr", ["h:1", "1", "10", "extra"]),
]


@pytest.mark.parametrize("name,args", BAD_ARGS, ids=[f"{n}-{' '.join(a) or 'none'}" for n, a in BAD_ARGS])
def test_bad_arguments_exit_2_with_usage(name, args):
    rc, out, err = run(name, *args, timeout=15)
    assert rc == 2
    assert "usage:" in err and name in err
    assert out == ""


# ------------------------------------------------------------ no zmq_server


@pytest.mark.parametrize("name,args", [
    ("local_lat", ["127.0.0.1", "127.0.0.1", "1", "10"]),
    ("remote_lat", ["1", "10"]),
    ("local_thr", ["127.0.0.1", "1", "10"]),
    ("remote_thr", ["1", "10"]),
])
def test_no_zmq_server_is_a_clear_error(name, args):
    hostname = f"127.0.0.1:{free_port()}"          # nobody listens there
    t0 = time.monotonic()
    rc, out, err = run(name, hostname, *args, timeout=20)
    assert rc != 0
    assert f"{name}: cannot reach the directory at {hostname}" in err   # named, like its other errors
    assert "Traceback" not in err
    assert time.monotonic() - t0 < 15


@pytest.mark.parametrize("tool,args,missing", [
    ("remote_lat", ["1", "10"], "local_lat"),
    ("remote_thr", ["1", "10"], "local_thr"),
])
def test_remote_side_alone_gives_up_saying_what_to_start(directory, monkeypatch, tool, args, missing):
    """Only the remote side was started: after its wait (30 s; 0.5 here) it
    says which tool to start first, not only that a name is missing."""
    from pyzmq import perftools
    monkeypatch.setattr(perftools, "WAIT_FOR_LOCAL_SIDE", 0.5)
    with pytest.raises(pyzmq.DirectoryError, match=f"start {missing} first, with the same directory"):
        getattr(perftools, tool)([directory, *args, "-q"])


def test_mute_zmq_server_times_out(tmp_path):
    """Something accepts the connection but never answers: a clear error after the
    directory timeout, not a hang."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        hostname = f"127.0.0.1:{mute.getsockname()[1]}"
        t0 = time.monotonic()
        rc, out, err = run("remote_thr", hostname, 1, 10, timeout=25)
    assert rc != 0
    assert "the directory at" in err and hostname in err
    assert "Traceback" not in err
    assert time.monotonic() - t0 < 20


# ------------------------------------------------------------ packaging


def test_console_scripts_declared():
    import importlib
    try:
        import tomllib
    except ImportError:             # Python < 3.11
        tomllib = pytest.importorskip("tomli")

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in ("local_lat", "remote_lat", "local_thr", "remote_thr"):
        assert scripts.get(name) == f"pyzmq.perftools:{name}_main"
        module, attr = scripts[name].split(":")
        assert callable(getattr(importlib.import_module(module), attr))


def test_console_script_entry_point_runs():
    """The entry-point function behaves as the perf/ script does (argv from sys.argv)."""
    code = "import sys; from pyzmq.perftools import remote_thr_main; remote_thr_main()"
    env = child_env()
    proc = subprocess.run([sys.executable, "-c", code, "h:1", "0", "5"], capture_output=True,
                          text=True, timeout=15, env=env, cwd=str(ROOT))
    assert proc.returncode == 2
    assert "usage: remote_thr" in proc.stderr


# ------------------------------------------------------------ tools that talk


def test_mismatched_counts_stall_with_a_message_and_partial_results(directory):
    """local_thr expects more than remote_thr sends: it says it stalled, prints
    what it measured, and exits with status 3 (it used to wait for ever)."""
    local = start("local_thr", directory, "127.0.0.1", 16, 2000, "--stall-timeout", 1)
    remote = start("remote_thr", directory, 16, 1000)
    assert finish(remote)[0] == 0
    rc, out, err = finish(local)
    assert rc == 3, err
    assert "stalled" in err and "1,000 of 2,000 messages" in err and "same count" in err
    assert "Traceback" not in err
    lines = out.strip().splitlines()
    size, count, rate, _ = parse("\n".join(lines[:4]), THR_LINES)
    assert (size, count) == (16, 1000) and rate > 0
    assert lines[4] == "(partial result: 1,000 of 2,000 messages)"


def test_sender_with_nobody_reading_stalls(directory):
    """remote_thr sends more than local_thr takes: once the pipe is full its
    send waits, and the stall timeout ends it with status 3."""
    local = start("local_thr", directory, "127.0.0.1", 1024, 100)
    remote = start("remote_thr", directory, 1024, 10_000_000, "--stall-timeout", 1)
    assert finish(local)[0] == 0
    rc, out, err = finish(remote)
    assert rc == 3, err
    assert "stalled" in err and "does local_thr use the same count?" in err
    assert out == ""


def test_latency_echo_side_stalls_when_the_timer_stops_early(directory):
    local = start("local_lat", directory, "127.0.0.1", "127.0.0.1", 8, 400, "--stall-timeout", 1)
    remote = start("remote_lat", directory, 8, 100)
    rc, out, _ = finish(remote)
    assert rc == 0
    lrc, lout, lerr = finish(local)
    assert lrc == 3, lerr
    assert "100 of 400 round trips" in lerr and "remote_lat" in lerr


def test_progress_each_second_and_partial_results_on_ctrl_c(directory):
    count = 500_000_000         # far more than can run here: only Ctrl-C ends it
    local = start("local_thr", directory, "127.0.0.1", 16, count)
    remote = start("remote_thr", directory, 16, count, "-q")
    try:
        # the first progress line, after ~1 s (never block for ever on a mute tool)
        assert select.select([local.stderr], [], [], 15)[0], "no progress line within 15 s"
        line = local.stderr.readline()
        assert line.startswith("local_thr: ") and f"of {count:,} messages" in line, line
        assert "messages/s" in line
        local.send_signal(signal.SIGINT)
        rc, out, err = finish(local)
    finally:
        for proc in (local, remote):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert rc == 130, err
    assert "interrupted after" in err and "Traceback" not in err
    lines = out.strip().splitlines()
    size, got, rate, _ = parse("\n".join(lines[:4]), THR_LINES)
    assert size == 16 and 1 < got < count and rate > 0
    assert lines[4].startswith("(partial result: ") and f"of {count:,} messages)" in lines[4]


def test_quiet_run_says_nothing_on_stderr(directory):
    local = start("local_thr", directory, "127.0.0.1", 16, 3_000_000, "-q")
    remote = start("remote_thr", directory, 16, 3_000_000, "-q")
    rrc, _, rerr = finish(remote, 120)
    lrc, lout, lerr = finish(local, 120)
    assert (rrc, lrc) == (0, 0), (rerr, lerr)
    assert "messages/s" not in rerr + lerr         # no progress lines
    parse(lout, THR_LINES)


@pytest.mark.parametrize("value", ["-1", "x", "inf"])
def test_bad_stall_timeout(value):
    rc, out, err = run("local_thr", "h:1", "127.0.0.1", "1", "10", "--stall-timeout", value,
                       timeout=15)
    assert rc == 2 and "--stall-timeout" in err
