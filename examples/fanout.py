"""Fan-out: one global exchange, every bound queue gets every message.

Runs by itself: starts a zmq_server (pyzmq.Directory), a publisher instance and two
subscriber instances (each in its own thread, as separate programs would be).
"""
import threading
from typing import Dict, List

import pyzmq


def subscriber(directory: str, name: str, count: int, results: Dict[str, List[bytes]],
               ready: threading.Semaphore) -> None:
    with pyzmq.ZMQ(directory) as zmq:
        zmq.create_queue(name)
        zmq.bind("news", name)            # live when it returns
        ready.release()
        results[name] = [zmq.receive(timeout=10) for _ in range(count)]


def main() -> None:
    with pyzmq.Directory() as directory:                # a zmq_server, on a free port
        with pyzmq.ZMQ(directory.address) as zmq:
            news = zmq.create_exchange("news", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            results: Dict[str, List[bytes]] = {}
            ready = threading.Semaphore(0)
            readers = [threading.Thread(target=subscriber,
                                        args=(directory.address, f"reader{i}", 3, results, ready))
                       for i in range(2)]
            for t in readers:
                t.start()
            for _ in readers:
                # the owner lets binders in while it is in a pyzmq call
                while not ready.acquire(blocking=False):
                    zmq.serve(0.01)
            for headline in (b"one", b"two", b"three"):
                zmq.send(news, headline)
            for t in readers:
                t.join()
    for name, got in sorted(results.items()):
        print(name, [m.decode() for m in got])


if __name__ == "__main__":
    main()
