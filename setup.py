"""Build the pyzmq._zmq extension against the system libzmq found by pkg-config."""

import shlex
import subprocess
import sys

from setuptools import Extension, setup


def libzmq_flags():
    """Return (include_dirs, library_dirs, libraries) for libzmq, or exit with a clear message."""
    try:
        cflags = subprocess.run(["pkg-config", "--cflags-only-I", "libzmq"], check=True,
                                capture_output=True, text=True).stdout
        libs = subprocess.run(["pkg-config", "--libs", "libzmq"], check=True,
                              capture_output=True, text=True).stdout
        version = subprocess.run(["pkg-config", "--modversion", "libzmq"], check=True,
                                 capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        sys.exit("pyzmq-wiring: pkg-config is not installed; on Debian: apt-get install pkg-config libzmq3-dev")
    except subprocess.CalledProcessError:
        sys.exit("pyzmq-wiring: pkg-config cannot find libzmq (zmq.h and libzmq.so); on Debian: apt-get install libzmq3-dev")
    major, minor = (int(p) for p in version.split(".")[:2])
    if (major, minor) < (4, 3):
        sys.exit(f"pyzmq-wiring: libzmq {version} found, 4.3 or newer is needed")
    incs = [f[2:] for f in shlex.split(cflags) if f.startswith("-I")]
    libdirs = [f[2:] for f in shlex.split(libs) if f.startswith("-L")]
    libnames = [f[2:] for f in shlex.split(libs) if f.startswith("-l")]
    return incs, libdirs, libnames or ["zmq"]


def extensions():
    from Cython.Build import cythonize

    incs, libdirs, libnames = libzmq_flags()
    ext = Extension(
        "pyzmq._zmq",
        ["src/_zmq.pyx"],
        include_dirs=["include"] + incs,
        library_dirs=libdirs,
        libraries=libnames,
        extra_compile_args=["-O2"],
        # the C headers the .pyx files include: a change to one alone
        # rebuilds the module (Cython tracks only .pyx and .pxd)
        depends=["src/service.h", "src/relay.h", "src/zerocopy.h"],
    )
    return cythonize(
        [ext],
        include_path=["include", "src"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "initializedcheck": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions())
