"""Child processes for tests and the perf runners: a real ``zmq_server``
(:class:`ServerProcess`) and a Python snippet talked to by lines
(:class:`PeerProcess`).

    with ServerProcess() as server:
        client = DirectoryClient(server.address)
        ...
        server.kill()              # SIGKILL, as a crash would
        server.start(server.port)  # back on the same port

    with PeerProcess(CODE, server.address) as peer:
        peer.expect("ready")
        peer.tell("go")

A server child stops with this process, however it ends (SIGKILL
included): see ``pyzmq/lifeline.py``, shared with :class:`pyzmq.Directory`.

The children's stdout and stderr are drained by daemon threads (so a chatty
child never blocks on a full pipe); the last lines of a server's stderr are
kept for :meth:`ServerProcess.logs` and :meth:`ServerProcess.wait_for_log`.

Both take ``popen``, a callable used in place of :class:`subprocess.Popen`
(same arguments), so a caller can start them elsewhere -- perf/netns.py
starts them inside a network namespace (``ip netns exec``, pinned CPUs).
"""

import collections
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

from pyzmq import lifeline
from pyzmq.embedded import READY_LINE, child_env, server_command
from pyzmq.errors import Error

_READY = READY_LINE
_REGISTERED = re.compile(r"zmq_server: registered '(.*)' kind [EQ] at (\S+) by ")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




class ServerProcess:
    """A ``zmq_server`` child process listening on ``host`` (default 127.0.0.1).

    ``port=0`` picks a free port on the first start; later starts without a
    port reuse the port of the previous run, so clients can find it again.
    ``popen`` starts the child (default :class:`subprocess.Popen`).
    """

    def __init__(self, host="127.0.0.1", port=0, quiet=False, ready_timeout=10.0, log_lines=2000,
                 extra_args=(), popen=subprocess.Popen):
        self.extra_args = list(extra_args)   # e.g. ["--curve-secret", path]
        self.public_key = None               # the server's CURVE public key, when it has one
        self.host = host
        self.port = port
        self.quiet = quiet
        self.ready_timeout = ready_timeout
        self._popen = popen
        self._logs = collections.deque(maxlen=log_lines)
        self._logs_changed = threading.Condition()
        self._proc = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, port=None):
        """Start the server (on ``port``, or the last one) and wait until it listens.

        Raises :class:`pyzmq.errors.Error` if it exits or stays silent for
        ``ready_timeout`` seconds, with the tail of its stderr.
        """
        if self.running:
            raise Error(f"zmq_server is already running as pid {self._proc.pid}")
        if port is not None:
            self.port = port
        # it stops with this process, however this process ends (a
        # script that never calls stop() leaves nothing running)
        cmd = server_command(self.host, self.port, (["-q"] if self.quiet else []) + self.extra_args)
        self._proc = proc = lifeline.spawn(cmd, popen=self._popen, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, env=child_env(), text=True,
                                           errors="replace")
        ready = {}
        ready_event = threading.Event()
        threading.Thread(target=self._drain_stdout, args=(proc, ready, ready_event),
                         name="zmq_server-stdout", daemon=True).start()
        stderr_thread = threading.Thread(target=self._drain_stderr, args=(proc,),
                                         name="zmq_server-stderr", daemon=True)
        stderr_thread.start()
        ready_event.wait(self.ready_timeout)
        if "port" not in ready:
            if ready_event.is_set():  # stdout closed: the server is exiting
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                self._terminate(proc)
                why = f"did not report readiness within {self.ready_timeout:g} s"
            else:
                why = f"exited with status {proc.returncode} before listening"
            stderr_thread.join(1.0)
            tail = "\n".join(list(self._logs)[-20:])
            raise Error(f"zmq_server ({' '.join(proc.args)}) {why}" + (f"; its stderr:\n{tail}" if tail else ""))
        self.port = ready["port"]
        self.public_key = ready["key"]
        return self

    def stop(self, timeout=5.0):
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL.  Return the exit status (None if not started)."""
        proc = self._proc
        if proc is None:
            return None
        return self._terminate(proc, timeout)

    def kill(self):
        """SIGKILL the server, as a crash would, and reap it.  Return the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        status = proc.wait()
        _close_lifeline(proc)
        return status

    @staticmethod
    def _terminate(proc, timeout=5.0):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        status = proc.wait()
        _close_lifeline(proc)
        return status

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- state -------------------------------------------------------------

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    @property
    def proc(self):
        """The :class:`subprocess.Popen` of the current (or last) run, None before the first."""
        return self._proc

    @property
    def pid(self):
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self):
        return None if self._proc is None else self._proc.poll()

    @property
    def address(self):
        """``host:port`` for clients (a wildcard listen address is reached as 127.0.0.1)."""
        from pyzmq.location import client_address
        return client_address(self.host, self.port)

    def rss_kib(self):
        """The server's resident memory in KiB (Linux /proc), or None if unknown."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, TypeError, ValueError):
            pass
        return None

    # -- logs --------------------------------------------------------------

    def logs(self):
        """The last stderr lines of the server (all runs), oldest first."""
        with self._logs_changed:
            return list(self._logs)

    def registrations(self):
        """{name: address} of every REGISTER the server logged (latest wins)."""
        return {m.group(1): m.group(2) for m in map(_REGISTERED.match, self.logs()) if m}

    def wait_for_log(self, pattern, timeout=5.0):
        """Wait until a stderr line matches the regex ``pattern``; return it, or None on timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._logs_changed:
            while True:
                for line in self._logs:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._logs_changed.wait(remaining)

    def _drain_stdout(self, proc, ready, ready_event):
        try:
            for line in proc.stdout:
                match = _READY.match(line.rstrip("\n"))
                if match and not ready_event.is_set():
                    ready["port"] = int(match.group(2))
                    ready["key"] = match.group(3)
                    ready_event.set()
        finally:
            ready_event.set()

    def _drain_stderr(self, proc):
        for line in proc.stderr:
            with self._logs_changed:
                self._logs.append(line.rstrip("\n"))
                self._logs_changed.notify_all()


def _close_lifeline(proc):
    """Close our end of a stopped server's stdin pipe (no fd kept per run)."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass


class PeerProcess:
    """A Python snippet (``code``, run with ``args`` as ``sys.argv[1:]``) as a
    child process with this checkout importable: read its stdout by lines
    (:meth:`expect`), write lines to its stdin (:meth:`tell`).

    :meth:`close` SIGKILLs it, or with ``term_grace`` seconds first sends
    SIGTERM and waits that long.  ``popen`` starts it (default
    :class:`subprocess.Popen`).
    """

    def __init__(self, code, *args, popen=subprocess.Popen, term_grace=None):
        self.term_grace = term_grace
        self.proc = popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=_PACKAGE_ROOT, env=child_env())
        self.lines = queue.Queue()   # stdout lines, then None when it closes
        self.stderr = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self._keep_err), daemon=True).start()

    @staticmethod
    def _read(stream, put):
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def _keep_err(self, line):
        if line is not None:
            self.stderr.append(line)

    def expect(self, prefix, timeout=15.0):
        """The rest of the next stdout line starting with prefix (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"peer said no {prefix!r} within {timeout} s; "
                                     f"stderr: {self.err()}") from None
            if line is None:
                self.proc.wait(5)
                raise AssertionError(f"peer exited ({self.proc.returncode}) before {prefix!r}; "
                                     f"stderr: {self.err()}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def remaining_lines(self, quiet_for=5.0):
        """Every stdout line until the peer says nothing for ``quiet_for`` s or exits."""
        lines = []
        while True:
            try:
                line = self.lines.get(timeout=quiet_for)
            except queue.Empty:
                return lines
            if line is None:
                return lines
            lines.append(line)

    def interrupt(self, expect="INTERRUPTED", timeout=5.0):
        """Send SIGINT; return the seconds until the peer prints ``expect``."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.expect(expect, timeout=timeout)
        return time.monotonic() - started

    def tell(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def err(self):
        """The last 30 lines of its stderr."""
        return "\n".join(self.stderr[-30:])

    def wait(self, timeout=15.0):
        return self.proc.wait(timeout)

    def close(self):
        proc = self.proc
        if proc.poll() is None:
            if self.term_grace:
                proc.terminate()
                try:
                    proc.wait(self.term_grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
            else:
                proc.kill()
        proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EtcdCluster:
    """A real etcd cluster of ``size`` nodes (default 3) on loopback, one
    ``etcd`` process per node, each with its own data directory in a
    temporary directory, for the etcd directory backend's tests and
    benchmark (docs/etcd.md).

        with EtcdCluster() as cluster:
            ZMQ(cluster.url)               # "etcd://127.0.0.1:P1,127.0.0.1:P2,..."
            cluster.kill(cluster.leader()) # SIGKILL the leader
            cluster.restart(i)             # back on the same ports and data

    The nodes' output goes to ``<tmp>/<name>.log`` (no reader threads).
    ``heartbeat_ms`` and ``election_ms`` are etcd's ``--heartbeat-interval``
    and ``--election-timeout`` (etcd's defaults: 100 and 1000).

    ``tls`` (a dict: ``cert``, ``key`` of the nodes, ``ca`` that signed the
    clients' certificates, and ``client_cert``, ``client_key`` for this
    helper's own checks; :func:`make_test_certs` makes one) serves the
    client URLs over https and requires a client certificate signed by
    ``ca``; :attr:`url` is then ``etcd+tls://``.
    """

    def __init__(self, size=3, host="127.0.0.1", heartbeat_ms=100, election_ms=1000,
                 ready_timeout=20.0, extra_args=(), etcd="etcd", tls=None):
        import shutil
        if shutil.which(etcd) is None:
            raise Error(f"{etcd!r} is not installed: on Debian, apt-get install etcd-server etcd-client "
                        "(setup.sh does)")
        self.size = size
        self.host = host
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.ready_timeout = ready_timeout
        self.extra_args = list(extra_args)
        self.etcd = etcd
        self.tls = tls
        self.dir = None
        self.names = [f"node{i}" for i in range(size)]
        self.client_ports = []
        self.peer_ports = []
        self._procs = [None] * size
        self._token = None

    # -- addresses ---------------------------------------------------------

    @property
    def endpoints(self):
        """``["127.0.0.1:PORT", ...]``, one per node, in node order."""
        return [f"{self.host}:{port}" for port in self.client_ports]

    @property
    def url(self):
        """The directory address for ``ZMQ()``: ``etcd://h:p,h:p,h:p``."""
        return ("etcd+tls://" if self.tls else "etcd://") + ",".join(self.endpoints)

    def endpoint(self, i):
        return self.endpoints[i]

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        """Pick free ports, start every node and wait until all are healthy."""
        import socket
        import tempfile
        import uuid
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="pyzmq-etcd-")
        if not self.client_ports:
            holders = []
            for _ in range(2 * self.size):     # held together, so all differ
                s = socket.socket()
                s.bind((self.host, 0))
                holders.append(s)
            ports = [s.getsockname()[1] for s in holders]
            for s in holders:
                s.close()
            self.client_ports, self.peer_ports = ports[:self.size], ports[self.size:]
        self._token = f"pyzmq-{uuid.uuid4().hex[:12]}"
        for i in range(self.size):
            self._spawn(i)
        self.wait_healthy()
        return self

    def _spawn(self, i):
        name = self.names[i]
        cluster = ",".join(f"{n}=http://{self.host}:{p}" for n, p in zip(self.names, self.peer_ports))
        client = f"{'https' if self.tls else 'http'}://{self.host}:{self.client_ports[i]}"
        peer = f"http://{self.host}:{self.peer_ports[i]}"
        cmd = [self.etcd, "--name", name, "--data-dir", os.path.join(self.dir, name),
               "--listen-client-urls", client, "--advertise-client-urls", client,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", cluster, "--initial-cluster-state", "new",
               "--initial-cluster-token", self._token,
               "--heartbeat-interval", str(self.heartbeat_ms),
               "--election-timeout", str(self.election_ms),
               "--log-level", "warn", *self.extra_args]
        if self.tls:
            cmd += ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                    "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        try:
            self._procs[i] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def running(self, i):
        proc = self._procs[i]
        return proc is not None and proc.poll() is None

    def alive(self):
        """Indices of the nodes whose process runs."""
        return [i for i in range(self.size) if self.running(i)]

    def kill(self, i):
        """SIGKILL node ``i``, as a crash would, and reap it."""
        proc = self._procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()

    def pause(self, i):
        """SIGSTOP node ``i``: it holds its connections open and answers
        nothing, as a hung node or a cut-off link would (:meth:`resume`)."""
        import signal
        if self.running(i):
            self._procs[i].send_signal(signal.SIGSTOP)

    def resume(self, i):
        """SIGCONT node ``i`` after :meth:`pause`."""
        import signal
        if self.running(i):
            self._procs[i].send_signal(signal.SIGCONT)

    def restart(self, i, wait=True):
        """Start node ``i`` again (same ports, same data); with ``wait``,
        until it is healthy (which needs a quorum of running nodes)."""
        self.kill(i)
        self._spawn(i)
        if wait:
            self.wait_healthy([i])

    def wipe(self):
        """Kill every node and delete their data: the next :meth:`start` makes
        a new, empty cluster on the same ports (every lease gone)."""
        import shutil
        for i in range(self.size):
            self.kill(i)
        for name in self.names:
            shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)

    def stop(self, grace=1.0):
        """SIGTERM every node, SIGKILL those still running after ``grace``
        seconds (a node that lost its quorum may ignore SIGTERM), reap them
        and delete the data."""
        import shutil
        procs = [p for p in self._procs if p is not None and p.poll() is None]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        if not self.alive():
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- state -------------------------------------------------------------

    def _call(self, i, path, body=None, timeout=1.0):
        import json
        import urllib.request
        context = None
        if self.tls:
            import ssl
            context = ssl.create_default_context(cafile=self.tls["ca"])
            context.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
        url = f"{'https' if self.tls else 'http'}://{self.host}:{self.client_ports[i]}{path}"
        data = None if body is None else json.dumps(body).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout,
                                    context=context) as reply:
            return json.loads(reply.read())

    def healthy(self, i):
        """True when node ``i`` answers and sees a leader (its /health)."""
        if not self.running(i):
            return False
        try:
            return self._call(i, "/health").get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, nodes=None, timeout=None):
        """Wait until the ``nodes`` (default: all running ones) are healthy;
        raise Error with the tail of their logs otherwise."""
        nodes = self.alive() if nodes is None else list(nodes)
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while True:
            sick = [i for i in nodes if not self.healthy(i)]
            if not sick:
                return
            dead = [i for i in sick if not self.running(i)]
            if dead or time.monotonic() > deadline:
                why = "exited" if dead else f"not healthy within {self.ready_timeout:g} s"
                raise Error(f"etcd node(s) {[self.names[i] for i in dead or sick]} {why}; "
                            f"log tail:\n{self.log_tail((dead or sick)[0])}")
            time.sleep(0.1)

    def leader(self, timeout=10.0):
        """The index of the current leader among the running nodes, asked
        with ``etcdctl endpoint status`` (waits up to ``timeout`` for one)."""
        import json
        deadline = time.monotonic() + timeout
        while True:
            alive = self.alive()
            if alive:
                scheme = "https" if self.tls else "http"
                endpoints = ",".join(f"{scheme}://{self.endpoints[i]}" for i in alive)
                env = dict(os.environ, ETCDCTL_API="3")
                tls = (["--cacert", self.tls["ca"], "--cert", self.tls["client_cert"],
                        "--key", self.tls["client_key"]] if self.tls else [])
                run = subprocess.run(["etcdctl", "--endpoints", endpoints, *tls, "--dial-timeout", "1s",
                                      "--command-timeout", "1s", "endpoint", "status", "-w", "json"],
                                     capture_output=True, text=True, env=env)
                try:
                    statuses = json.loads(run.stdout or "[]")
                except ValueError:
                    statuses = []
                for status in statuses:
                    st = status.get("Status", {})
                    if st.get("leader") and st.get("leader") == st.get("header", {}).get("member_id"):
                        return self.endpoints.index(status["Endpoint"].split("://", 1)[-1])
            if time.monotonic() > deadline:
                raise Error(f"no etcd leader among nodes {alive} within {timeout:g} s")
            time.sleep(0.1)

    def log_tail(self, i, lines=20):
        try:
            with open(os.path.join(self.dir, f"{self.names[i]}.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except (OSError, TypeError):
            return ""


def make_test_certs(directory, host="127.0.0.1"):
    """With the ``openssl`` command, a throwaway CA and a server and a client
    certificate it signed (the server's for IP ``host``), in ``directory``;
    returns the ``tls`` dict :class:`EtcdCluster` takes (``ca``, ``cert``,
    ``key``, ``client_cert``, ``client_key``).  For tests only."""
    def path(name):
        return os.path.join(directory, name)

    def openssl(*args):
        run = subprocess.run(["openssl", *args], capture_output=True, text=True)
        if run.returncode != 0:
            raise Error(f"openssl {' '.join(args[:2])} failed: {run.stderr.strip()[-300:]}")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    openssl("req", "-x509", *ec, "-nodes", "-days", "2", "-subj", "/CN=pyzmq test CA",
            "-keyout", path("ca.key"), "-out", path("ca.pem"))
    for who, ext in (("server", f"subjectAltName=IP:{host}\nextendedKeyUsage=serverAuth,clientAuth"),
                     ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", *ec, "-nodes", "-subj", f"/CN=pyzmq test {who}",
                "-keyout", path(f"{who}.key"), "-out", path(f"{who}.csr"))
        with open(path(f"{who}.ext"), "w") as f:
            f.write(ext + "\n")
        openssl("x509", "-req", "-in", path(f"{who}.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", path(f"{who}.ext"), "-out", path(f"{who}.pem"))
    return {"ca": path("ca.pem"), "cert": path("server.pem"), "key": path("server.key"),
            "client_cert": path("client.pem"), "client_key": path("client.key")}
