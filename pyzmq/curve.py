"""CURVE keys for pyzmq-wiring (see docs/security.md).

    public, secret = pyzmq.curve_keypair()
    zmq = pyzmq.ZMQ("localhost", secret_key=secret, allowed_keys=[...])

``zmq_keygen PATH`` writes a new secret key to PATH, readable by its owner
only, and the public key to PATH.pub.
"""

import argparse
import os
import sys
from typing import TypeVar, overload

from pyzmq import _zmq


def curve_keypair() -> "tuple[str, str]":
    """A new CURVE keypair ``(public, secret)``, each 40 Z85 characters."""
    return _zmq.curve_keypair()


def curve_public(secret: str) -> str:
    """The public key (Z85) of a secret key (Z85, surrounding whitespace
    ignored); ValueError if it is not one."""
    return _zmq.curve_public(strip_key(secret))


_T = TypeVar("_T")


@overload
def strip_key(key: str) -> str: ...
@overload
def strip_key(key: _T) -> _T: ...
def strip_key(key: object) -> object:
    """A key as given, less surrounding whitespace when it is a str (a key
    read from a file ends in a newline); anything else is returned as is,
    for the checks to refuse."""
    return key.strip() if isinstance(key, str) else key


def load_key(path: "str | os.PathLike[str]") -> str:
    """The one CURVE key (Z85, 40 characters) in the file at ``path``, such
    as the secret key ``zmq_keygen PATH`` writes to PATH or the public key
    in PATH.pub.  Surrounding whitespace, blank lines and lines starting
    with '#' are skipped.  OSError when the file cannot be read,
    ValueError when it does not hold exactly one key."""
    with open(path, encoding="ascii", errors="replace") as f:
        lines = [line.strip() for line in f]
    keys = [line for line in lines if line and not line.startswith("#")]
    if len(keys) != 1:
        raise ValueError(f"{os.fspath(path)}: expected one CURVE key (40 Z85 characters), "
                         f"found {len(keys)} non-comment lines")
    try:
        return _zmq._check_z85_key(keys[0], "key")
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None


def check_key(key, what="key"):
    """Return key if it is a str of 40 Z85 characters; TypeError for a non-str, else ValueError."""
    return _zmq._check_z85_key(key, what)


def _create(path, mode):
    """A new file at ``path`` opened for writing: never an existing file,
    never through a symlink (O_EXCL, O_NOFOLLOW)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)


def write_keypair(path):
    """Write a new secret key to ``path`` (mode 0600) and its public key to
    ``path.pub`` (0644); neither may exist yet (a symlink planted at either
    is refused: FileExistsError); return the public key."""
    public, secret = curve_keypair()
    path = os.fspath(path)
    fd = _create(path, 0o600)
    try:
        pub_fd = _create(path + ".pub", 0o644)
    except BaseException:
        os.close(fd)
        os.unlink(path)         # nothing written yet: leave no half pair
        raise
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    with os.fdopen(pub_fd, "w") as f:
        f.write(public + "\n")
    return public


def main(argv=None):
    """Entry point of ``zmq_keygen``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="zmq_keygen",
        description="Make a CURVE keypair: the secret key goes to PATH (readable by you only), "
                    "the public key to PATH.pub and to stdout.")
    parser.add_argument("path", help="file for the secret key; it must not exist yet")
    args = parser.parse_args(argv)
    try:
        public = write_keypair(args.path)
    except FileExistsError as exc:
        parser.error(f"{exc.filename or args.path} exists; not overwriting a key "
                     "(nor writing through a link)")
    except OSError as exc:
        parser.error(f"cannot write {args.path}: {exc.strerror or exc}")
    print(public)
    return 0


if __name__ == "__main__":
    sys.exit(main())
