"""The samplers' kernels compile for sm_90 (H100/H200) at every precision, checked on any machine
(Triton compiles and assembles PTX on the CPU): what the interpreter, which runs no PTX, misses."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ramac import kernels


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="needs Triton")
def test_the_sampler_kernels_compile_for_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_sm90.py")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 30 and all(line.endswith(" ok") for line in lines), \
        done.stdout + done.stderr[-2000:]
