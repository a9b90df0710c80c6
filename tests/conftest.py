"""Shared fixtures: a real zmq_server child process on 127.0.0.1, and a
check around every test that it leaves nothing of the library behind."""

import os
import sys

import pytest

# Import the package from this checkout (built in place), not from anywhere else.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != REPO_ROOT:
    sys.path.insert(0, REPO_ROOT)

from helpers import Snapshot  # noqa: E402
from pyzmq.testing import ServerProcess  # noqa: E402


@pytest.fixture(autouse=True)
def leaves_nothing_behind():
    """Fail a test that leaves instances open, threads running (relays,
    directory keepers, peer readers...) or zero-copy loans outstanding.

    Threads get a short grace to end (a closed relay or keeper stops on its
    own); the process-wide ZAP handler thread is allowed.  Set up before
    and torn down after the test's other function fixtures, so what a
    fixture opens and closes (a zmq_server, an instance) is not counted."""
    before = Snapshot()
    yield
    leaks = before.leaks()
    if leaks:
        pytest.fail("the test left behind: " + "; ".join(leaks), pytrace=False)


@pytest.fixture
def directory_server():
    """A running zmq_server (a :class:`pyzmq.testing.ServerProcess`), stopped afterwards."""
    server = ServerProcess(host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def directory(directory_server):
    """The "127.0.0.1:PORT" address of a running zmq_server."""
    return directory_server.address


@pytest.fixture(scope="session")
def etcd_session_cluster():
    """A real 3-node etcd cluster on loopback (:class:`pyzmq.testing.EtcdCluster`),
    started once per test run and stopped at its end; skipped when etcd
    or the etcd3gw client (``pip install .[etcd]``; setup.sh installs both)
    is missing."""
    import shutil
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server etcd-client; setup.sh does)")
    pytest.importorskip("etcd3gw", reason="the etcd3gw client is not installed (pip install .[etcd])")
    from pyzmq.testing import EtcdCluster
    cluster = EtcdCluster(size=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd_cluster(etcd_session_cluster):
    """The session's etcd cluster with every node running and healthy
    (a test that killed nodes gets them back for the next one)."""
    cluster = etcd_session_cluster
    if cluster.dir is None or len(cluster.alive()) < cluster.size:
        for i in range(cluster.size):
            if not cluster.running(i):
                cluster.restart(i, wait=False)
    cluster.wait_healthy()
    return cluster
