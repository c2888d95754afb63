"""Process-group set-up for DeepSpeed: the same code for one plain process and N launched ranks.

``deepspeed --num_gpus N fastxlt/train.py`` sets RANK / WORLD_SIZE / MASTER_ADDR for each rank;
``fastxlt train`` is one process with none of them, so we fill in a one-rank group on a free
local port. Without CUDA the backend is gloo (DeepSpeed's CPU accelerator, ``DS_ACCELERATOR=cpu``).
"""

from __future__ import annotations

import atexit
import os
import socket
from pathlib import Path

import torch


FILLED_IN_BY = "FASTXLT_ONE_RANK_PID"  # set beside RANK etc. when fastxlt, not a launcher, filled them in


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_environment() -> None:
    """Choose DeepSpeed's accelerator and fill in a one-rank process group when not launched."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    inherited = _filled_in_by_another_process()
    if "RANK" not in os.environ or inherited:
        os.environ.update(
            {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
        )
        if inherited:
            os.environ["MASTER_PORT"] = str(_free_port())
        else:
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ[FILLED_IN_BY] = f"{os.getpid()}:{os.environ['MASTER_PORT']}"
        atexit.register(release_shared_memory_name)  # engines set up without init_distributed (tests, benchmarks)


def _filled_in_by_another_process() -> bool:
    """A one-rank group that a parent process filled in and passed on in its environment is not ours: its
    MASTER_PORT is the parent's listening socket, so a child fastxlt run picks its own. A launcher's ranks
    (deepspeed, torchrun) get a MASTER_PORT of the launcher's, which differs from the recorded one."""
    record = os.environ.get(FILLED_IN_BY, "")
    owner, _, port = record.partition(":")
    return bool(record) and owner != str(os.getpid()) and port == os.environ.get("MASTER_PORT")


def init_distributed() -> None:
    prepare_environment()
    import deepspeed

    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
        barrier()  # every local rank has mapped every other rank's all-reduce buffer
        release_shared_memory_name()


def shared_memory_buffer() -> Path:
    """The /dev/shm file DeepSpeed's CPU all-reduce (its shm comm op) creates for this rank.

    DeepSpeed maps one ~66 MB file per local rank when all ranks are on one machine and never unlinks it:
    every phase of every run would leave one behind in memory-backed /dev/shm (13 GB after one test suite).
    """
    name = f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_{os.environ.get('MASTER_PORT', '')}_{rank()}"
    return Path("/dev/shm") / name


def release_shared_memory_name() -> None:
    """Unlink this rank's buffer name once every rank has mapped it: the mappings stay valid, the memory
    is returned when the processes exit, however they exit."""
    try:
        shared_memory_buffer().unlink(missing_ok=True)
    except OSError:
        pass


def rank() -> int:
    """This process's rank; before the group exists, what the launcher said in RANK."""
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    if torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if torch.distributed.is_initialized() and world_size() > 1:
        torch.distributed.barrier()


def broadcast_object(value):
    """Rank 0's value on every rank (e.g. a decision to stop early)."""
    if not torch.distributed.is_initialized() or world_size() == 1:
        return value
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]
