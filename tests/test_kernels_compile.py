"""Every Triton kernel compiles for an H100 (sm_90) down to a cubin and fits its shared memory,
checked ahead of time on this CPU-only machine (``python -m fastxlt.kernels.compile_check``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90_within_shared_memory():
    pytest.importorskip("triton.backends.nvidia", reason="triton without its NVIDIA backend")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "fastxlt.kernels.compile_check", "--arch", "90"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
