#!/usr/bin/env python3
"""The two-host rig: the perf tools across two real network hosts.

The seed measured on two boxes joined by a direct 1 Gb Ethernet link.  Here
the two boxes are Linux network namespaces joined by a veth pair (see
perf/netns.py), the link optionally shaped with ``tc ... tbf``:

    sudo .venv/bin/python perf/rig.py                  # shaped to 1 Gbit/s, ~1.5 min
    sudo .venv/bin/python perf/rig.py --rate none      # the bare veth
    sudo .venv/bin/python perf/rig.py --quick          # fewer messages, ~15 s

Host A (198.18.0.1, veth-a) runs zmq_server and the local_* tools, host B
(198.18.0.2, veth-b) the remote_* tools, for the C reference (perf/c) and
pyzmq-wiring, at the seed's five message sizes.  Our local tools are given
NIC-name locations (veth-a:PORT) and the rig checks that the directory got
A's veth address for every name.  It prints the loopback runner's table
(perf/bench.py's, plus what the link can carry at each size) and writes a
two-panel chart.  See docs/rig.md.

The namespaces, the link and every process started in them are removed on
every way out (normal end, error, Ctrl-C, SIGTERM/SIGHUP).  After a SIGKILL,
``--cleanup-stale`` removes what a dead run left.

Exit status: 0 done; 1 a measurement failed; 2 bad arguments or the rig
cannot run here (not root, ip/tc or the C tools missing); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# siblings in perf/ (a script's folder is first on sys.path)
import benchlib  # what perf/bench.py also uses: records, table, statistics, chart, spinners
import netns  # the namespaces, the link, processes in them

SIZES = (1, 16, 256, 4096, 65536)           # the seed's sizes
DEFAULT_RATE = "1gbit"                       # the seed's link
IMPLS = ("c", "wiring")                      # bench.py's names: C reference, pyzmq-wiring

# Ports on host A (the namespace is ours alone, so fixed ports are free).
C_LAT_PORT, C_THR_PORT = 5555, 5556
EL_PORT, QL_PORT, Q_PORT = 5557, 5558, 5559

# Per size: (latency round trips, throughput messages).  Sized for the bare
# veth (each throughput run ~0.3-2 s there); a shaped link caps them below.
COUNTS = {
    "full": {1: (20000, 10_000_000), 16: (20000, 10_000_000), 256: (10000, 5_000_000),
             4096: (5000, 1_000_000), 65536: (2000, 100_000)},
    "quick": {1: (5000, 2_000_000), 16: (5000, 2_000_000), 256: (5000, 1_000_000),
              4096: (2000, 300_000), 65536: (500, 30_000)},
}
SECONDS_AT_LINK_RATE = {"full": 2.0, "quick": 0.75}   # cap per measurement on a shaped link
MIN_COUNT = 200

# What a message costs on the wire: its ZMTP frame header (2 bytes up to 255
# bytes of body, 9 above), and per full TCP segment (MSS 1448 with
# timestamps) 66 bytes of TCP/IP/Ethernet headers; tbf counts the 1514-byte
# frame (no preamble or inter-frame gap).
MSS, FRAME = 1448, 1514


def link_limit(size: int, rate_bps: int | None) -> float | None:
    """The most messages/s of `size` bytes a link of rate_bps carries one way."""
    if rate_bps is None:
        return None
    wire = (size + (2 if size < 256 else 9)) * FRAME / MSS
    return rate_bps / 8 / wire


# --------------------------------------------------------------- measuring


class Failed(Exception):
    pass


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(("    " + line) for line in text.strip().splitlines()[-lines:])


def _pair(hosts, local_argv, remote_argv, timeout, parse_from):
    """Run the local tool on A and the remote tool on B; return the number
    the `parse_from` side ("local" or "remote") printed.  Either side failing
    fails the pair at once (the other is ended).  A side still running at the
    timeout is sent SIGABRT first: a Python tool (PYTHONFAULTHANDLER is set)
    then prints every thread's stack, which goes into the error."""
    sides = {}
    started = time.monotonic()

    def report():
        parts = []
        for name, side in sides.items():
            proc, out, err = side["proc"], side["out"], side["err"]
            state = (f"still running after {time.monotonic() - started:.1f} s"
                     if side.get("ended") is None
                     else f"exited {proc.returncode} after {side['ended'] - started:.1f} s")
            err.seek(0)
            out.seek(0)
            text = (err.read().strip() + "\n" + out.read().strip()).strip()
            parts.append(f"  {name} side ({side['tool']}) {state}"
                         + (":\n" + _tail(text, 40) if text else ""))
        return "\n".join(parts)

    try:
        for name, host, argv in (("local", hosts.a, local_argv), ("remote", hosts.b, remote_argv)):
            out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
            tool = Path(str(argv[2] if argv[0] == sys.executable else argv[0])).name
            proc = hosts.popen(host, argv, stdout=out, stderr=err,
                               env=hosts.env({"PYTHONFAULTHANDLER": "1"}))
            sides[name] = {"proc": proc, "out": out, "err": err, "tool": tool}
        deadline = started + timeout
        while True:
            for side in sides.values():
                if side.get("ended") is None and side["proc"].poll() is not None:
                    side["ended"] = time.monotonic()
            if any(s["proc"].returncode not in (None, 0) for s in sides.values()):
                raise Failed("a side failed:\n" + report())
            if all(s.get("ended") is not None for s in sides.values()):
                break
            if time.monotonic() > deadline:
                stuck = [s for s in sides.values() if s.get("ended") is None]
                for side in stuck:
                    side["proc"].send_signal(signal.SIGABRT)
                for side in stuck:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        side["proc"].wait(2.0)
                raise Failed(f"not done within {timeout:.0f} s:\n" + report())
            time.sleep(0.01)
        out = sides[parse_from]["out"]
        out.seek(0)
        text = out.read()
    finally:
        for side in sides.values():
            netns._end(side["proc"], grace=1.0)
            side["out"].close()
            side["err"].close()
    match = (benchlib.LAT_RE if parse_from == "remote" else benchlib.THR_RE).search(text)
    if not match:
        raise Failed(f"no result in the {parse_from} side's output:\n{_tail(text)}")
    return float(match.group(1))


def base_counts(mode, size):
    """COUNTS for one of the seed's sizes; for another size, those of the
    nearest one, fewer messages above 64 KiB."""
    table = COUNTS[mode]
    if size in table:
        return table[size]
    nearest = min(table, key=lambda s: abs(math.log(s) - math.log(size)))
    rt, n = table[nearest]
    if size > nearest:
        n = max(MIN_COUNT, int(n * nearest / size))
        rt = max(MIN_COUNT, int(rt * nearest / size))
    return rt, n


class Runner:
    def __init__(self, hosts, server, c_tools, mode, rate_bps):
        self.hosts, self.server, self.c = hosts, server, c_tools
        self.mode, self.rate_bps = mode, rate_bps
        a = hosts.a
        self.py = [sys.executable, "-u"]
        self.el, self.ql, self.q = f"{a.veth}:{EL_PORT}", f"{a.veth}:{QL_PORT}", f"{a.veth}:{Q_PORT}"

    def counts(self, size):
        """(round trips, messages) for `size`, capped so a shaped link
        carries them in about SECONDS_AT_LINK_RATE seconds."""
        rt, n = base_counts(self.mode, size)
        limit = link_limit(size, self.rate_bps)
        if limit is not None:
            seconds = SECONDS_AT_LINK_RATE[self.mode]
            n = max(MIN_COUNT, min(n, int(limit * seconds)))
            rt = max(MIN_COUNT, min(rt, int(limit * seconds / 2)))
        return rt, n

    def timeout(self, count, size):
        limit = link_limit(size, self.rate_bps)
        return 60.0 + (10.0 * count / limit if limit else 0.0)

    def lat(self, impl, size, rt):
        a = self.hosts.a
        if impl == "c":
            ep = f"tcp://{a.ip}:{C_LAT_PORT}"
            local = [self.c["local_lat"], ep, size, rt]
            remote = [self.c["remote_lat"], ep, size, rt]
        else:
            local = [*self.py, HERE / "local_lat.py", self.server.address, self.el, self.ql, size, rt]
            remote = [*self.py, HERE / "remote_lat.py", self.server.address, size, rt]
        return _pair(self.hosts, local, remote, self.timeout(2 * rt, size), "remote")

    def thr(self, impl, size, n):
        a = self.hosts.a
        if impl == "c":
            ep = f"tcp://{a.ip}:{C_THR_PORT}"
            local = [self.c["local_thr"], ep, size, n]
            remote = [self.c["remote_thr"], ep, size, n]
        else:
            local = [*self.py, HERE / "local_thr.py", self.server.address, self.q, size, n]
            remote = [*self.py, HERE / "remote_thr.py", self.server.address, size, n]
        return _pair(self.hosts, local, remote, self.timeout(n, size), "local")


def measure(runner, sizes, reps, log):
    """Every measurement, as benchlib.Measurement records.  As in bench.py, each
    repetition runs every (test, size) with each implementation in turn, so
    a slow drift of the machine hits both alike."""
    measurements = []
    cells = [(test, size, impl) for test in ("lat", "thr") for size in sizes for impl in IMPLS]
    total, k = reps * len(cells), 0
    for rep in range(1, reps + 1):
        for test, size, impl in cells:
            k += 1
            rt, n = runner.counts(size)
            count = rt if test == "lat" else n
            t0 = time.monotonic()
            try:
                value, status, error = (runner.lat if test == "lat" else runner.thr)(impl, size, count), "ok", ""
            except Failed as e:
                value, status, error = None, "failed", str(e)
            wall = time.monotonic() - t0
            unit = benchlib.UNITS[test]
            measurements.append(benchlib.Measurement(test, size, impl, rep, count, value, unit,
                                                     status, error, "", round(wall, 3)))
            shown = f"{benchlib.fmt_value(value, unit)} {unit}" if value is not None else f"FAILED: {error}"
            log(f"[{k}/{total}] rep {rep} {test} {size}B {benchlib.LABELS[impl]}: {shown} "
                f"({count} {'round trips' if test == 'lat' else 'messages'}, {wall:.1f} s)")
    return measurements


# --------------------------------------------------------------- reporting


def format_link(rows, sizes, rate_bps) -> list[str]:
    """What the shaped link can carry at each size, and how much of it each
    implementation used (its median throughput / the limit)."""
    if rate_bps is None:
        return []
    medians = {(r["size"], r["impl"]): r["median"] for r in rows if r["test"] == "thr"}
    lines = [f"link {netns.format_rate(rate_bps)}: the most messages/s it carries one way, "
             "and the share each implementation used"]
    for size in sizes:
        limit = link_limit(size, rate_bps)
        used = "  ".join(f"{benchlib.LABELS[i]}={medians[size, i] / limit:.0%}"
                         for i in IMPLS if medians.get((size, i)))
        lines.append(f"link {f'{size}B':<7} max={limit:.0f}msg/s  {used}".rstrip())
    return lines


def write_chart(rows, sizes, path, title, rate_bps=None):
    """bench.py's two panels (latency, throughput against size, log-log,
    median with min-max bars), plus the link's limit on a shaped link."""
    def link_line(ax, test):
        if test == "thr" and rate_bps is not None:
            ax.plot(sizes, [link_limit(s, rate_bps) for s in sizes], "k--", linewidth=1,
                    label=f"link limit ({netns.format_rate(rate_bps)})")

    benchlib.chart(path, rows, sizes, title, link_line, dodge=False)


# --------------------------------------------------------------- main


def _sizes(text):
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes are comma-separated numbers") from None
    if not sizes or any(s < 1 or s > 1 << 24 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be 1 .. 16777216 bytes")
    return sizes


def _rate(text):
    try:
        return netns.parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="rig.py", description="The perf tools, C reference and pyzmq-wiring, across "
        "two network namespaces joined by a veth pair (needs root, ip and tc).")
    p.add_argument("--rate", type=_rate, default=netns.parse_rate(DEFAULT_RATE),
                   help="shape the link to this rate with tc tbf, e.g. 1gbit, 100mbit; "
                        "'none' for the bare veth (default: 1gbit, the seed's link)")
    p.add_argument("--burst", metavar="B",
                   help="the shaper's bucket: a time at the rate (125us, 1ms) or bytes "
                        "(default 125us: a wire; 1ms keeps the link full on a busy machine)")
    p.add_argument("--quick", action="store_true", help="fewer messages, one repetition (about 15 s)")
    p.add_argument("--sizes", type=_sizes, default=SIZES, help="message sizes, comma-separated "
                   "(default: 1,16,256,4096,65536)")
    p.add_argument("--reps", type=int, metavar="N",
                   help="repetitions: each measurement runs N times, the table shows the "
                        "median and the spread (default: 3, with --quick 1)")
    p.add_argument("--busy-core", nargs="?", type=int, const=1, default=0, metavar="N",
                   help="as bench.py: N (default 1) lowest-priority spinning processes keep "
                        "the vCPUs from idling during the run")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="run host A's processes on one half of the CPUs and B's on the "
                        "other, as two boxes would (default: on)")
    p.add_argument("--chart", type=Path, help="where to write the chart (default: "
                   "perf/results/rig-<rate>.png)")
    p.add_argument("--no-chart", action="store_true", help="do not write a chart")
    p.add_argument("--cleanup-stale", action="store_true",
                   help="only remove namespaces left by rig runs or tests that were killed, and exit")
    a = p.parse_args(argv)
    if a.reps is None:
        a.reps = 1 if a.quick else 3
    if a.reps < 1:
        p.error("--reps must be at least 1")
    if a.busy_core < 0:
        p.error("--busy-core: N must be 0 or more")
    burst = None
    if a.burst is not None:
        if a.rate is None:
            p.error("--burst needs a shaped link (a --rate other than none)")
        try:
            burst = netns.parse_burst(a.burst, a.rate)
        except ValueError as e:
            p.error(f"--burst: {e}")

    try:
        netns.check_requirements(need_tc=True)
    except netns.RigUnavailable as e:
        print(f"rig.py: cannot run here: {e}", file=sys.stderr)
        return 2
    if a.cleanup_stale:
        removed = netns.cleanup_stale()
        print("removed: " + ", ".join(removed) if removed else "nothing stale to remove")
        return 0

    build = benchlib.load_c_build()
    try:
        c_tools = build.build()
    except build.BuildError as e:
        print(f"rig.py: cannot build the C reference tools: {e}", file=sys.stderr)
        return 2

    mode = "quick" if a.quick else "full"
    chart = a.chart or (HERE / "results" / f"rig-{netns.rate_label(a.rate)}.png")

    def log(line):
        print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    spinners = None
    try:
        with netns.signals_interrupt():
            with netns.TwoHosts("rig", rate_bps=a.rate, burst=burst) as hosts:
                log(f"rig: host A {hosts.a.netns} {hosts.a.veth} {hosts.a.ip}, "
                    f"host B {hosts.b.netns} {hosts.b.veth} {hosts.b.ip}, "
                    f"link {netns.format_rate(a.rate)}"
                    + (f" (tbf, burst {hosts.burst} B)" if a.rate else ""))
                load = os.getloadavg()[0]
                if load > 0.5 * len(os.sched_getaffinity(0)):
                    log(f"rig: warning: load average {load:.1f}: other work competes for the "
                        "CPUs; expect noisier numbers (and on a shaped link, shares below 100%)")
                pinned = a.pin and len(os.sched_getaffinity(0)) >= 2
                if pinned:
                    a_cpus, b_cpus = hosts.pin()
                    log(f"rig: host A on CPUs {sorted(a_cpus)}, host B on CPUs {sorted(b_cpus)}")
                else:
                    log("rig: hosts not pinned: both share every CPU")
                server = hosts.start_server(hosts.a)
                log(f"rig: zmq_server on A at {server.address}; {mode} run, {a.reps} reps")
                if a.busy_core:
                    spinners = benchlib.Spinners(a.busy_core, sys.executable)
                try:
                    runner = Runner(hosts, server, c_tools, mode, a.rate)
                    measurements = measure(runner, a.sizes, a.reps, log)
                finally:
                    if spinners is not None:
                        spinners.stop()
                registered = server.registrations()
                a_ip = hosts.a.ip
                qdisc = hosts.qdisc_stats(hosts.b) if a.rate else ""
    except KeyboardInterrupt as e:
        why = f" ({e})" if str(e) else ""
        print(f"rig.py: interrupted{why}; namespaces and processes removed", file=sys.stderr)
        return 130
    except (netns.RigUnavailable, netns.CommandFailed) as e:
        print(f"rig.py: cannot build the two hosts: {e}", file=sys.stderr)
        return 2

    rows = benchlib.summarize(measurements)
    failures = [f"{m.test} {m.size}B {benchlib.LABELS[m.impl]} rep {m.rep}: {m.error}"
                for m in measurements if m.status != "ok"]
    print(f"two-host rig: {netns.format_rate(a.rate)} veth between namespaces A and B"
          + (f" (tbf burst {burst or netns.tbf_burst(a.rate)} B)" if a.rate else "")
          + f", {'hosts pinned to separate CPUs' if pinned else 'hosts share the CPUs'}"
          + (f", busy-core {a.busy_core}" if a.busy_core else ""))
    print(f"mode: {mode}, {a.reps} reps, sizes {' '.join(map(str, a.sizes))} B, "
          f"{time.monotonic() - started:.0f} s; ratio = pyzmq-wiring / C")
    print("\n".join(benchlib.table_lines(rows, IMPLS)))
    for line in format_link(rows, a.sizes, a.rate):
        print(line)
    # every name the local tools registered must be A's veth address and the
    # port given in its NIC-name location (never 0.0.0.0 or a loopback address)
    wanted = {"EL": f"{a_ip}:{EL_PORT}", "QL": f"{a_ip}:{QL_PORT}", "Q": f"{a_ip}:{Q_PORT}"}
    bad = {n: addr for n, addr in registered.items() if wanted.get(n) != addr}
    print("directory: " + ", ".join(f"{n} at {addr}" for n, addr in sorted(registered.items())))
    if bad:
        failures.append(f"the directory holds addresses B cannot use: {bad}")
    if qdisc:
        log("rig: shaper on B's side after the run:\n" + _tail(qdisc))
    if not a.no_chart:
        title = (f"two-host rig: {netns.format_rate(a.rate)} veth, "
                 f"{'pinned' if pinned else 'unpinned'}, {mode}, {a.reps} reps "
                 "(median, bars min-max)" + (f", busy-core {a.busy_core}" if a.busy_core else ""))
        try:
            write_chart(rows, a.sizes, chart, title, a.rate)
            print(f"chart: {chart}")
        except ImportError as e:
            log(f"rig: no chart ({e}); pip install matplotlib")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
