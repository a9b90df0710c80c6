#!/usr/bin/env python3
"""local_thr: see pyzmq/perftools.py (also installed as the console script local_thr)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pyzmq.perftools import local_thr_main  # noqa: E402

local_thr_main()
