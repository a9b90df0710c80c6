"""A work queue: a load-balancing exchange hands each job to one worker.

Three worker queues bound to one STYLE_LOAD_BALANCING exchange, in one
instance for brevity (the queues could as well be global queues of worker
processes on other boxes).
"""
from typing import Dict, List

import pyzmq


def main() -> None:
    with pyzmq.ZMQ() as zmq:
        jobs = zmq.create_exchange("jobs", style=pyzmq.STYLE_LOAD_BALANCING)
        workers = {zmq.create_queue(f"worker{i}"): f"worker{i}" for i in range(3)}
        for name in workers.values():
            zmq.bind("jobs", name)
        for n in range(9):
            zmq.send(jobs, b"job %d" % n)
        done: Dict[str, List[str]] = {name: [] for name in workers.values()}
        for _ in range(9):
            qid, job = zmq.receive2(timeout=5)
            done[workers[qid]].append(job.decode())
    for name, got in done.items():
        print(name, got)


if __name__ == "__main__":
    main()
