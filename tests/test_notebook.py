"""A notebook under a real Jupyter kernel (ipykernel, driven by nbclient):
an embedded directory, the sync API, re-running a cell, a timeout, a
blocking receive stopped by the kernel's interrupt, then top-level
``await`` with pyzmq.asyncio.  The kernel is this test's own
(a kernelspec in a temporary JUPYTER_PATH running this interpreter) and is
shut down at the end; the directory it started must go with it."""

import json
import os
import re
import signal
import sys
import threading
import time

import nbformat
from nbclient import NotebookClient

from helpers import ROOT, gone, wait_gone

CELLS = [
    # 0: the embedded directory
    """
import pyzmq
directory = pyzmq.Directory()
print("server", directory.pid)
""",
    # 1: the sync API through it
    """
zmq = pyzmq.ZMQ(directory.address)
eid = zmq.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
zmq.create_queue("Q")
zmq.bind("E", "Q")
zmq.send(eid, b"sync")
zmq.receive(timeout=5)
""",
    # 2: the cell that made the instance, run again while the first lives
    """
again = pyzmq.ZMQ(directory.address)
try:
    again.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
except pyzmq.Error as exc:
    print("refused:", exc)
finally:
    again.close()
""",
    # 3: a timeout
    """
try:
    zmq.receive(timeout=0.2)
except pyzmq.Timeout as exc:
    print("timeout:", exc)
""",
    # 4: a blocking receive stopped by the kernel's interrupt (the test sends it)
    """
print("waiting", flush=True)
zmq.receive(timeout=30)
""",
    # 5: the instance is still usable after the interrupt
    """
zmq.send(eid, b"after the interrupt")
zmq.receive(timeout=5)
""",
    # 6: top-level await, on the kernel's own event loop
    """
import asyncio
import pyzmq.asyncio
azmq = await pyzmq.asyncio.ZMQ.connect(directory.address)
ae = await azmq.create_exchange("AE", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
await azmq.create_queue("AQ")
await azmq.bind("AE", "AQ")
waiting = asyncio.ensure_future(azmq.receive(timeout=5))   # waits without blocking the loop
await asyncio.sleep(0.1)
await azmq.send(ae, b"async")
await waiting
""",
    # 7: close the instances; the directory is left to stop with the kernel
    """
await azmq.close()
zmq.close()
print("closed", directory.running)
""",
]


def outputs(cell):
    """A cell's printed text and its result's text/plain, joined."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif out.get("output_type") == "execute_result":
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


def test_notebook_sync_then_top_level_await(tmp_path, monkeypatch):
    spec = tmp_path / "jupyter" / "kernels" / "pyzmq-wiring-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pyzmq-wiring test", "language": "python",
        "env": {"PYTHONPATH": str(ROOT)},
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code.strip()) for code in CELLS]
    nb.cells[4].metadata["tags"] = ["raises-exception"]     # KeyboardInterrupt expected
    client = NotebookClient(nb, timeout=60, kernel_name="pyzmq-wiring-test",
                            resources={"metadata": {"path": str(tmp_path)}})
    took = {}
    with client.setup_kernel():         # starts the kernel; shuts it down on leaving
        kernel = client.km.provisioner.process.pid
        for index, cell in enumerate(nb.cells):
            timer = None
            if index == 4:
                timer = threading.Timer(1.5, os.kill, (kernel, signal.SIGINT))  # the stop button
                timer.start()
            started = time.monotonic()
            client.execute_cell(cell, index)
            took[index] = time.monotonic() - started
            if timer is not None:
                timer.cancel()
    assert gone(kernel)

    texts = [outputs(cell) for cell in nb.cells]
    server = int(re.search(r"server (\d+)", texts[0]).group(1))
    assert texts[1].strip() == "b'sync'"
    assert "refused:" in texts[2]
    assert "already registered by another instance (in this process: close it first)" in texts[2]
    assert texts[3].startswith("timeout:")
    errors = [o for o in nb.cells[4].outputs if o.get("output_type") == "error"]
    assert [e["ename"] for e in errors] == ["KeyboardInterrupt"]
    assert took[4] < 20                 # the interrupt, not the 30 s timeout, ended it
    assert texts[5].strip() == "b'after the interrupt'"
    assert texts[6].strip() == "b'async'"
    assert texts[7].strip() == "closed True"

    # the kernel is gone, and the zmq_server it owned with it
    try:
        assert wait_gone(server), "the notebook's zmq_server outlived its kernel"
    finally:
        if not gone(server):
            os.kill(server, 9)
