#!/usr/bin/env python3
"""The directory's costs and capacity, printed; nothing is asserted.

    .venv/bin/python perf/directory_bench.py                 # 200 connects, 20,000 lookups each
    .venv/bin/python perf/directory_bench.py --connects 50 --lookups 2000
    .venv/bin/python perf/directory_bench.py --scale          # also the capacity rows below

Starts real ``zmq_server`` processes on 127.0.0.1, one plain and one with
``--curve-secret`` (and ``--curve-allow`` holding the client's key), and
times with the same client code against each:

* connect: the ZeroMQ connection (NULL, or the CurveZMQ handshake) and the
  LEASE, until ``DirectoryClient`` returns; median and 90th percentile;
* lookup: round trips of LOOKUP from one client, one after another
  (what ``bind()`` and ``receive`` never do on the hot path: the directory
  is only asked when wiring).

With ``--scale`` (plain server, load from ``--procs`` processes):

* server capacity: LOOKUPs from ``--concurrent`` plain pyzmq DEALERs, each
  one request at a time (lookups/s, p50, p99), and REGISTERs pipelined
  under leases (names/s);
* the same LOOKUPs through ``--concurrent`` ``DirectoryClient`` objects;
* the server's RSS per name after ``--names`` registrations.
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
from pyzmq import protocol as p  # noqa: E402
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
    parser.add_argument("--scale", action="store_true", help="also measure the server's capacity (below)")
    parser.add_argument("--concurrent", type=int, default=50, help="concurrent clients for --scale (default 50)")
    parser.add_argument("--procs", type=int, default=5, help="processes they run in (default 5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per --scale load run (default 5)")
    parser.add_argument("--names", type=int, default=100_000, help="names registered for --scale (default 100,000)")
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
        print(f"directory link, plain vs CURVE  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
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
    if args.scale:
        scale(args)
    return 0


def _load(address, threads, seconds, raw, out):
    """In a child process: ``threads`` clients doing LOOKUPs one at a time."""
    import threading
    import zmq
    from pyzmq import protocol as p
    lat = []
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)

    def run():
        if raw:
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(f"tcp://{address}")
            body = p.encode_request(p.Lookup("bench-name"))
            n = 0

            def one():
                nonlocal n
                n += 1
                sock.send_multipart([p.encode_header(n), body])
                sock.recv_multipart()
        else:
            client = DirectoryClient(address, timeout=10)
            one = lambda: client.lookup("bench-name")   # noqa: E731
        ready.wait()
        mine = []
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            t = time.perf_counter()
            one()
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)
        (sock.close() if raw else client.close())

    ctx = zmq.Context()
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    for w in workers:
        w.join()
    ctx.destroy(linger=0)
    out.put(lat)


def _lookup_load(address, args, raw):
    import multiprocessing as mp
    out = mp.Queue()
    per = [args.concurrent // args.procs + (1 if i < args.concurrent % args.procs else 0) for i in range(args.procs)]
    procs = [mp.Process(target=_load, args=(address, n, args.seconds, raw, out)) for n in per if n]
    for proc in procs:
        proc.start()
    lat = []
    for _ in procs:
        lat.extend(out.get())
    for proc in procs:
        proc.join()
    lat.sort()
    return len(lat) / args.seconds, lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def _register_many(address, count, prefix):
    """REGISTERs pipelined on plain DEALERs, 10,000 names a lease; returns names/s."""
    import zmq
    from pyzmq import protocol as p
    ctx = zmq.Context()
    done = 0
    started = time.perf_counter()
    try:
        while done < count:
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(f"tcp://{address}")
            sock.send_multipart([p.encode_header(0), p.encode_request(p.Lease(300_000, "bench", 0, "bench"))])
            lease = p.decode_reply(sock.recv_multipart()[1]).lease
            batch = min(p.MAX_NAMES_PER_LEASE, count - done)
            sent = got = 0
            while got < batch:
                while sent < batch and sent - got < 500:
                    name = f"{prefix}{done + sent:07d}"
                    sock.send_multipart([p.encode_header(sent + 1), p.encode_request(
                        p.Register(lease, "E", name, "127.0.0.1:5555"))])
                    sent += 1
                reply = p.decode_reply(sock.recv_multipart()[1])
                assert isinstance(reply, p.Ok), reply
                got += 1
            done += batch
            sock.close()      # the lease stays until its TTL (300 s): the names stay for the RSS figure
    finally:
        ctx.destroy(linger=0)
    return count / (time.perf_counter() - started)


def scale(args):
    print(f"\ncapacity of one plain zmq_server (load average {os.getloadavg()[0]:.1f} at start)")
    with ServerProcess(quiet=True, extra_args=["--max-ttl", "600"]) as server:
        with DirectoryClient(server.address, timeout=10) as owner:
            owner.register("Q", "bench-name", "127.0.0.1:5555")
            rate, p50, p99 = _lookup_load(server.address, args, raw=True)
            print(f"LOOKUP, {args.concurrent} plain DEALERs in {args.procs} processes, one request at a time: "
                  f"{rate:,.0f}/s, p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
            rate, p50, p99 = _lookup_load(server.address, args, raw=False)
            print(f"LOOKUP, {args.concurrent} DirectoryClients in {args.procs} processes: "
                  f"{rate:,.0f}/s, p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
            rss0 = server.rss_kib()
            rate = _register_many(server.address, args.names, "bench.")
            time.sleep(0.5)
            rss1 = server.rss_kib()
            print(f"REGISTER, pipelined, {args.names:,} names under {-(-args.names // p.MAX_NAMES_PER_LEASE)} "
                  f"leases: {rate:,.0f} names/s")
            print(f"server RSS: {rss0:,} KiB before, {rss1:,} KiB with {args.names:,} names more: "
                  f"{(rss1 - rss0) * 1024 / args.names:,.0f} bytes a name")


if __name__ == "__main__":
    sys.exit(main())
