"""Every script in examples/ runs to the end, prints something, and logs nothing:
a new user reads a WARNING on stderr as something gone wrong."""

import subprocess
import sys

import pytest

from helpers import ROOT, child_env


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_runs(example):
    env = child_env()
    out = subprocess.run([sys.executable, str(ROOT / "examples" / example)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    assert not out.stderr.strip(), out.stderr
