#!/usr/bin/env python3
"""The directory on etcd beside zmq_server: register and lookup rates and
latencies, and what losing the etcd leader costs.

    .venv/bin/python perf/etcd_bench.py                     # 2,000 names, 5,000 lookups, 1 and 8 clients
    .venv/bin/python perf/etcd_bench.py --names 200 --lookups 500 --clients 1 --failovers 0

Starts a real ``zmq_server`` and a real 3-node etcd cluster on 127.0.0.1
(``pyzmq.testing``), and with the same client code against each
(``DirectoryClient`` and ``EtcdDirectory``, the interface the wiring layer
uses) times, per number of concurrent clients (threads, one directory
client each):

* register: ``--names`` new names, split over the clients, each call timed;
* lookup: ``--lookups`` lookups of those names, split likewise;

and prints operations a second, p50 and p99.  Then the watch latency
(``--watch`` changes, default 200): one client registers a name, another
has a watch (``subscribe``) on the names, and each change is timed from the
start of the registration until the watcher's thread takes its event
(both backends in alternate rounds of 20, printed with their ratio).  With
``--failovers N`` it then SIGKILLs the etcd leader N times while one client
registers names in a loop, and prints the longest a registration took (and
restarts the node).  Nothing is asserted.
"""

import argparse
import os
import platform
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from pyzmq.directory import DirectoryClient  # noqa: E402
from pyzmq.testing import EtcdCluster, ServerProcess  # noqa: E402


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def run(make, names, lookups, clients, tag):
    """Time registrations and lookups from ``clients`` threads; return rows."""
    dirs = [make() for _ in range(clients)]
    try:
        rows = {}
        for op, total in (("register", names), ("lookup", lookups)):
            times = [[] for _ in range(clients)]
            barrier = threading.Barrier(clients + 1)

            def work(k):
                d = dirs[k]
                barrier.wait()
                own = times[k]
                count = total // clients
                for i in range(count):
                    name = f"{tag}-{k}-{i}" if op == "register" else f"{tag}-{k}-{i % max(1, names // clients)}"
                    t0 = time.perf_counter()
                    if op == "register":
                        d.register("Q", name, "127.0.0.1:5555")
                    else:
                        d.lookup(name)
                    own.append(time.perf_counter() - t0)

            threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            barrier.wait()
            started = time.perf_counter()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
            flat = [x for own in times for x in own]
            rows[op] = (len(flat) / elapsed, _pct(flat, 0.5), _pct(flat, 0.99))
        return rows
    finally:
        for d in dirs:
            d.close()


def watch_latency(backends, changes, chunk=20):
    """Seconds from the start of a registration to its event in another
    client's watch, per backend, measured in alternate rounds of ``chunk``."""
    out = {}
    pairs = []
    try:
        for label, make in backends:
            writer, watcher = make(), make()
            pairs.append((label, writer, watcher))
            seen = {}
            watch = watcher.subscribe("lat-*")
            reader = threading.Thread(target=_take_events, args=(watch, seen), daemon=True)
            reader.start()
            out[label] = ([], writer, watch, seen, reader)
        done = 0
        while done < changes:
            n = min(chunk, changes - done)
            for label, (times, writer, watch, seen, _) in out.items():
                for i in range(done, done + n):
                    name = f"lat-{i}"
                    t0 = time.perf_counter()
                    writer.register("Q", name, "127.0.0.1:5555")
                    deadline = time.monotonic() + 10
                    while name not in seen:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{label}: no event for {name} within 10 s")
                        time.sleep(0.0002)
                    times.append(seen.pop(name) - t0)
            done += n
        return {label: v[0] for label, v in out.items()}
    finally:
        for label, writer, watcher in pairs:
            writer.close()
            watcher.close()     # (ends its watch, and so its reader thread)
        for v in out.values():
            v[4].join(5)


def _take_events(watch, seen):
    """A watcher's thread: note when each added name's event arrived."""
    try:
        for kind, entry in watch:
            if kind == "added":
                name = entry["name"] if isinstance(entry, dict) else entry.name
                seen[name] = time.perf_counter()
    except Exception:
        pass        # the watch ended (its client closed)


def failover(cluster, rounds):
    """SIGKILL the leader while registering; the slowest registration per round."""
    from pyzmq.etcd_directory import EtcdDirectory
    out = []
    for r in range(rounds):
        with EtcdDirectory(cluster.url + f"/failover{r}", timeout=15) as d:
            leader = cluster.leader()
            killer = threading.Timer(0.5, cluster.kill, (leader,))
            killer.start()
            worst, i, started = 0.0, 0, time.monotonic()
            while time.monotonic() - started < 4.0:
                t0 = time.monotonic()
                d.register("Q", f"n{i}", "127.0.0.1:5555")
                worst = max(worst, time.monotonic() - t0)
                i += 1
            killer.join()
            out.append((worst, i))
        cluster.restart(leader)
        cluster.wait_healthy()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=2000, help="names to register per run (default 2000)")
    parser.add_argument("--lookups", type=int, default=5000, help="lookups per run (default 5000)")
    parser.add_argument("--clients", default="1,8", help="concurrent clients, comma-separated (default 1,8)")
    parser.add_argument("--watch", type=int, default=200, help="changes whose watch event is timed (default 200)")
    parser.add_argument("--failovers", type=int, default=3, help="leader kills to time (default 3)")
    args = parser.parse_args(argv)
    try:
        counts = [int(c) for c in args.clients.split(",")]
    except ValueError:
        parser.error("--clients takes numbers such as 1,8")
    if args.names < 1 or args.lookups < 1 or any(c < 1 for c in counts) or args.failovers < 0 or args.watch < 0:
        parser.error("--names, --lookups and --clients must be at least 1, --watch and --failovers at least 0")
    try:
        from pyzmq.etcd_directory import EtcdDirectory
    except ImportError:
        parser.error("the etcd backend needs etcd3gw: pip install '.[etcd]' (setup.sh does)")

    print(f"directory backends, zmq_server vs etcd  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, loopback; etcd: 3 nodes, one process each")
    print(f"{'backend':12}{'clients':>8}{'op':>10}{'ops/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    with ServerProcess(quiet=True) as server, EtcdCluster() as cluster:
        backends = [("zmq_server", lambda: DirectoryClient(server.address)),
                    ("etcd", lambda: EtcdDirectory(cluster.url + "/bench"))]
        for clients in counts:
            for label, make in backends:
                rows = run(make, args.names, args.lookups, clients, f"c{clients}")
                for op, (rate, p50, p99) in rows.items():
                    print(f"{label:12}{clients:>8}{op:>10}{rate:>10,.0f}{p50 * 1e3:>9.2f}{p99 * 1e3:>9.2f}",
                          flush=True)
        if args.watch:
            lat = watch_latency(backends, args.watch)
            print(f"watch latency, registration start -> event taken by the watcher ({args.watch} changes, "
                  "alternate rounds of 20):")
            for label, times in lat.items():
                print(f"{label:12}{1:>8}{'watch':>10}{'-':>10}"
                      f"{_pct(times, 0.5) * 1e3:>9.2f}{_pct(times, 0.99) * 1e3:>9.2f}", flush=True)
            ratio = _pct(lat["etcd"], 0.5) / _pct(lat["zmq_server"], 0.5)
            print(f"median watch latency, etcd / zmq_server: {ratio:.1f}x", flush=True)
        if args.failovers:
            for worst, n in failover(cluster, args.failovers):
                print(f"etcd leader SIGKILLed during registrations: the slowest of {n} took {worst:.2f} s",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
