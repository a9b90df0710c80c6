"""Short variants of perf/directory_bench.py's scale runs (issue 13 item 4),
with real processes and a real zmq_server: many instances in several
processes register, one binder binds to all of them, and one message
arrives through every binding; many raw clients hold leases and names.
Only counts are asserted, never timings."""

import re
import subprocess
import sys

from helpers import ROOT, child_env

BENCH = str(ROOT / "perf" / "directory_bench.py")


def _run(*args, timeout=120):
    r = subprocess.run([sys.executable, BENCH, "--scale", *args], capture_output=True, text=True,
                       timeout=timeout, env=child_env())
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_two_hundred_instances_in_four_processes_one_binder_reaches_every_one():
    out = _run("--only", "e2e", "--instances", "200", "--instance-procs", "4")
    assert re.search(r"register: all 200 in [\d.]+ s", out), out
    assert re.search(r"bind: one binder to all 200 in [\d.]+ s", out), out
    assert "messages: 200 of 200 arrived, one through each binding" in out, out


def test_many_connected_clients_hold_their_names_and_lookups_go_on():
    out = _run("--only", "clients", "--clients", "300", "--client-procs", "2", "--client-names", "5",
               "--seconds", "0.5", "--concurrent", "4")
    assert re.search(r"connect and LEASE: 300 clients in [\d.]+ s", out), out
    assert re.search(r"REGISTER, 1,500 names over the 300 connections .*: [\d.]+ s, [\d,]+ names/s", out), out
    assert re.search(r"bytes a name", out), out
    assert re.search(r"LOOKUP, 4 plain DEALERs from one thread, with the 300 clients connected: [\d,]+/s", out), out
