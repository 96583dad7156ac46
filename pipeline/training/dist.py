"""torchrun / DistributedDataParallel support: process group from env, samplers, small collectives.

The caller (or `init_distributed_from_env`) initialises the process group; `fit` then sees
`torch.distributed.is_initialized()` and wraps the student in DDP. Without a process group every helper
here is a single-process no-op, so the same code runs under `python` and `torchrun`.
"""

from __future__ import annotations

import os
from typing import Any

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) without a process group."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def init_distributed_from_env(device: str = "auto", timeout_s: float = 600.0) -> tuple[int, int, int]:
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    NCCL when training on CUDA (and the local GPU is selected), gloo on CPU. Without WORLD_SIZE, or with
    WORLD_SIZE=1, nothing is initialised. Calling it when a group already exists returns that group's numbers.

    Args:
        device: the device string training will use ("auto", "cpu", "cuda", "cuda:N"): picks the backend.
        timeout_s: how long collectives wait for a missing rank before failing.
    Returns:
        (rank, world_size, local_rank).
    Raises:
        ValueError: an environment variable is missing or not an integer.
    """
    import datetime

    import torch
    import torch.distributed as dist

    from pipeline.training.device import resolve_device

    if is_distributed():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return 0, 1, 0
    missing = [v for v in ENV_VARS if v not in os.environ and v != "LOCAL_RANK"]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: start with torchrun, which sets "
                         f"all of {', '.join(ENV_VARS)}")
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)  # one GPU per process: NCCL needs the right current device
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return rank, world, local


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


def make_sampler(dataset: Any, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> Any:
    """A sampler whose order depends only on (seed, epoch): a `DistributedSampler` sharding by rank.

    Without a process group it is a DistributedSampler over 1 replica, so a 1-process run and an
    N-process run with the same global batch see the same images per optimiser step, and the order of
    an epoch does not depend on the global RNG (which makes resuming exact). `fit` calls `set_epoch`.

    Args:
        dataset: a map-style dataset (has `__len__`).
        shuffle: reshuffle every epoch.
        seed: the shuffle seed (the same on every rank).
        drop_last: drop the tail that does not divide by the world size (else it is padded by repeats).
    Returns:
        A `torch.utils.data.DistributedSampler`.
    """
    from torch.utils.data import DistributedSampler

    rank, world = rank_and_world()
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)


def set_epoch(loader: Any, epoch: int) -> None:
    """Call `set_epoch` on whichever sampler of `loader` has it (sampler, batch_sampler, or theirs)."""
    seen = set()
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        for s in (obj, getattr(obj, "sampler", None)):
            if s is not None and id(s) not in seen and callable(getattr(s, "set_epoch", None)):
                seen.add(id(s))
                s.set_epoch(epoch)


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: list[float], device: Any) -> list[float]:
    """Sum python numbers over ranks (one collective); unchanged in one process."""
    import torch
    import torch.distributed as dist

    if not is_distributed():
        return list(values)
    # NCCL reduces only CUDA tensors; gloo only CPU ones.
    where = device if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=where)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def broadcast_int(value: int, device: Any) -> int:
    """Rank 0's `value` on every rank."""
    import torch
    import torch.distributed as dist

    if not is_distributed():
        return value
    where = device if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.int64, device=where)
    dist.broadcast(t, 0)
    return int(t.item())


def sync_module(module: Any) -> None:
    """Copy rank 0's parameters into every rank (adapters live outside DDP)."""
    import torch.distributed as dist

    if is_distributed():
        for p in module.parameters():
            dist.broadcast(p.data, 0)


def average_grads(module: Any) -> None:
    """Average gradients over ranks for parameters DDP does not manage (the feature adapters)."""
    import torch.distributed as dist

    if not is_distributed():
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def convert_sync_batchnorm(model: Any) -> dict[str, type]:
    """Turn BatchNorm layers into SyncBatchNorm in place (CUDA only); returns what `revert_sync_batchnorm` needs."""
    import torch.nn as nn

    originals = {name: type(m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and not isinstance(m, nn.SyncBatchNorm) and name}
    for name in originals:
        parent, attr = _parent(model, name)
        setattr(parent, attr, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(parent, attr)))
    return originals


def revert_sync_batchnorm(model: Any, originals: dict[str, type]) -> None:
    """Back to the original BatchNorm classes (SyncBatchNorm refuses CPU tensors, even in eval mode)."""
    for name, cls in originals.items():
        parent, attr = _parent(model, name)
        sync = getattr(parent, attr)
        bn = cls(sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats)
        bn.load_state_dict(sync.state_dict())
        bn.train(sync.training)
        tensors = list(sync.state_dict().values())
        setattr(parent, attr, bn.to(tensors[0].device) if tensors else bn)


def _parent(model: Any, name: str) -> tuple[Any, str]:
    *path, attr = name.split(".")
    parent = model
    for p in path:
        parent = getattr(parent, p)
    return parent, attr
