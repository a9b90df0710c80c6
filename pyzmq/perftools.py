"""The perf tools of ØMQ 0.3, on the wiring API: local_lat, remote_lat,
local_thr, remote_thr.

Start the local side and the remote side by hand, in either order, with a
zmq_server running:

    local_lat  <hostname> <exchange-interface> <queue-interface> <message-size> <roundtrip-count>
    remote_lat <hostname> <message-size> <roundtrip-count>
    local_thr  <hostname> <interface> <message-size> <message-count>
    remote_thr <hostname> <message-size> <message-count>

`hostname` is the zmq_server's host[:port]; an interface is `IP:port`,
`NIC:port`, or an IP or NIC alone (a free port).  Latency is half the round
trip, as libzmq and ØMQ 0.3 report it.  The throughput tools take an extra
`--batch N` to use send_many/receive_many, N messages a call.
"""

import argparse
import sys
import time

import pyzmq
from pyzmq.directory import DirectoryError
from pyzmq.protocol import NOT_FOUND as ERR_NOT_FOUND

WAIT_FOR_LOCAL_SIDE = 30.0      # seconds the remote tools wait for the local side's names
LINGER = 30.0                   # seconds a closing sender lets its queued messages drain


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _parser(prog, description, *args):
    p = argparse.ArgumentParser(prog=prog, description=description)
    for name, kind, helptext in args:
        p.add_argument(name, type=kind, help=helptext)
    return p


_HOST = ("hostname", str, "address of zmq_server, host[:port]")
_SIZE = ("message_size", _positive, "bytes per message")
_ROUNDTRIPS = ("roundtrip_count", _positive, "round trips to time")
_COUNT = ("message_count", _positive, "messages in the test")


def _batch(p):
    p.add_argument("--batch", type=_positive, default=0, metavar="N",
                   help="use the batch calls (send_many/receive_many), N messages a call")
    return p


def _instance(hostname):
    try:
        return pyzmq.ZMQ(hostname, linger=LINGER, bind_timeout=WAIT_FOR_LOCAL_SIDE)
    except (pyzmq.Error, ValueError, TypeError) as e:
        sys.exit(str(e))


def _bind_when_there(zmq, exchange, queue, waiting_for):
    """bind(), waiting up to WAIT_FOR_LOCAL_SIDE for the local side's names."""
    deadline = time.monotonic() + WAIT_FOR_LOCAL_SIDE
    said = False
    while True:
        try:
            zmq.bind(exchange, queue)
            return
        except DirectoryError as e:
            if e.code != ERR_NOT_FOUND or time.monotonic() > deadline:
                raise
            if not said:
                print(f"waiting up to {WAIT_FOR_LOCAL_SIDE:.0f} s for {waiting_for} "
                      "to register its names...", file=sys.stderr, flush=True)
                said = True
            time.sleep(0.1)


def _print_throughput(size, count, elapsed):
    rate = count / elapsed if elapsed > 0 else float("inf")
    print(f"message size: {size} [B]")
    print(f"message count: {count}")
    print(f"mean throughput: {rate:.0f} [msg/s]")
    print(f"mean throughput: {rate * size * 8 / 1e6:.3f} [Mb/s]")


def _check_size(msg, size):
    if len(msg) != size:
        sys.exit(f"message of {len(msg)} bytes received, {size} expected")


def local_lat(argv=None):
    p = _parser("local_lat", "Echo side of the latency test: global queue QL and "
                "global exchange EL.", _HOST,
                ("exchange_interface", str, "where the exchange EL listens"),
                ("queue_interface", str, "where the queue QL listens"), _SIZE, _ROUNDTRIPS)
    a = p.parse_args(argv)
    with _instance(a.hostname) as zmq:
        eid = zmq.create_exchange("EL", pyzmq.SCOPE_GLOBAL, a.exchange_interface)
        zmq.create_queue("QL", pyzmq.SCOPE_GLOBAL, a.queue_interface)
        send, receive = zmq.send, zmq.receive
        for _ in range(a.roundtrip_count):
            msg = receive()
            _check_size(msg, a.message_size)
            send(eid, msg)
    return 0


def remote_lat(argv=None):
    p = _parser("remote_lat", "Timing side of the latency test: local exchange ER bound "
                "to QL, EL bound to local queue QR.", _HOST, _SIZE, _ROUNDTRIPS)
    a = p.parse_args(argv)
    with _instance(a.hostname) as zmq:
        eid = zmq.create_exchange("ER")
        zmq.create_queue("QR")
        _bind_when_there(zmq, "EL", "QR", "local_lat")
        _bind_when_there(zmq, "ER", "QL", "local_lat")
        msg = bytes(a.message_size)
        send, receive = zmq.send, zmq.receive
        start = time.perf_counter()
        for _ in range(a.roundtrip_count):
            send(eid, msg)
            reply = receive()
        elapsed = time.perf_counter() - start
        _check_size(reply, a.message_size)
    latency = elapsed * 1e6 / (a.roundtrip_count * 2)
    print(f"message size: {a.message_size} [B]")
    print(f"roundtrip count: {a.roundtrip_count}")
    print(f"average latency: {latency:.3f} [us]")
    return 0


def local_thr(argv=None):
    p = _batch(_parser("local_thr", "Receiving side of the throughput test: global "
                       "queue Q; times from the first message to the last.",
                       _HOST, ("interface", str, "where the queue Q listens"), _SIZE, _COUNT))
    a = p.parse_args(argv)
    size, count = a.message_size, a.message_count
    with _instance(a.hostname) as zmq:
        zmq.create_queue("Q", pyzmq.SCOPE_GLOBAL, a.interface)
        # large messages are read in place (a Frame), as an application
        # that only looks at them would
        copy = size < 65536
        receive = zmq.receive
        first = receive(copy=copy)
        _check_size(first, size)
        start = time.perf_counter()
        if a.batch:
            left, receive_many = count - 1, zmq.receive_many
            while left > 0:
                got = receive_many(min(a.batch, left))
                left -= len(got)
            last = got[-1] if count > 1 else first
        elif copy:
            last = first
            for _ in range(count - 1):
                last = receive()
        else:
            last = first
            for _ in range(count - 1):
                last = receive(None, True, False)       # copy=False, no keyword parsing
        elapsed = time.perf_counter() - start
        _check_size(last, size)
    # the first message starts the clock; like libzmq's local_thr (and our C
    # reference) the rate is count / elapsed
    _print_throughput(size, count, elapsed)
    return 0


def remote_thr(argv=None):
    p = _batch(_parser("remote_thr", "Sending side of the throughput test: local "
                       "exchange E bound to the global queue Q.", _HOST, _SIZE, _COUNT))
    a = p.parse_args(argv)
    with _instance(a.hostname) as zmq:
        eid = zmq.create_exchange("E")
        _bind_when_there(zmq, "E", "Q", "local_thr")
        msg = bytes(a.message_size)
        if a.batch:
            batch = [msg] * a.batch
            left, send_many = a.message_count, zmq.send_many
            while left > 0:
                left -= send_many(eid, batch if left >= a.batch else batch[:left])
        else:
            send = zmq.send
            for _ in range(a.message_count):
                send(eid, msg)
    return 0


def _main(tool):
    def main():
        try:
            sys.exit(tool())
        except KeyboardInterrupt:
            sys.exit(130)
        except (pyzmq.Error, ValueError) as e:
            sys.exit(f"{tool.__name__}: {e}")
    main.__name__ = f"{tool.__name__}_main"
    return main


local_lat_main = _main(local_lat)
remote_lat_main = _main(remote_lat)
local_thr_main = _main(local_thr)
remote_thr_main = _main(remote_thr)
