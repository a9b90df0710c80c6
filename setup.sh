#!/usr/bin/env bash
# Set up everything pyzmq-wiring needs on a fresh Debian machine, as root:
# system packages, a virtualenv in .venv, Python packages, the extension.
# Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")"

need=()
# etcd-server and etcd-client: the 3-node etcd cluster the etcd directory
# backend's tests start (docs/etcd.md)
for pkg in libzmq3-dev pkg-config iproute2 gcc make etcd-server etcd-client; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check \
    "setuptools>=61" wheel "Cython>=3.0" \
    pytest pytest-timeout pytest-xdist hypothesis pyzmq matplotlib mypy ipykernel nbclient nbformat \
    prometheus_client
# the extension, built in place so the checkout imports as it is, and the
# console scripts (zmq_server, local_lat, ...) installed into the venv, with
# the optional etcd directory backend's client library (the [etcd] extra).
# editable_mode=compat puts the checkout on the venv's path with a plain .pth
# entry, which mypy follows (the default import-hook mode is invisible to it)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation \
    --config-settings editable_mode=compat -e ".[etcd,metrics]"
.venv/bin/python setup.py -q build_ext --inplace 2>&1 | grep -v -e "^warning" -e "Warning" -e "warnings.warn" || true
.venv/bin/python -c "import pyzmq; print('setup: pyzmq-wiring', pyzmq.__version__, 'on libzmq', pyzmq.zmq_version())"
