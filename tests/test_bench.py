"""perf/bench.py, the benchmark runner: a tiny real run (every
implementation, one size, one repetition, counts scaled down) checked for
its printed rows and its JSON/CSV/PNG; a hung pair that must be killed and
reported; option errors; the table and the statistics on made-up numbers.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time

import pytest

import bench        # perf/ is on sys.path (pyproject.toml: pytest's pythonpath)
from helpers import PERF, ROOT, gone

BENCH = PERF / "bench.py"


def run_bench(*args, timeout=120):
    env = dict(os.environ, PYZMQ_BENCH_NO_REEXEC="1")
    return subprocess.run([sys.executable, str(BENCH), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(ROOT))


def only(paths):
    assert len(paths) == 1, paths
    return paths[0]


NUM = r"[0-9]+(?:\.[0-9]+)?"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run of every implementation at 1 B, shared by the tests below."""
    pytest.importorskip("zmq", reason="the pyzmq socket binding is not installed")
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("bench")
    t0 = time.monotonic()
    proc = run_bench("--sizes", 1, "--reps", 1, "--scale", 0.02, "--out", out, "--busy-core")
    elapsed = time.monotonic() - t0
    if "C reference skipped" in proc.stdout:
        pytest.skip("cannot build the C reference tools here")
    return proc, out, elapsed


def test_tiny_run_prints_the_rows(tiny_run):
    proc, _, elapsed = tiny_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(rf"^lat 1B +C={NUM}us +C-path={NUM}us \({NUM}x\) "
                     rf"+pyzmq-wiring={NUM}us \({NUM}x\) \[{NUM}x C-path\] +pyzmq={NUM}us \({NUM}x\)$",
                     out, re.M), out
    assert re.search(rf"^thr 1B +C={NUM}msg/s +pyzmq-wiring={NUM}msg/s \({NUM}x\) "
                     rf"+pyzmq={NUM}msg/s \({NUM}x\)$", out, re.M), out
    assert re.search(rf"^thr-batch 1B +C={NUM}msg/s +pyzmq-wiring={NUM}msg/s \({NUM}x\)$",
                     out, re.M), out
    assert len(re.findall(rf"^  min-max +{NUM}-{NUM}", out, re.M)) == 3
    assert "failed" not in out
    assert elapsed < 60


def test_tiny_run_header(tiny_run):
    out = tiny_run[0].stdout
    assert re.search(r"^pyzmq-wiring benchmark  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out, re.M)
    assert re.search(rf"^machine: .+, {os.cpu_count()} cores", out, re.M)
    assert re.search(r"^libzmq: \d+\.\d+\.\d+", out, re.M)
    assert re.search(r"^mode: quick, 1 reps, sizes 1 B, scale 0.02, busy-core 1", out, re.M)
    assert re.search(r"^total: [0-9.]+ s \(8 measurements\)$", out, re.M)


def test_tiny_run_writes_json_csv_png(tiny_run):
    proc, out, _ = tiny_run
    json_path = only(list(out.glob("bench-*-quick.json")))
    csv_path = only(list(out.glob("bench-*-quick.csv")))
    png_path = only(list(out.glob("bench-*-quick.png")))
    for path in (json_path, csv_path, png_path):
        assert str(path) in proc.stdout          # it says where they are

    data = json.loads(json_path.read_text())
    ms = data["measurements"]
    assert sorted((m["test"], m["impl"]) for m in ms) == sorted(
        [("lat", "c"), ("lat", "cpath"), ("lat", "wiring"), ("lat", "pyzmq"),
         ("thr", "c"), ("thr", "wiring"), ("thr", "pyzmq"), ("thr-batch", "wiring")])
    assert all(m["status"] == "ok" and m["value"] > 0 and m["size"] == 1 for m in ms)
    assert {m["count"] for m in ms if m["test"] == "lat"} == {bench.lat_count(1, 0.02)}
    medians = {(r["test"], r["impl"]): r for r in data["medians"]}
    assert medians[("lat", "c")]["ratio"] is None
    assert medians[("lat", "wiring")]["ratio"] == pytest.approx(
        medians[("lat", "wiring")]["median"] / medians[("lat", "c")]["median"])
    # the C-path reference: the extension's latency path in C, latency only
    assert medians[("lat", "wiring")]["ratio_path"] == pytest.approx(
        medians[("lat", "wiring")]["median"] / medians[("lat", "cpath")]["median"])
    assert medians[("lat", "cpath")]["ratio_path"] is None
    assert medians[("thr-batch", "wiring")]["ratio"] == pytest.approx(
        medians[("thr-batch", "wiring")]["median"] / medians[("thr", "c")]["median"])
    meta = data["meta"]
    assert meta["mode"] == "quick" and meta["reps"] == 1 and meta["sizes"] == [1]

    rows = list(csv.DictReader(csv_path.open()))
    assert [r["kind"] for r in rows].count("measurement") == 8
    assert [r["kind"] for r in rows].count("median") == 8
    assert {r["impl"] for r in rows} == {"C", "C-path", "pyzmq-wiring", "pyzmq", "pyzmq-wiring-batch"}

    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png_path.stat().st_size > 10_000


def test_tiny_run_leaves_no_process_behind(tiny_run):
    _, out, _ = tiny_run
    meta = json.loads(only(list(out.glob("bench-*.json"))).read_text())["meta"]
    pids = [meta["zmq_server"]["pid"], *meta["busy_core_pids"]]
    assert len(pids) == 2
    assert all(gone(pid) for pid in pids)


# ------------------------------------------------------------ failures


def test_failed_measurements_are_reported_not_fatal(tmp_path):
    """Every pair is killed by an absurdly short timeout: the runner goes
    on, reports each failure and still writes its files."""
    t0 = time.monotonic()
    proc = run_bench("--impls", "c", "--tests", "lat", "--sizes", "1", "16", "--reps", 2,
                     "--timeout", 0.001, "--out", tmp_path, timeout=60)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 1                  # nothing at all was measured
    assert re.search(r"^lat 1B +C=n/aus \[2/2 failed\]$", proc.stdout, re.M), proc.stdout
    assert "4 of 4 measurements failed" in proc.stdout
    data = json.loads(only(list(tmp_path.glob("*.json"))).read_text())
    assert {m["status"] for m in data["measurements"]} == {"timeout"}


def test_run_pair_kills_a_hung_pair():
    plan = bench.Plan("lat", 1, "c", 1, ["sleep", "60"], ["sleep", "60"])
    t0 = time.monotonic()
    res = bench.run_pair(plan, timeout=1.0)
    assert time.monotonic() - t0 < 5
    assert res.status == "timeout" and res.value is None
    assert "killed both sides" in res.error


def test_run_pair_kills_the_partner_of_a_dead_side():
    plan = bench.Plan("thr", 1, "c", 1, ["sh", "-c", "echo cannot bind >&2; exit 1"],
                      ["sleep", "60"])
    res = bench.run_pair(plan, timeout=30.0, grace=0.5)
    assert res.status == "timeout"
    assert "local side exited with status 1" in res.error
    assert "cannot bind" in res.error
    assert res.wall_s < 5


def test_run_pair_dumps_the_stack_of_a_hung_python_tool():
    code = "import time\ndef stuck_here():\n    time.sleep(60)\nstuck_here()\n"
    plan = bench.Plan("lat", 1, "wiring", 1, [sys.executable, "-X", "faulthandler", "-c", code],
                      ["true"])
    res = bench.run_pair(plan, timeout=30.0, grace=0.5)
    assert res.status == "timeout"
    assert "stuck_here" in res.error


def test_run_pair_reads_the_reporting_side():
    lat = bench.Plan("lat", 1, "c", 1, ["true"], ["echo", "average latency: 12.500 [us]"])
    thr = bench.Plan("thr", 1, "c", 1, ["echo", "mean throughput: 1234 [msg/s]"], ["true"])
    assert bench.run_pair(lat, timeout=10).value == 12.5
    assert bench.run_pair(thr, timeout=10).value == 1234
    silent = bench.Plan("thr", 1, "c", 1, ["true"], ["true"])
    res = bench.run_pair(silent, timeout=10)
    assert res.status == "failed" and "no result" in res.error


@pytest.mark.parametrize("args", [
    ["--sizes", "0"], ["--sizes", "x"], ["--impls", "java"], ["--reps", "0"],
    ["--scale", "-1"], ["--tests", "foo"], ["--quick", "--full"],
])
def test_bad_options_exit_2(args, tmp_path):
    proc = run_bench(*args, "--out", tmp_path, timeout=30)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------ pure functions


def test_counts():
    assert bench.thr_count(1, 1) == 1_000_000
    assert 10_000 <= bench.thr_count(65536, 1) <= 30_000
    assert bench.thr_count(65536, 0.5) == round(bench.thr_count(65536, 1) * 0.5)
    assert bench.lat_count(1, 0.0001) == bench.MIN_COUNT
    a = bench.parse_args(["--full"])
    assert a.reps == 7 and a.factor == bench.FULL_FACTOR
    a = bench.parse_args(["--sizes", "256,1", "16", "--impls", "pyzmq-wiring,c"])
    assert a.sizes == [1, 16, 256] and a.impls == ["c", "wiring"] and a.reps == 3


def M(test, impl, rep, value, status="ok"):
    return bench.Measurement(test, 1, impl, rep, 10, value, bench.UNITS[test], status,
                             "" if status == "ok" else "boom", "", 0.1)


def test_summary_and_table():
    ms = [M("lat", "c", 1, 10.0), M("lat", "c", 2, 30.0), M("lat", "c", 3, 20.0),
          M("lat", "wiring", 1, 40.0), M("lat", "wiring", 2, None, "timeout"),
          M("lat", "wiring", 3, 50.0),
          M("thr", "c", 1, 1000.0), M("thr", "pyzmq", 1, 250.0),
          M("thr-batch", "wiring", 1, 2000.0)]
    rows = {(r["test"], r["impl"]): r for r in bench.summarize(ms)}
    assert rows[("lat", "c")]["median"] == 20.0
    assert (rows[("lat", "c")]["min"], rows[("lat", "c")]["max"]) == (10.0, 30.0)
    assert rows[("lat", "wiring")]["median"] == 45.0
    assert rows[("lat", "wiring")]["ratio"] == pytest.approx(2.25)
    assert rows[("lat", "wiring")]["n_ok"] == 2 and rows[("lat", "wiring")]["n"] == 3
    assert rows[("thr", "pyzmq")]["ratio"] == pytest.approx(0.25)
    assert rows[("thr-batch", "wiring")]["ratio"] == pytest.approx(2.0)

    lines = bench.table_lines(list(rows.values()), ["c", "wiring", "pyzmq"])
    assert re.match(r"lat 1B +C=20\.0us +pyzmq-wiring=45\.0us \(2\.25x\) \[1/3 failed\]$", lines[0])
    assert re.match(r"  min-max +10\.0-30\.0 +40\.0-50\.0$", lines[1])
    assert re.match(r"thr 1B +C=1000msg/s +pyzmq=250msg/s \(0\.25x\)$", lines[2])
    assert re.match(r"thr-batch 1B +C=1000msg/s +pyzmq-wiring=2000msg/s \(2\.00x\)$", lines[4])
    # the spread starts under the number it belongs to
    assert lines[1].index("10.0") == lines[0].index("20.0")
    assert lines[1].index("40.0") == lines[0].index("45.0")
