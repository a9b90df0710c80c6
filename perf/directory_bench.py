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
if "--root" in sys.argv[:-1]:
    ROOT = os.path.abspath(sys.argv[sys.argv.index("--root") + 1])
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
    parser.add_argument("--clients", type=int, default=10_000,
                        help="connected clients for --scale (default 10,000; 0: skip)")
    parser.add_argument("--client-names", type=int, default=10, help="names each of them holds (default 10)")
    parser.add_argument("--client-procs", type=int, default=8, help="processes they run in (default 8)")
    parser.add_argument("--instances", type=int, default=2000,
                        help="pyzmq.ZMQ instances for the end-to-end run of --scale (default 2,000; 0: skip)")
    parser.add_argument("--instance-procs", type=int, default=8, help="processes they run in (default 8)")
    parser.add_argument("--server-heartbeat", metavar="SECONDS", type=float, action="append",
                        help="with --scale clients: zmq_server --heartbeat for the idle-CPU figure; "
                             "give it several times to compare them (servers started in turn, "
                             "twice each, alternating)")
    parser.add_argument("--only", choices=["lookup", "clients", "e2e", "state"],
                        help="with --scale: run only this part (and skip the plain-vs-CURVE rows)")
    parser.add_argument("--root", metavar="DIR",
                        help="import pyzmq (client and server) from this checkout instead of this "
                             "script's, e.g. an older build to compare with")
    args = parser.parse_args(argv)
    if args.connects < 1 or args.lookups < 1:
        parser.error("--connects and --lookups must be at least 1")
    if args.only and not args.scale:
        parser.error("--only needs --scale")
    soft, hard = _raise_fd_limit()
    print(f"open files: soft limit raised to {soft:,} (hard {hard:,}) for this script and its children")
    if args.only:
        return scale_parts(args)

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
        scale_parts(args)
    return 0


def scale_parts(args):
    machine(args)
    if args.only in (None, "lookup"):
        scale(args)
    if args.only in (None, "clients") and args.clients:
        if args.server_heartbeat:
            # the idle figure for each heartbeat, servers started in turn (A B C A B C)
            for _ in range(2):
                for heartbeat in args.server_heartbeat:
                    many_clients(args, heartbeat=heartbeat, idle_only=True)
        else:
            many_clients(args)
    if args.only in (None, "e2e") and args.instances:
        end_to_end(args)
    if args.only == "state":
        state_cost(args)
    return 0


def _register_keyed(address, count, server_public, public, secret, prefix):
    """REGISTERs of keyed names pipelined on one CURVE DEALER (``count`` at
    most one lease's worth); returns names/s."""
    import zmq
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
            server_public.encode(), public.encode(), secret.encode())
        sock.connect(f"tcp://{address}")
        sock.send_multipart([p.encode_header(0), p.encode_request(p.Lease(300_000, "bench", 0, "bench"))])
        lease = p.decode_reply(sock.recv_multipart()[1]).lease
        sent = got = 0
        started = time.perf_counter()
        while got < count:
            while sent < count and sent - got < 500:
                sock.send_multipart([p.encode_header(sent + 1), p.encode_request(
                    p.Register(lease, "E", f"{prefix}{sent:07d}", "127.0.0.1:5555", public))])
                sent += 1
            reply = p.decode_reply(sock.recv_multipart()[1])
            assert isinstance(reply, p.Ok), reply
            got += 1
        return count / (time.perf_counter() - started)
    finally:
        ctx.destroy(linger=0)


def state_cost(args):
    """``--only state``: REGISTERs of keyed names on a CURVE zmq_server
    without and with ``--state FILE`` (every one is a change the file must
    get), servers started in turn, twice each, alternating."""
    count = min(args.names, p.MAX_NAMES_PER_LEASE)
    server_public, server_secret = pyzmq.curve_keypair()
    public, secret = pyzmq.curve_keypair()
    print(f"\nREGISTER of {count:,} keyed names pipelined on one CURVE DEALER, without and with --state "
          f"(load average {os.getloadavg()[0]:.1f} at start)")
    with tempfile.TemporaryDirectory() as tmp:
        secret_file = os.path.join(tmp, "directory.key")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(server_secret + "\n")
        for run in range(2):
            for with_state in (False, True):
                extra = ["--curve-secret", secret_file, "--max-ttl", "600"]
                state = os.path.join(tmp, f"state{run}.json")
                if with_state:
                    extra += ["--state", state]
                with ServerProcess(quiet=True, extra_args=extra) as server:
                    rate = _register_keyed(server.address, count, server_public, public, secret, f"k{run}.")
                size = os.path.getsize(state) if with_state and os.path.exists(state) else 0
                print(f"run {run + 1}, {'with --state' if with_state else 'without':13}: {rate:,.0f} names/s"
                      + (f" (final file {size:,} bytes)" if with_state else ""))


def machine(args):
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    print(f"pyzmq from {os.path.dirname(os.path.dirname(os.path.abspath(pyzmq.__file__)))}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores ({model}); "
          f"load average {os.getloadavg()[0]:.1f}")


def _raise_fd_limit():
    """Lift this process's soft open-files limit to its hard limit (allowed
    without privileges; zmq_server's own way); children inherit it.
    Returns (soft, hard)."""
    import resource
    from pyzmq.server import _raise_fd_limit as raise_limit
    raise_limit()
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu(pid):
    """{thread name: CPU seconds} of process ``pid``'s threads (Linux /proc)."""
    got = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            got[name] = got.get(name, 0.0) + _cpu_seconds(f"{pid}/task/{tid}")
        except OSError:
            pass
    return got


def _percentiles(lat):
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def _load(address, threads, seconds, mode, out, go):
    """In a child process: ``threads`` clients doing LOOKUPs one at a time:
    mode "raw" (plain pyzmq DEALERs, a thread each), "client" (a
    DirectoryClient each, a thread each) or "poll" (``threads`` DEALERs
    driven by one thread, each with one request in flight: the cheapest
    load a Python process can make).  Puts (latencies, CPU seconds)."""
    import threading
    import zmq
    from pyzmq import protocol as p
    ctx = zmq.Context()
    body = p.encode_request(p.Lookup("bench-name"))
    lat = []
    if mode == "poll":
        socks = []
        for _ in range(threads):
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(f"tcp://{address}")
            socks.append(sock)
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        out.put("ready")
        go.wait()
        cpu0 = time.process_time()
        sent = {}
        for sock in socks:
            sock.send_multipart([p.encode_header(0), body])
            sent[sock] = time.perf_counter()
        stop = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < stop:
            for sock, _ in poller.poll(1000):
                sock.recv_multipart()
                now = time.perf_counter()
                lat.append(now - sent[sock])
                n += 1
                sock.send_multipart([p.encode_header(n & 0xFFFFFFFF), body])
                sent[sock] = time.perf_counter()
        cpu = time.process_time() - cpu0
        ctx.destroy(linger=0)
        out.put((lat, cpu))
        return
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)

    def run():
        if mode == "raw":
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(f"tcp://{address}")
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
        ready.wait()
        mine = []
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            t = time.perf_counter()
            one()
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)
        (sock.close() if mode == "raw" else client.close())

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    out.put("ready")
    go.wait()
    cpu0 = time.process_time()
    ready.wait()
    for w in workers:
        w.join()
    cpu = time.process_time() - cpu0
    ctx.destroy(linger=0)
    out.put((lat, cpu))


def _lookup_load(server, args, mode, procs=None):
    """LOOKUPs from ``--concurrent`` clients in ``procs`` processes for
    ``--seconds``; returns (rate, p50, p99, server CPU us a lookup, server
    share of a core, load CPU us a lookup)."""
    import multiprocessing as mp
    procs = procs or args.procs
    out, go = mp.Queue(), mp.Event()
    per = [args.concurrent // procs + (1 if i < args.concurrent % procs else 0) for i in range(procs)]
    children = [mp.Process(target=_load, args=(server.address, n, args.seconds, mode, out, go)) for n in per if n]
    for child in children:
        child.start()
    for _ in children:
        out.get()           # each is connected and waits for the start
    cpu0 = _cpu_seconds(server.pid)
    started = time.perf_counter()
    go.set()
    lat, load_cpu = [], 0.0
    for _ in children:
        got, cpu = out.get()
        lat.extend(got)
        load_cpu += cpu
    wall = time.perf_counter() - started
    server_cpu = _cpu_seconds(server.pid) - cpu0
    for child in children:
        child.join()
    n = max(1, len(lat))
    p50, p99 = _percentiles(lat)
    return (len(lat) / args.seconds, p50, p99, server_cpu / n * 1e6, server_cpu / wall, load_cpu / n * 1e6)


def _lookup_row(what, figures):
    rate, p50, p99, scpu, share, ccpu = figures
    print(f"LOOKUP, {what}: {rate:,.0f}/s, p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms "
          f"(server {scpu:.1f} us CPU a lookup, {share * 100:.0f}% of a core; load {ccpu:.0f} us CPU a lookup)")


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


def _register_clients(address, clients, names, prefix, out, go):
    """In a child: ``clients`` DirectoryClients in a thread each, each
    registering ``names`` names one after another (the way instances do)."""
    import threading
    ready = threading.Barrier(clients + 1)
    done = threading.Barrier(clients + 1)
    held = []

    def run(i):
        client = DirectoryClient(address, timeout=30)
        held.append(client)
        ready.wait()
        ready.wait()
        for j in range(names):
            client.register("Q", f"{prefix}{i}.{j}", "127.0.0.1:5555")
        done.wait()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    ready.wait()
    out.put("ready")
    go.wait()
    ready.wait()
    done.wait()
    out.put("done")
    for w in workers:
        w.join()
    for client in held:
        client.close()


def _register_through_clients(server, args):
    import multiprocessing as mp
    out, go = mp.Queue(), mp.Event()
    per_proc = [args.concurrent // args.procs + (1 if i < args.concurrent % args.procs else 0)
                for i in range(args.procs)]
    names = max(1, args.names // (5 * args.concurrent))
    children = [mp.Process(target=_register_clients, args=(server.address, n, names, f"reg.{k}.", out, go))
                for k, n in enumerate(per_proc) if n]
    for child in children:
        child.start()
    for _ in children:
        out.get()
    started = time.perf_counter()
    go.set()
    for _ in children:
        out.get()
    elapsed = time.perf_counter() - started
    for child in children:
        child.join()
    total = names * args.concurrent
    print(f"REGISTER, {args.concurrent} DirectoryClients in {args.procs} processes, {names} names each, "
          f"one at a time: {total / elapsed:,.0f} names/s")


def _hold_clients(address, count, names, prefix, out, go, release):
    """In a child: ``count`` plain DEALERs, each with a lease of 600 s and
    ``names`` names (pipelined per socket; connected in waves of 100, so
    that at most 100 connections of the process are in their handshake), registered once ``go`` is
    set; holds them until ``release``."""
    import zmq
    from pyzmq import protocol as p
    _raise_fd_limit()
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, count + 64)
    socks, leases = [], []
    resent = 0
    try:
        started = time.perf_counter()
        for wave in range(0, count, 100):
            fresh = []
            for _ in range(min(100, count - wave)):
                sock = ctx.socket(zmq.DEALER)
                sock.linger = 0
                sock.connect(f"tcp://{address}")
                sock.send_multipart([p.encode_header(0), p.encode_request(p.Lease(600_000, "bench", 0, "bench"))])
                fresh.append(sock)
            for sock in fresh:
                tries = 1
                while not sock.poll(10_000):
                    # a LEASE written on a connection the server then dropped
                    # (its handshake took longer than 5 s) is lost: ask again
                    if tries == 6:
                        raise RuntimeError("no LEASE answer within 60 s")
                    tries += 1
                    resent += 1
                    sock.send_multipart([p.encode_header(tries), p.encode_request(
                        p.Lease(600_000, "bench", 0, "bench"))])
                reply = p.decode_reply(sock.recv_multipart()[1])
                if not isinstance(reply, p.Granted):
                    raise RuntimeError(f"LEASE refused: {reply}")
                leases.append(reply.lease)
            socks.extend(fresh)
        leased = time.perf_counter() - started
        out.put(("leased", (leased, resent)))
        go.wait()
        started = time.perf_counter()
        for i, sock in enumerate(socks):
            for j in range(names):
                sock.send_multipart([p.encode_header(j + 1), p.encode_request(
                    p.Register(leases[i], "Q", f"{prefix}{i}.{j}", "127.0.0.1:5555"))])
        for sock in socks:
            for _ in range(names):
                if not sock.poll(60_000):
                    raise RuntimeError("no REGISTER answer within 60 s")
                reply = p.decode_reply(sock.recv_multipart()[1])
                if not isinstance(reply, p.Ok):
                    raise RuntimeError(f"REGISTER refused: {reply}")
        out.put(("registered", time.perf_counter() - started))
        release.wait()
    except Exception as exc:
        out.put(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        ctx.destroy(linger=0)


def _collect(out, count, what):
    """``count`` answers of kind ``what`` from children: their figures."""
    got = []
    for _ in range(count):
        kind, value = out.get(timeout=600)
        if kind == "failed":
            raise SystemExit(f"directory_bench: a client process failed: {value}")
        assert kind == what, (kind, what)
        got.append(value)
    return got


def many_clients(args, heartbeat=None, idle_only=False):
    """``--clients`` connected clients holding ``--client-names`` names each
    (``heartbeat``: the server's --heartbeat; ``idle_only``: up to the idle
    CPU figure, without the lookup row)."""
    import multiprocessing as mp
    total = args.clients * args.client_names
    print(f"\n{args.clients:,} connected clients (plain DEALERs in {args.client_procs} processes, a lease each), "
          f"{args.client_names} names each (load average {os.getloadavg()[0]:.1f})")
    # (all of them come from 127.0.0.1: the per-source caps are lifted for them)
    caps = ["--max-per-source", str(args.clients + 100), "--max-handshaking", str(args.clients + 100)]
    if heartbeat is not None:
        caps += ["--heartbeat", f"{heartbeat:g}"]
    print(f"server: zmq_server --max-ttl 600 {' '.join(caps)} --max-records {total + 1000}")
    with ServerProcess(quiet=False, extra_args=["--max-ttl", "600", "--max-records", str(total + 1000),
                                                 "--log-rate", "5"] + caps) as server:
        rss0 = server.rss_kib()
        out, go, release = mp.Queue(), mp.Event(), mp.Event()
        per = [args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
               for i in range(args.client_procs)]
        children = [mp.Process(target=_hold_clients, args=(server.address, n, args.client_names, f"c{k}.", out, go,
                                                                release))
                    for k, n in enumerate(per) if n]
        started = time.perf_counter()
        for child in children:
            child.start()
        try:
            try:
                resent = sum(r for _, r in _collect(out, len(children), "leased"))
            except SystemExit:
                print("\n".join(server.logs()[-10:]), file=sys.stderr)
                raise
            leased = time.perf_counter() - started
            time.sleep(0.5)
            rss1 = server.rss_kib()
            print(f"connect and LEASE: {args.clients:,} clients in {leased:.1f} s ({resent} LEASEs sent again after "
                  f"10 s without an answer); server RSS {rss0:,} KiB before, "
                  f"{rss1:,} KiB with them: {(rss1 - rss0) * 1024 / args.clients:,.0f} bytes a client")
            started = time.perf_counter()
            go.set()
            _collect(out, len(children), "registered")
            elapsed = time.perf_counter() - started
            time.sleep(0.5)
            rss2 = server.rss_kib()
            print(f"REGISTER, {total:,} names over the {args.clients:,} connections (pipelined per connection): "
                  f"{elapsed:.1f} s, {total / elapsed:,.0f} names/s")
            print(f"server RSS with {args.clients:,} clients and {total:,} names: {rss2:,} KiB; "
                  f"{(rss2 - rss1) * 1024 / total:,.0f} bytes a name")
            # (a comparison: a window as long as the interval, and more, so that each connection's
            # heartbeats are in it: they start one interval after the connection)
            idle = 2.0 if heartbeat is None else max(10.0, 1.2 * heartbeat)
            cpu0, threads0 = _cpu_seconds(server.pid), _thread_cpu(server.pid)
            time.sleep(idle)
            threads1 = _thread_cpu(server.pid)
            split = ", ".join(f"{name} {(threads1[name] - threads0.get(name, 0)) / idle * 100:.0f}%"
                              for name in sorted(threads1))
            what = "ZMTP heartbeats, the lease sweep" if heartbeat is None else f"--heartbeat {heartbeat:g}"
            print(f"server CPU while they sit idle ({what}), over {idle:g} s: "
                  f"{(_cpu_seconds(server.pid) - cpu0) / idle * 100:.0f}% of a core ({split})")
            if idle_only:
                return
            with DirectoryClient(server.address, timeout=10) as owner:
                owner.register("Q", "bench-name", "127.0.0.1:5555")
                _lookup_row(f"{args.concurrent} plain DEALERs from one thread, with the {args.clients:,} "
                            "clients connected", _lookup_load(server, args, "poll", procs=1))
        finally:
            go.set()
            release.set()
            for child in children:
                child.join(30)
                if child.is_alive():
                    child.kill()


def _instances(address, count, prefix, out, go, receive_timeout):
    """In a child: ``count`` pyzmq.ZMQ instances, each registering one global
    queue; then one message is read from each (the binder sends it)."""
    _raise_fd_limit()
    zs = []
    try:
        out.put(("ready", None))
        go.wait()
        started = time.perf_counter()
        for i in range(count):
            z = pyzmq.ZMQ(address, timeout=60)
            zs.append(z)
            z.create_queue(f"{prefix}{i}", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        out.put(("registered", time.perf_counter() - started))
        arrived = 0
        for z in zs:
            try:
                if z.receive(timeout=receive_timeout) == b"through every binding":
                    arrived += 1
            except pyzmq.Timeout:
                pass
        out.put(("arrived", arrived))
    except Exception as exc:
        out.put(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        for z in zs:
            z.close()


def end_to_end(args):
    """``--instances`` pyzmq.ZMQ instances in ``--instance-procs`` processes
    register a global queue each; one binder binds one exchange to all of
    them and sends one message, which must arrive through every binding."""
    import multiprocessing as mp
    n, procs = args.instances, args.instance_procs
    print(f"\nend to end: {n:,} pyzmq.ZMQ instances in {procs} processes, one global queue each; "
          f"one binder binds to all (load average {os.getloadavg()[0]:.1f})")
    with ServerProcess(quiet=True, extra_args=["--max-per-source", str(n + 100)]) as server:
        out, go = mp.Queue(), mp.Event()
        per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        children = [mp.Process(target=_instances, args=(server.address, c, f"e2e.{k}.", out, go, 60))
                    for k, c in enumerate(per) if c]
        for child in children:
            child.start()
        try:
            _collect(out, len(children), "ready")
            started = time.perf_counter()
            go.set()
            _collect(out, len(children), "registered")
            registered = time.perf_counter() - started
            print(f"register: all {n:,} in {registered:.2f} s ({n / registered:,.0f} instances/s)")
            with pyzmq.ZMQ(server.address, timeout=60, linger=2) as binder:
                eid = binder.create_exchange("E")
                started = time.perf_counter()
                for k, c in enumerate(per):
                    for i in range(c):
                        binder.bind("E", f"e2e.{k}.{i}")
                bound = time.perf_counter() - started
                print(f"bind: one binder to all {n:,} in {bound:.2f} s ({n / bound:,.0f} binds/s)")
                binder.send(eid, b"through every binding", timeout=60)
                arrived = sum(_collect(out, len(children), "arrived"))
            print(f"messages: {arrived:,} of {n:,} arrived, one through each binding")
        finally:
            for child in children:
                child.join(60)
                if child.is_alive():
                    child.kill()


def scale(args):
    print(f"\ncapacity of one plain zmq_server (load average {os.getloadavg()[0]:.1f} at start; "
          f"the server is one Python process: one core at most)")
    with ServerProcess(quiet=True, extra_args=["--max-ttl", "600"]) as server:
        with DirectoryClient(server.address, timeout=10) as owner:
            owner.register("Q", "bench-name", "127.0.0.1:5555")
            _lookup_row(f"{args.concurrent} plain DEALERs from one thread, each one request at a time",
                        _lookup_load(server, args, "poll", procs=1))
            _lookup_row(f"{args.concurrent} plain DEALERs in {args.procs} processes, one request at a time",
                        _lookup_load(server, args, "raw"))
            _lookup_row(f"{args.concurrent} DirectoryClients in {args.procs} processes",
                        _lookup_load(server, args, "client"))
            rss0 = server.rss_kib()
            rate = _register_many(server.address, args.names, "bench.")
            time.sleep(0.5)
            rss1 = server.rss_kib()
            print(f"REGISTER, pipelined, {args.names:,} names under {-(-args.names // p.MAX_NAMES_PER_LEASE)} "
                  f"leases: {rate:,.0f} names/s")
            print(f"server RSS: {rss0:,} KiB before, {rss1:,} KiB with {args.names:,} names more: "
                  f"{(rss1 - rss0) * 1024 / args.names:,.0f} bytes a name")
            _register_through_clients(server, args)


if __name__ == "__main__":
    sys.exit(main())
