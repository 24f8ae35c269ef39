"""The one place that knows about torchrun/SLURM environments and process groups.

Conventions: `rank` is the GLOBAL rank (DALI shard id), `local_rank` picks the GPU on a node
(DALI device id), `world_size` is the number of shards. A plain `python script.py` run is rank 0
of a world of 1 and creates no process group.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def dali_device_id(self) -> Optional[int]:
        """DALI `device_id`: the local GPU, or None for a CPU-only pipeline."""
        return self.device.index if self.device.type == "cuda" else None


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name, "") != "":
            return int(os.environ[name])
    return default


def read_env() -> tuple:
    """(rank, local_rank, world_size) from torchrun variables, else SLURM's, else a single
    process."""
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    world_size = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    return rank, local_rank, world_size


def is_main_process() -> bool:
    """Rank 0 (or a plain single process), from the launcher's environment: for code that
    holds no `DistInfo` (entry points, progress bars of shared helpers)."""
    return read_env()[0] == 0


def print_main(*args, **kwargs) -> None:
    """`print` on rank 0 only: one line per job, not one per rank."""
    if is_main_process():
        print(*args, **kwargs)


def pick_device(local_rank: int, want: str = "auto") -> torch.device:
    """CUDA when it exists (one GPU per local rank), else CPU. `want` is auto|cuda|cpu; cuda
    without a usable GPU is an error that says why torch sees none."""
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from dali_pixmix.cuda_stack import why_no_gpu

        raise ValueError(f"device cuda was asked for but torch sees no GPU: {why_no_gpu()}; to "
                         "run on the CPU anyway (far slower), pass --set dist.device=cpu "
                         "(training) or --device cpu (evaluation)")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto", timeout_minutes: int = 30) -> DistInfo:
    """Initialise the process group when launched by torchrun (NCCL on GPU, gloo on CPU)."""
    rank, local_rank, world_size = read_env()
    dev = pick_device(local_rank, device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={world_size} but MASTER_ADDR is unset: launch with torchrun "
                "(it sets the rendezvous variables) or set MASTER_ADDR/MASTER_PORT yourself")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's `obj`, in rank order (a one-element list without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
