"""The one-rank process group fastxlt fills in for an unlaunched run is its own: a child process that
inherits a parent's filled-in environment (tests, scripts, a grid that runs `fastxlt` in a subprocess)
takes a fresh port instead of colliding with the parent's listening socket; a launcher's ranks keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastxlt.training import distributed

CHILD = "import os; from fastxlt.training import distributed as d; d.prepare_environment(); print(os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['MASTER_PORT'])"


def _child(env: dict[str, str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.split()


def test_a_child_of_a_filled_in_process_picks_its_own_port(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", distributed.FILLED_IN_BY):
        monkeypatch.delenv(name, raising=False)
    distributed.prepare_environment()
    parent_port = os.environ["MASTER_PORT"]
    rank, world, port = _child(dict(os.environ))
    assert (rank, world) == ("0", "1") and port != parent_port
    # a launcher's rank (its own RANK / WORLD_SIZE / MASTER_PORT) is left as the launcher set it
    launched = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "MASTER_PORT": "29555"}
    assert _child(launched) == ["1", "2", "29555"]


SHM_CHILD = """
import os
from fastxlt.training import distributed as d
release = d.release_shared_memory_name
d.release_shared_memory_name = lambda: None   # let DeepSpeed's buffer be seen first
d.init_distributed()
path = d.shared_memory_buffer()
print("created", path.exists())
release()
print("released", path.exists())
"""


def test_deepspeeds_cpu_allreduce_buffer_is_not_left_in_dev_shm(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "LOCAL_SIZE")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    before = {p.name for p in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")}
    result = subprocess.run([sys.executable, "-c", SHM_CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    if "created False" in result.stdout:
        pytest.skip("this DeepSpeed build does not create a shared-memory all-reduce buffer")
    assert "created True" in result.stdout and "released False" in result.stdout
    assert {p.name for p in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")} <= before
