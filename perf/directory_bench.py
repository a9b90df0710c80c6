#!/usr/bin/env python3
"""What securing the directory connection costs: plain vs CURVE, side by side.

    .venv/bin/python perf/directory_bench.py                 # 200 connects, 20,000 lookups each
    .venv/bin/python perf/directory_bench.py --connects 50 --lookups 2000

Starts two real ``zmq_server`` processes on 127.0.0.1, one plain and one
with ``--curve-secret`` (and ``--curve-allow`` holding the client's key),
and times with the same client code against each:

* connect: TCP connect plus HELLO (plain) or the four-frame handshake
  (CURVE), until ``DirectoryClient`` returns; median and 90th percentile;
* lookup: round trips of LOOKUP on one connection, one after another
  (what ``bind()`` and ``receive`` never do on the hot path: the directory
  is only asked when wiring).

It prints the figures and the ratio secure/plain; nothing is asserted.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pyzmq  # noqa: E402
from pyzmq.directory import DirectoryClient  # noqa: E402
from pyzmq.testing import ServerProcess  # noqa: E402


def measure(address, kw, connects, lookups):
    times = []
    for _ in range(connects):
        started = time.perf_counter()
        client = DirectoryClient(address, **kw)
        times.append(time.perf_counter() - started)
        client.close()
    with DirectoryClient(address, **kw) as client:
        client.register("Q", "bench-name", "127.0.0.1:5555")
        lookup = client.lookup
        for _ in range(min(200, lookups)):      # warm up
            lookup("bench-name")
        started = time.perf_counter()
        for _ in range(lookups):
            lookup("bench-name")
        elapsed = time.perf_counter() - started
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1], lookups / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connects", type=int, default=200, help="connections to time (default 200)")
    parser.add_argument("--lookups", type=int, default=20000, help="LOOKUP round trips to time (default 20000)")
    args = parser.parse_args(argv)
    if args.connects < 1 or args.lookups < 1:
        parser.error("--connects and --lookups must be at least 1")

    server_public, server_secret = pyzmq.curve_keypair()
    client_public, client_secret = pyzmq.curve_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        secret_file = os.path.join(tmp, "directory.key")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(server_secret + "\n")
        allow_file = os.path.join(tmp, "clients")
        with open(allow_file, "w") as f:
            f.write(client_public + "\n")
        print(f"directory connection, plain vs CURVE  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, loopback")
        rows = {}
        with ServerProcess(quiet=True) as plain, \
                ServerProcess(quiet=True, extra_args=["--curve-secret", secret_file,
                                                      "--curve-allow", allow_file]) as secure:
            rows["plain"] = measure(plain.address, {}, args.connects, args.lookups)
            rows["curve"] = measure(secure.address, dict(server_key=server_public, secret_key=client_secret),
                                    args.connects, args.lookups)
    print(f"{'':8}{'connect median':>16}{'connect p90':>14}{'lookups/s':>12}")
    for name, (median, p90, rate) in rows.items():
        print(f"{name:8}{median * 1e3:>13.2f} ms{p90 * 1e3:>11.2f} ms{rate:>12,.0f}")
    (pm, pp, pr), (cm, cp, cr) = rows["plain"], rows["curve"]
    print(f"{'ratio':8}{cm / pm:>15.2f}x{cp / pp:>13.2f}x{cr / pr:>11.2f}x   (CURVE / plain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
