#!/usr/bin/env python3
"""remote_lat: see pyzmq/perftools.py (also installed as the console script remote_lat)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pyzmq.perftools import remote_lat_main  # noqa: E402

remote_lat_main()
