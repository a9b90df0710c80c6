#!/usr/bin/env python3
"""local_lat: see pyzmq/perftools.py (also installed as the console script local_lat)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pyzmq.perftools import local_lat_main  # noqa: E402

local_lat_main()
