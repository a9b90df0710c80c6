"""The perf tools of ØMQ 0.3, on the wiring API: local_lat, remote_lat,
local_thr, remote_thr.

Start the local side and the remote side by hand, in either order, with a
zmq_server running:

    local_lat  <hostname> <exchange-interface> <queue-interface> <message-size> <roundtrip-count>
    remote_lat <hostname> <message-size> <roundtrip-count>
    local_thr  <hostname> <interface> <message-size> <message-count>
    remote_thr <hostname> <message-size> <message-count>

`hostname` is the zmq_server's host[:port]; an interface is `IP:port`,
`NIC:port`, or an IP or NIC alone (a free port).  Latency is one way, half
the round trip, as libzmq and ØMQ 0.3 report it (the 0.3 line "average
latency" is kept, and followed by a line that says so).  The throughput
tools take an extra `--batch N` to use send_many/receive_many, N messages
a call.

They talk while they run (every tool takes these options):
  - progress on stderr once a second, after the first second (a bar on a
    terminal, a line otherwise; -q turns it off);
  - a stall timeout, --stall-timeout S (default 10 s, 0: none): when no
    message moves for S seconds once the test runs (60 s, or S if longer,
    for the first message), the tool says so, prints what it measured so
    far, and exits with status 3 -- the usual cause is a different count
    on the two sides;
  - Ctrl-C prints what was measured so far and exits with status 130.
The hot loops only count in chunks (a store per chunk of up to 256
messages); a watcher thread reads the count once a second, and stops a
stalled wait by sending the main thread SIGALRM.
"""

import argparse
import os
import signal
import sys
import threading
import time

import pyzmq
from pyzmq.directory import DirectoryError
from pyzmq.protocol import NOT_FOUND as ERR_NOT_FOUND

WAIT_FOR_LOCAL_SIDE = 30.0      # seconds the remote tools wait for the local side's names
WAIT_FOR_FIRST = 60.0           # seconds the local tools wait for the first message
LINGER = 30.0                   # seconds a closing sender lets its queued messages drain
STALL_TIMEOUT = 10.0            # default --stall-timeout
PROGRESS_EVERY = 1.0            # seconds between progress reports
CHUNK = 256                     # most messages between two updates of the count
EXIT_STALLED = 3
EXIT_INTERRUPTED = 130


class Stalled(Exception):
    """Raised in the main thread (from SIGALRM) when nothing moved for too long."""


class _Watch:
    """Progress and the stall watchdog of one run: ``done`` is set by the
    main thread (per chunk), a daemon thread reads it once a second."""

    def __init__(self, tool, total, unit, quiet=False, stall=STALL_TIMEOUT, first=WAIT_FOR_FIRST):
        self.tool, self.total, self.unit = tool, total, unit
        self.quiet, self.stall = quiet, stall
        self.first = max(first, stall) if stall else 0.0
        self.done = 0
        self.stalled_after = None       # seconds without progress, once stalled
        self.moved_at = None            # perf_counter() when the count was last seen to move
        self.began = time.monotonic()
        self._stop = threading.Event()
        self._main = threading.main_thread().ident
        self._tty = sys.stderr.isatty()
        self._drawn = False
        self._waits = 0
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGALRM, self._on_alarm)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"{self.tool}-watch")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2.0)
        if self._old is not None:
            signal.signal(signal.SIGALRM, self._old)
        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _on_alarm(self, signum, frame):
        if self.stalled_after is not None:
            raise Stalled()

    def _run(self):
        seen, since = self.done, time.monotonic()
        before, then = seen, since
        while not self._stop.wait(PROGRESS_EVERY):
            now, done = time.monotonic(), self.done
            if done != seen:
                seen, since = done, now
                self.moved_at = time.perf_counter()
            limit = self.stall if done else self.first
            if limit and now - since >= limit:
                self.stalled_after = now - since
                if self._old is not None:
                    signal.pthread_kill(self._main, signal.SIGALRM)
                return
            if not self.quiet:
                self._show(done, now, (done - before) / (now - then) if now > then else 0.0)
            before, then = done, now

    def _show(self, done, now, rate):
        elapsed = now - self.began
        share = done / self.total if self.total else 0.0
        text = (f"{done:,} of {self.total:,} {self.unit} ({share:.0%}), {elapsed:.0f} s, "
                f"now {_si(rate)} {self.unit}/s")
        if not done:
            self._waits += 1
            if self._waits % 10 != 1:
                return              # said at 1 s, then every 10 s
            text = f"waiting for the other side, {elapsed:.0f} s"
        if self._tty:
            width = 30
            bar = "#" * int(share * width)
            sys.stderr.write(f"\r{self.tool} [{bar:<{width}}] {text}\033[K")
            self._drawn = True
        else:
            sys.stderr.write(f"{self.tool}: {text}\n")
        sys.stderr.flush()

    def timed_until(self, exc):
        """When the timed part ended: now after Ctrl-C; after a stall, when
        the count was last seen to move (up to a second late)."""
        if isinstance(exc, Stalled) and self.moved_at is not None:
            return self.moved_at
        return time.perf_counter()

    def say(self, text):
        """A line on stderr (after a progress bar, on a line of its own)."""
        if self._drawn:
            sys.stderr.write("\n")
            self._drawn = False
        print(f"{self.tool}: {text}", file=sys.stderr, flush=True)

    def stall_text(self, other):
        if not self.done:
            return (f"stalled: nothing came from {other} within {self.stalled_after:.0f} s; "
                    f"is it running, with the same hostname?")
        return (f"stalled: nothing moved for {self.stalled_after:.0f} s after {self.done:,} of "
                f"{self.total:,} {self.unit}; does {other} use the same count?")


def _si(value):
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.2f} {prefix}"
    return f"{value:.0f}"


def _talk(p):
    """The options every tool takes: -q and --stall-timeout."""
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--stall-timeout", type=_seconds, default=STALL_TIMEOUT, metavar="S",
                   help=f"give up (exit status {EXIT_STALLED}) when no message moves for S "
                        f"seconds (default {STALL_TIMEOUT:g}; 0: wait for ever)")
    return p


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _chunk(size):
    """Messages per count update: fewer for large messages, so that the count
    moves at least every 4 MiB."""
    return max(1, min(CHUNK, (4 << 20) // max(1, size)))


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
    return _talk(p)


_HOST = ("hostname", str, "address of zmq_server, host[:port]")
_SIZE = ("message_size", _positive, "bytes per message")
_ROUNDTRIPS = ("roundtrip_count", _positive, "round trips to time")
_COUNT = ("message_count", _positive, "messages in the test")


def _batch(p):
    p.add_argument("--batch", type=_positive, default=0, metavar="N",
                   help="use the batch calls (send_many/receive_many), N messages a call")
    return p


def _instance(hostname, tool):
    try:
        return pyzmq.ZMQ(hostname, linger=LINGER, bind_timeout=WAIT_FOR_LOCAL_SIDE)
    except (pyzmq.Error, ValueError, TypeError) as e:
        sys.exit(f"{tool}: {e}")


def _bind_when_there(zmq, exchange, queue, waiting_for):
    """bind(), waiting up to WAIT_FOR_LOCAL_SIDE for the local side's names."""
    deadline = time.monotonic() + WAIT_FOR_LOCAL_SIDE
    said = False
    while True:
        try:
            zmq.bind(exchange, queue)
            return
        except DirectoryError as e:
            if e.code != ERR_NOT_FOUND:
                raise
            if time.monotonic() > deadline:
                raise DirectoryError(f"{e}; start {waiting_for} first, with the same directory, "
                                     f"and this tool within {WAIT_FOR_LOCAL_SIDE:.0f} s of it",
                                     e.code) from None
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


def _print_latency(size, roundtrips, elapsed):
    latency = elapsed * 1e6 / (roundtrips * 2)
    print(f"message size: {size} [B]")
    print(f"roundtrip count: {roundtrips}")
    print(f"average latency: {latency:.3f} [us]")
    print(f"(one-way latency: half the average round trip of {latency * 2:.3f} [us])")


def _check_size(msg, size):
    if len(msg) != size:
        sys.exit(f"message of {len(msg)} bytes received, {size} expected")


def _end(watch, exc, other, partial=None):
    """After Ctrl-C or a stall: say so, print what was measured (``partial()``),
    and exit at once (a sender's queued messages are not waited for)."""
    if isinstance(exc, Stalled):
        watch.say(watch.stall_text(other))
        status = EXIT_STALLED
    else:
        watch.say(f"interrupted after {watch.done:,} of {watch.total:,} {watch.unit}")
        status = EXIT_INTERRUPTED
    if partial is not None and watch.done:
        partial()
        print(f"(partial result: {watch.done:,} of {watch.total:,} {watch.unit})")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def local_lat(argv=None):
    p = _parser("local_lat", "Echo side of the latency test: global queue QL and "
                "global exchange EL.", _HOST,
                ("exchange_interface", str, "where the exchange EL listens"),
                ("queue_interface", str, "where the queue QL listens"), _SIZE, _ROUNDTRIPS)
    a = p.parse_args(argv)
    size, count = a.message_size, a.roundtrip_count
    with _instance(a.hostname, "local_lat") as zmq:
        eid = zmq.create_exchange("EL", pyzmq.SCOPE_GLOBAL, a.exchange_interface)
        zmq.create_queue("QL", pyzmq.SCOPE_GLOBAL, a.queue_interface)
        send, receive = zmq.send, zmq.receive
        watch = _Watch("local_lat", count, "round trips", a.quiet, a.stall_timeout)
        chunk, i = _chunk(size), 0
        try:
            with watch:
                # as C's local_lat does, each message goes back as it came,
                # without a copy: a Frame (receive(copy=False), positional
                # arguments: no keyword parsing), and send() of a Frame
                # shares libzmq's content
                msg = receive(None, True, False)    # the first may be long in coming
                _check_size(msg, size)
                send(eid, msg)
                watch.done = 1
                while watch.done < count:
                    n = min(chunk, count - watch.done)
                    i = 0
                    for i in range(n):
                        msg = receive(None, True, False)
                        if len(msg) != size:
                            _check_size(msg, size)
                        send(eid, msg)
                        # drop it now, as zmq_msg_send empties C's message:
                        # held through the next wait, it would keep libzmq's
                        # read buffer from being reused for the next one
                        del msg
                    watch.done += n
                    i = 0
        except (KeyboardInterrupt, Stalled) as exc:
            watch.done += i
            _end(watch, exc, "remote_lat")
    return 0


def remote_lat(argv=None):
    p = _parser("remote_lat", "Timing side of the latency test: local exchange ER bound "
                "to QL, EL bound to local queue QR.", _HOST, _SIZE, _ROUNDTRIPS)
    a = p.parse_args(argv)
    size, count = a.message_size, a.roundtrip_count
    with _instance(a.hostname, "remote_lat") as zmq:
        eid = zmq.create_exchange("ER")
        zmq.create_queue("QR")
        _bind_when_there(zmq, "EL", "QR", "local_lat")
        _bind_when_there(zmq, "ER", "QL", "local_lat")
        msg = bytes(size)
        send, receive = zmq.send, zmq.receive
        watch = _Watch("remote_lat", count, "round trips", a.quiet, a.stall_timeout,
                       first=a.stall_timeout)
        chunk, i = _chunk(size), 0
        start = time.perf_counter()
        try:
            with watch:
                while watch.done < count:
                    n = min(chunk, count - watch.done)
                    i = 0
                    for i in range(n):
                        # one message travels back and forth, as in C's
                        # remote_lat: what came back is sent again, no copy
                        send(eid, msg)
                        del msg         # as in local_lat: not held through the wait
                        msg = receive(None, True, False)
                        if len(msg) != size:
                            _check_size(msg, size)
                    watch.done += n
                    i = 0
        except (KeyboardInterrupt, Stalled) as exc:
            elapsed = watch.timed_until(exc) - start
            watch.done += i
            _end(watch, exc, "local_lat", lambda: _print_latency(size, watch.done, elapsed))
        elapsed = time.perf_counter() - start
    _print_latency(size, count, elapsed)
    return 0


def local_thr(argv=None):
    p = _batch(_parser("local_thr", "Receiving side of the throughput test: global "
                       "queue Q; times from the first message to the last.",
                       _HOST, ("interface", str, "where the queue Q listens"), _SIZE, _COUNT))
    a = p.parse_args(argv)
    size, count = a.message_size, a.message_count
    with _instance(a.hostname, "local_thr") as zmq:
        zmq.create_queue("Q", pyzmq.SCOPE_GLOBAL, a.interface)
        # large messages are read in place (a Frame), as an application
        # that only looks at them would
        copy = size < 65536
        receive = zmq.receive
        watch = _Watch("local_thr", count, "messages", a.quiet, a.stall_timeout)
        chunk, i, start = _chunk(size), 0, None
        try:
            with watch:
                first = receive(copy=copy)
                _check_size(first, size)
                start = time.perf_counter()
                watch.done = 1
                last = first
                if a.batch:
                    receive_many = zmq.receive_many
                    while watch.done < count:
                        got = receive_many(min(a.batch, count - watch.done))
                        watch.done += len(got)
                        last = got[-1]
                else:
                    while watch.done < count:
                        n = min(chunk, count - watch.done)
                        i = 0
                        if copy:
                            for i in range(n):
                                last = receive()
                        else:
                            for i in range(n):
                                last = receive(None, True, False)   # copy=False, no keyword parsing
                        watch.done += n
                        i = 0
        except (KeyboardInterrupt, Stalled) as exc:
            elapsed = watch.timed_until(exc) - start if start is not None else 0.0
            watch.done += i
            # the first message starts the clock: done - 1 were timed
            _end(watch, exc, "remote_thr",
                 lambda: _print_throughput(size, watch.done, elapsed) if watch.done > 1 else None)
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
    size, count = a.message_size, a.message_count
    with _instance(a.hostname, "remote_thr") as zmq:
        eid = zmq.create_exchange("E")
        _bind_when_there(zmq, "E", "Q", "local_thr")
        msg = bytes(size)
        watch = _Watch("remote_thr", count, "messages", a.quiet, a.stall_timeout,
                       first=a.stall_timeout)
        chunk, i = _chunk(size), 0
        try:
            with watch:
                if a.batch:
                    batch = [msg] * a.batch
                    send_many = zmq.send_many
                    while watch.done < count:
                        left = count - watch.done
                        watch.done += send_many(eid, batch if left >= a.batch else batch[:left])
                else:
                    send = zmq.send
                    while watch.done < count:
                        n = min(chunk, count - watch.done)
                        i = 0
                        for i in range(n):
                            send(eid, msg)
                        watch.done += n
                        i = 0
        except (KeyboardInterrupt, Stalled) as exc:
            watch.done += i
            _end(watch, exc, "local_thr")
    return 0


def _main(tool):
    def main():
        try:
            sys.exit(tool())
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
        except (pyzmq.Error, ValueError) as e:
            sys.exit(f"{tool.__name__}: {e}")
    main.__name__ = f"{tool.__name__}_main"
    return main


local_lat_main = _main(local_lat)
remote_lat_main = _main(remote_lat)
local_thr_main = _main(local_thr)
remote_thr_main = _main(remote_thr)
