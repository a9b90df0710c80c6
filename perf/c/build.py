"""Build the C reference perf tools (perf/c/*.c) into perf/c/bin/.

The benchmark runner and the tests call :func:`build`; by hand either run
``python perf/c/build.py [--force]`` or ``make -C perf/c``.  Both compile
with the same command::

    cc -O2 -Wall -Wextra $(pkg-config --cflags libzmq) -o bin/NAME NAME.c \\
        $(pkg-config --libs libzmq)

``$CC`` overrides ``cc``.  Without pkg-config (or without libzmq.pc) the
flags fall back to plain ``-lzmq``.

A tool is recompiled only when its binary is missing or older than its
source or perf.h (or when ``force=True``), so calling :func:`build` before
every benchmark is cheap, and with up-to-date binaries no compiler is needed
at all.  Each binary is written to a temporary name and renamed into place,
so concurrent callers never run a half-written executable.

This file is loaded by path (it is not in a package); load it under a name
of your own, e.g.::

    spec = importlib.util.spec_from_file_location("perf_c_build", PATH)
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN_DIR = HERE / "bin"
TOOLS = ("local_lat", "remote_lat", "local_thr", "remote_thr")
# the diagnostic programs: percall (perf/percall.py's C side) and wiring_lat
# (pyzmq-wiring's latency path in C); built with build(tools=EXTRA_TOOLS)
EXTRA_TOOLS = ("percall", "wiring_lat")
COMMON_HEADER = HERE / "perf.h"
CFLAGS = ["-O2", "-Wall", "-Wextra"]


class BuildError(RuntimeError):
    """The C tools could not be built."""


class CompilerNotFound(BuildError):
    """No C compiler on this machine."""


class LibzmqNotFound(BuildError):
    """The libzmq development files (zmq.h, libzmq.so) are missing."""


def tool_paths(tools=TOOLS) -> dict[str, Path]:
    """Where the binaries are (or will be), whether or not they exist."""
    return {name: BIN_DIR / name for name in tools}


def _compiler() -> list[str]:
    cc = shlex.split(os.environ.get("CC", "") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        raise CompilerNotFound(
            f"C compiler {cc[0] if cc else 'cc'!r} not found on PATH: install "
            "gcc or clang (Debian/Ubuntu: apt-get install build-essential) or "
            "set CC"
        )
    return cc


def _zmq_flags() -> tuple[list[str], list[str]]:
    """(cflags, libs) for libzmq, from pkg-config when it knows libzmq."""
    if shutil.which("pkg-config"):
        try:
            cflags = subprocess.run(
                ["pkg-config", "--cflags", "libzmq"],
                check=True, capture_output=True, text=True,
            ).stdout.split()
            libs = subprocess.run(
                ["pkg-config", "--libs", "libzmq"],
                check=True, capture_output=True, text=True,
            ).stdout.split()
            return cflags, libs
        except subprocess.CalledProcessError:
            pass  # no libzmq.pc: try the default search paths
    return [], ["-lzmq"]


def _is_stale(binary: Path, sources: list[Path]) -> bool:
    try:
        built = binary.stat().st_mtime
    except FileNotFoundError:
        return True
    return any(src.stat().st_mtime > built for src in sources)


def _compile(cc: list[str], cflags: list[str], libs: list[str],
             source: Path, binary: Path) -> None:
    tmp = binary.with_name(f".{binary.name}.{os.getpid()}.tmp")
    cmd = [*cc, *CFLAGS, *cflags, "-o", str(tmp), str(source), *libs]
    # C locale: the diagnostics below look for the compiler's English text.
    env = dict(os.environ, LC_ALL="C")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            out = (proc.stderr + proc.stdout).strip()
            command = shlex.join(cmd)
            if "zmq.h" in out:
                raise LibzmqNotFound(
                    "libzmq development headers not found (zmq.h): install "
                    "libzmq3-dev (Debian/Ubuntu) or zeromq-devel (Fedora)\n"
                    f"$ {command}\n{out}"
                )
            if "-lzmq" in out:
                raise LibzmqNotFound(
                    "libzmq library not found by the linker (-lzmq): install "
                    "libzmq3-dev (Debian/Ubuntu) or zeromq-devel (Fedora)\n"
                    f"$ {command}\n{out}"
                )
            raise BuildError(f"compiling {source.name} failed\n$ {command}\n{out}")
        os.replace(tmp, binary)
    finally:
        tmp.unlink(missing_ok=True)


def build(force: bool = False, tools=TOOLS) -> dict[str, str]:
    """Compile the four tools (or `tools`, e.g. EXTRA_TOOLS) as needed;
    return {name: absolute path}.

    Raises CompilerNotFound or LibzmqNotFound (both BuildError) when the
    machine cannot build them, BuildError for any other compile failure.
    """
    paths = tool_paths(tools)
    stale = [
        name for name, binary in paths.items()
        if force or _is_stale(binary, [HERE / f"{name}.c", COMMON_HEADER])
    ]
    if stale:
        cc = _compiler()
        cflags, libs = _zmq_flags()
        BIN_DIR.mkdir(exist_ok=True)
        for name in stale:
            _compile(cc, cflags, libs, HERE / f"{name}.c", paths[name])
    return {name: str(path) for name, path in paths.items()}


def build_pyfloor(python: str = sys.executable, force: bool = False) -> Path:
    """Compile pyfloor.c (perf/py_floor_lat.py's module: the least a Python
    loop can do on pyzmq-wiring's latency path) for the interpreter
    `python`, as needed; return the directory that holds it (put it on
    sys.path, or PYTHONPATH, to import pyfloor)."""
    info = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['include']); "
         "print(sysconfig.get_config_var('EXT_SUFFIX'))"],
        check=True, capture_output=True, text=True).stdout.split()
    include, suffix = info[0], info[1]
    out_dir = BIN_DIR / "py"
    binary = out_dir / f"pyfloor{suffix}"
    source = HERE / "pyfloor.c"
    if force or _is_stale(binary, [source]):
        cc = _compiler()
        cflags, libs = _zmq_flags()
        out_dir.mkdir(parents=True, exist_ok=True)
        _compile(cc, ["-shared", "-fPIC", f"-I{include}", *cflags], libs, source, binary)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--force"]):
        print("usage: build.py [--force]", file=sys.stderr)
        return 2
    try:
        built = build(force=bool(args))
        built.update(build(force=bool(args), tools=EXTRA_TOOLS))
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
