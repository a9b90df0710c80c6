"""Kept so that tests written against it still import: the peer helpers
(``Peer``, ``COMMANDS``, ``wait_name_free``) now live in helpers.py with the other shared test
helpers; import them from there."""

from helpers import COMMANDS, ROOT, Peer, wait_name_free  # noqa: F401
