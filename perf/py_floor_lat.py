#!/usr/bin/env python3
"""py_floor_lat: the Python floor of pyzmq-wiring's latency path.

    py_floor_lat.py local  <pull-endpoint> <xpub-endpoint> <message-size> <roundtrip-count>
    py_floor_lat.py remote <push-endpoint> <sub-endpoint>  <message-size> <roundtrip-count>

The same sockets and steps as perf/c/bin/wiring_lat in its direct mode, but
the loop is Python's and each step one call of a minimal C function
(perf/c/pyfloor.c, built for this interpreter): recv() blocks with the GIL
released, send() sends with it held.  So it measures what any Python
program pays on this path, beside C (wiring_lat) and pyzmq-wiring (which
adds its own work to these two calls).  remote prints the latency as
remote_lat does.  Run as the py-floor shape of perf/path_lat.py.
"""
import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _pyfloor():
    spec = importlib.util.spec_from_file_location("perf_c_build", HERE / "c" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    sys.path.insert(0, str(build.build_pyfloor()))
    import pyfloor
    return pyfloor


def main(argv):
    if len(argv) != 5 or argv[0] not in ("local", "remote"):
        sys.exit(__doc__.split("\n\n")[1])
    role, a, b, size, count = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    pf = _pyfloor()
    pf.open(role, a, b, size)
    recv, send = pf.recv, pf.send
    try:
        if role == "local":
            for _ in range(count + 1):      # the first is the remote's warm-up
                recv()
                send()
        else:
            send()
            recv()
            start = time.perf_counter_ns()
            for _ in range(count):
                send()
                recv()
            elapsed = time.perf_counter_ns() - start
        if pf.last_size() != size:
            sys.exit(f"py_floor_lat: got {pf.last_size()} bytes, expected {size}")
    finally:
        pf.close()
    if role == "remote":
        print(f"message size: {size} [B]")
        print(f"roundtrip count: {count}")
        print(f"average latency: {elapsed / 1e3 / (count * 2.0):.3f} [us]")


if __name__ == "__main__":
    main(sys.argv[1:])
