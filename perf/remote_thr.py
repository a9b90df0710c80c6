#!/usr/bin/env python3
"""remote_thr: see pyzmq/perftools.py (also installed as the console script remote_thr)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pyzmq.perftools import remote_thr_main  # noqa: E402

remote_thr_main()
