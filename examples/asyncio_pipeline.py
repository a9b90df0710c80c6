"""asyncio: a producer task and a consumer task on one instance, through
a global exchange that another process could bind to as well.

`await zmq.send()` waits without blocking the loop while the queue is
full (its high-water mark is 10 here); `await zmq.receive(timeout=...)`
raises pyzmq.Timeout when nothing comes.
"""
import asyncio
from typing import List

import pyzmq
import pyzmq.asyncio


async def produce(zmq: pyzmq.asyncio.ZMQ, eid: int, count: int) -> None:
    for n in range(count):
        await zmq.send(eid, b"item %d" % n)


async def consume(zmq: pyzmq.asyncio.ZMQ, count: int) -> List[str]:
    got = []
    for _ in range(count):
        item = await zmq.receive(timeout=5)
        got.append(item.decode())
    try:
        await zmq.receive(timeout=0.1)
    except pyzmq.Timeout:
        got.append("(nothing more)")
    return got


async def main() -> None:
    with pyzmq.Directory() as directory:
        async with await pyzmq.asyncio.ZMQ.connect(directory.address) as zmq:
            eid = await zmq.create_exchange("items", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            await zmq.create_queue("work", hwm=10)
            await zmq.bind("items", "work")
            _, got = await asyncio.gather(produce(zmq, eid, 50), consume(zmq, 50))
    print(len(got) - 1, "items:", got[0], "...", got[-2], got[-1])


if __name__ == "__main__":
    asyncio.run(main())
