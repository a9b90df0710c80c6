"""Two real network hosts on one machine: Linux network namespaces joined by
a veth pair.  Used by the two-host rig (perf/rig.py) and tests/test_rig.py.

    with TwoHosts(rate_bps=10**9) as hosts:           # needs root, ip and tc
        server = hosts.start_server()                  # zmq_server on host A
        peer = hosts.python(hosts.b, CODE, server.address)
        ...

Layout (the same for every pair; pairs never see each other, so the
addresses and interface names do not need to be unique, only the namespace
names do):

    namespace pzw-<tag>-<pid>-<n>a          namespace pzw-<tag>-<pid>-<n>b
      lo      127.0.0.1                        lo      127.0.0.1
      veth-a  198.18.0.1/24  <---- veth ---->  veth-b  198.18.0.2/24

The veth ends are created directly inside their namespaces, so no interface
ever appears in the machine's own namespace, and traffic never leaves the
pair.  ``shape(rate)`` puts a ``tbf`` qdisc on the egress of both ends (a
full-duplex link of that rate in each direction).

Everything made is removed by :meth:`TwoHosts.close` (called by ``with``, by
an ``atexit`` hook, and safe to call twice): the processes started through
the pair are ended by pid, any process left inside its namespaces is killed
by pid (only what we started can be there), then the namespaces are deleted,
which destroys the veth pair with them.  A run killed with SIGKILL leaves its
namespaces behind; :func:`cleanup_stale` removes those whose creating process
is gone.

``start_server`` and ``python`` return pyzmq/testing.py's ServerProcess and
PeerProcess (the classes the tests use on loopback), started through
:meth:`TwoHosts.popen`.

This file is not in a package: perf/rig.py imports it from its own
directory, tests load it by path.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent      # the checkout (built in place)

PREFIX = "pzw"                 # every namespace we make is named pzw-<tag>-<pid>-<n><a|b>
SUBNET = "198.18.0.0/24"       # RFC 2544 benchmarking range; only these two addresses are used
PREFIXLEN = 24
TBF_LATENCY_MS = 10            # how long a packet may wait in the shaper's queue
_NAME = re.compile(rf"^{PREFIX}-([A-Za-z0-9]+)-(\d+)-(\d+)[ab]$")
_counter = itertools.count(1)
_live = weakref.WeakSet()


class RigUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no ip/tc, no kernel support)."""


class CommandFailed(RuntimeError):
    """An ``ip``/``tc`` command failed; the message holds the command and its stderr."""


# --------------------------------------------------------------- checks


def check_requirements(need_tc: bool = True) -> None:
    """Raise RigUnavailable, saying why, unless this process can build the rig."""
    if not sys.platform.startswith("linux"):
        raise RigUnavailable(f"network namespaces need Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise RigUnavailable("must run as root: creating network namespaces and veth links "
                             "needs CAP_NET_ADMIN (try: sudo -E ...)")
    missing = [tool for tool in (("ip", "tc") if need_tc else ("ip",)) if shutil.which(tool) is None]
    if missing:
        raise RigUnavailable(f"{' and '.join(missing)} not found on PATH: install iproute2 "
                             "(Debian/Ubuntu: apt-get install iproute2)")


def parse_rate(text: str) -> int | None:
    """'1gbit', '100mbit', '500kbit', '2500000' (bit/s) or 'none' -> bit/s, None for 'none'."""
    t = text.strip().lower()
    if t in ("none", "off", "unshaped", "0"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:bit|bps|b)?(?:/s)?", t)
    if not m:
        raise ValueError(f"bad rate {text!r}: use e.g. 1gbit, 100mbit, 500kbit, or none")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m.group(2)]
    if not 8000 <= value <= 1e12:
        raise ValueError(f"rate {text!r} out of range (8kbit .. 1tbit)")
    return int(value)


BURST_SECONDS = 125e-6         # default bucket: 125 us of traffic at the link's rate


def tbf_burst(rate_bps: int, seconds: float = BURST_SECONDS) -> int:
    """The shaper's bucket in bytes: `seconds` of traffic, at least two full frames."""
    return max(int(rate_bps / 8 * seconds), 2 * 1514)


def parse_burst(text: str, rate_bps: int) -> int:
    """'125us', '1ms' (time at the rate) or '62500' (bytes) -> bytes."""
    t = text.strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(us|ms|s)?", t)
    if not m:
        raise ValueError(f"bad burst {text!r}: use e.g. 125us, 1ms or a number of bytes")
    value = float(m.group(1))
    if m.group(2):
        value = rate_bps / 8 * value * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    if not 2 * 1514 <= value <= 1 << 30:
        raise ValueError(f"burst {text!r} is {value:.0f} bytes: it must hold at least two "
                         "full frames (3028 bytes)")
    return int(value)


def rate_label(bps: int | None) -> str:
    """A rate as a word for file names: '1gbit', '100mbit', 'unshaped'."""
    if bps is None:
        return "unshaped"
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps}bit"


def format_rate(bps: int | None) -> str:
    if bps is None:
        return "unshaped"
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g} {unit}"
    return f"{bps} bit/s"


def _run(*argv: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandFailed(f"`{' '.join(argv)}` failed (status {proc.returncode}): "
                            f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


# --------------------------------------------------------------- the pair


class Host:
    """One end: its namespace, its veth's name and IPv4 address."""

    def __init__(self, role: str, netns: str, index: int):
        self.role = role                  # "a" or "b"
        self.netns = netns
        self.veth = f"veth-{role}"
        self.ip = f"198.18.0.{index}"
        self.cpus = None                  # CPUs its processes may run on (None: any)

    def __repr__(self):
        return f"<Host {self.role.upper()} netns={self.netns} {self.veth}={self.ip}>"


class TwoHosts:
    """Hosts A and B: two namespaces and a veth pair, optionally shaped."""

    def __init__(self, tag: str = "rig", rate_bps: int | None = None, burst: int | None = None):
        if not re.fullmatch(r"[A-Za-z0-9]{1,16}", tag):
            raise ValueError(f"tag must be 1-16 letters or digits, not {tag!r}")
        check_requirements(need_tc=rate_bps is not None)
        n = next(_counter)
        base = f"{PREFIX}-{tag}-{os.getpid()}-{n}"
        self.a = Host("a", base + "a", 1)
        self.b = Host("b", base + "b", 2)
        self.rate_bps = None
        self.burst = None
        self._made = []                   # namespaces that may exist, in creation order
        self._procs = []                  # Popen objects started in the namespaces
        self._closed = False
        _live.add(self)
        try:
            self._create()
            if rate_bps is not None:
                self.shape(rate_bps, burst)
        except BaseException:
            self.close()
            raise

    def _create(self):
        for host in (self.a, self.b):
            self._made.append(host.netns)  # recorded first: close() copes if add fails
            _run("ip", "netns", "add", host.netns)
        _run("ip", "-n", self.a.netns, "link", "add", self.a.veth, "type", "veth",
             "peer", "name", self.b.veth, "netns", self.b.netns)
        for host in (self.a, self.b):
            _run("ip", "-n", host.netns, "link", "set", "lo", "up")
            _run("ip", "-n", host.netns, "addr", "add", f"{host.ip}/{PREFIXLEN}", "dev", host.veth)
            _run("ip", "-n", host.netns, "link", "set", host.veth, "up")

    # -- the link --------------------------------------------------------

    def shape(self, rate_bps: int | None, burst: int | None = None):
        """Limit each direction to rate_bps with tbf (None: remove the limit).

        The bucket (`burst` bytes, default tbf_burst: 125 us of traffic at
        the rate, at least two full frames) is small so that the link
        behaves like a wire: a 64 KiB message takes its ~0.5 ms to cross
        1 Gbit/s.  The price: the shaper must be served on time, and on a
        busy machine a late softirq wastes link time (throughput then falls
        a little below the rate).  A larger bucket (1 ms) keeps the link
        full under load but lets whole messages through at veth speed.
        tbf counts layer-2 bytes, so 1 Gbit/s carries ~940 Mbit/s of TCP
        payload, as Gigabit Ethernet does.
        """
        for host in (self.a, self.b):
            if rate_bps is None:
                _run("tc", "-n", host.netns, "qdisc", "del", "dev", host.veth, "root", check=False)
            else:
                _run("tc", "-n", host.netns, "qdisc", "replace", "dev", host.veth, "root", "tbf",
                     "rate", f"{rate_bps}bit", "burst", str(burst or tbf_burst(rate_bps)),
                     "latency", f"{TBF_LATENCY_MS}ms")
        self.rate_bps = rate_bps
        self.burst = None if rate_bps is None else burst or tbf_burst(rate_bps)

    def link_down(self, host: Host):
        _run("ip", "-n", host.netns, "link", "set", host.veth, "down")

    def link_up(self, host: Host):
        _run("ip", "-n", host.netns, "link", "set", host.veth, "up")

    def pin(self):
        """Give each host its own half of this machine's CPUs, as two boxes
        would have (processes started afterwards).  Returns (A's, B's)."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise RigUnavailable("pinning the hosts needs at least 2 CPUs")
        half = len(cpus) // 2
        self.a.cpus, self.b.cpus = set(cpus[:half]), set(cpus[half:])
        return self.a.cpus, self.b.cpus

    def qdisc_stats(self, host: Host) -> str:
        return _run("tc", "-n", host.netns, "-s", "qdisc", "show", "dev", host.veth,
                    check=False).stdout.strip()

    def addresses(self, host: Host) -> list[str]:
        """IPv4 addresses (CIDR) actually configured on the host's veth."""
        out = _run("ip", "-n", host.netns, "-4", "-o", "addr", "show", "dev", host.veth).stdout
        return re.findall(r"inet (\S+)", out)

    # -- processes -------------------------------------------------------

    def env(self, extra: dict | None = None) -> dict:
        """This environment, the checkout first on PYTHONPATH, unbuffered, plus extra."""
        env = _testing().child_env()
        env.update(extra or {})
        return env

    def popen(self, host: Host, argv, **kwargs) -> subprocess.Popen:
        """Start argv inside the host's namespace (``ip netns exec`` execs it,
        so the Popen's pid is the program's own)."""
        if self._closed:
            raise RuntimeError("the two hosts are closed")
        kwargs.setdefault("env", self.env())
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("cwd", str(ROOT))
        if host.cpus is not None and "preexec_fn" not in kwargs:
            cpus = host.cpus
            kwargs["preexec_fn"] = lambda: os.sched_setaffinity(0, cpus)
        proc = subprocess.Popen(["ip", "netns", "exec", host.netns, *map(str, argv)], **kwargs)
        self._procs.append(proc)
        return proc

    def python(self, host: Host, code: str, *args):
        """A Python snippet as a process on the host, talked to by lines (a
        pyzmq.testing.PeerProcess, as tests/peers.py's Peer); closing it
        sends SIGTERM, then SIGKILL after a second."""
        return _testing().PeerProcess(code, *args, popen=functools.partial(self.popen, host),
                                      term_grace=1.0)

    def start_server(self, host: Host | None = None, port: int = 0, ready_timeout: float = 10.0):
        """zmq_server on host (default A), listening on its veth address: a
        started pyzmq.testing.ServerProcess, whose ``address`` clients on
        either host use and whose ``logs()``/``registrations()`` read its stderr."""
        host = host or self.a
        return _testing().ServerProcess(host.ip, port, ready_timeout=ready_timeout, log_lines=5000,
                                        popen=functools.partial(self.popen, host)).start()

    # -- tear-down -------------------------------------------------------

    def close(self):
        """End our processes, then delete the namespaces (and with them the veth pair)."""
        if self._closed:
            return
        self._closed = True
        with shielded():
            for proc in self._procs:
                _end(proc)
            for netns in self._made:
                _kill_inside(netns)
            for netns in reversed(self._made):
                _run("ip", "netns", "del", netns, check=False)
        _live.discard(self)

    @property
    def closed(self):
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<TwoHosts {self.a} {self.b} {format_rate(self.rate_bps)}>"


def _testing():
    """pyzmq.testing from this checkout, imported on first use (so that
    --cleanup-stale works without a built extension)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import pyzmq.testing
    return pyzmq.testing


def _end(proc: subprocess.Popen, grace: float = 2.0):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass


def _pids_inside(netns: str) -> list[int]:
    out = _run("ip", "netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_inside(netns: str):
    """SIGKILL, by pid, whatever is still running in one of our namespaces."""
    for _ in range(10):
        pids = [p for p in _pids_inside(netns) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def list_ours() -> list[str]:
    out = _run("ip", "netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if _NAME.match(n)]


def cleanup_stale() -> list[str]:
    """Delete namespaces named by this module whose creating process is gone
    (a run killed with SIGKILL), killing any process left inside them.
    Namespaces of live runs are left alone.  Returns the names removed."""
    removed = []
    for netns in list_ours():
        pid = int(_NAME.match(netns).group(2))
        if pid == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        _kill_inside(netns)
        _run("ip", "netns", "del", netns, check=False)
        removed.append(netns)
    return removed


@atexit.register
def _close_all():
    for hosts in list(_live):
        with contextlib.suppress(Exception):
            hosts.close()


@contextlib.contextmanager
def signals_interrupt():
    """While inside: SIGTERM and SIGHUP raise KeyboardInterrupt (as Ctrl-C
    does), so ``finally`` blocks and ``with`` exits run and the namespaces are
    removed.  A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def shielded():
    """While inside: Ctrl-C, SIGTERM and SIGHUP only print a note, so a
    clean-up is not cut short.  A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum, frame):
        print("removing the namespaces, please wait...", file=sys.stderr, flush=True)

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {sig: signal.signal(sig, note) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
