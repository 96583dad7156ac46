"""DataLoaders that are seeded, advance the augmentation epoch themselves, and use worker processes well."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.datasets.base import set_epoch
from pipeline.errors import UserError


class EpochDataLoader(DataLoader):
    """A DataLoader that tells its dataset (and sampler) the epoch before each pass.

    The first iteration is epoch 0, the next 1, and so on; `set_epoch(e)` chooses the next one (to
    resume). Because datasets keep the epoch in shared memory, persistent workers see it too.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch `epoch`."""
        self.epoch = int(epoch)

    def __iter__(self):
        set_epoch(self.dataset, self.epoch)
        for sampler in (self.sampler, getattr(self.sampler, "sampler", None)):  # also inside a BatchSampler
            if hasattr(sampler, "set_epoch"):  # DistributedSampler: reshuffle per epoch
                sampler.set_epoch(self.epoch)
        self.epoch += 1
        return super().__iter__()


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive numpy's and random's from it so
    # code using the global generators (a user's transform) is reproducible too.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def default_workers() -> int:
    """min(4, CPU count): enough to keep up with JPEG decoding without crowding small machines."""
    return min(4, os.cpu_count() or 1)


def make_loader(dataset: Any, batch_size: int, shuffle: bool = True, seed: int = 0, workers: int | None = None,
                drop_last: bool = False, sampler: Any = None, pin_memory: bool | None = None) -> EpochDataLoader:
    """Build a seeded DataLoader over a dataset from this package (or any map-style dataset): the one loader
    edgepipe trains and evaluates with.

    A dataset with `batched = True` (`ArrayDataset`) is read a whole batch at a time (one indexing
    operation: per-sample collation costs more than a small model's step). Under torch.distributed (a
    process group is up) a shuffled loader shards the data by rank (see `_shuffle_sampler`).

    Args:
        dataset: a map-style dataset.
        batch_size: images per batch (per rank), >= 1.
        shuffle: a new order every epoch, fixed by (seed, epoch) whatever the workers; not with `sampler`.
        seed: seeds the shuffling and the workers' base seeds.
        workers: worker processes decoding images; default min(4, CPUs) (0 for in-memory `batched`
            datasets); 0 decodes in this process.
        drop_last: drop a last, smaller batch (useful for BatchNorm training).
        sampler: a custom sampler (e.g. weighted or distributed); excludes `shuffle`.
        pin_memory: page-locked batches for faster host-to-GPU copies; default: when CUDA is available.
    Returns:
        An `EpochDataLoader` yielding (x float32 (B, C, H, W), labels int64 (B,)).
    Raises:
        UserError: a batch size or worker count out of range, or both shuffle and sampler.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size = {batch_size!r}: must be an integer >= 1")
    batched = bool(getattr(dataset, "batched", False))
    if workers is None:
        workers = 0 if batched else default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"workers = {workers!r}: must be an integer >= 0 (0 = load in the main process)")
    if shuffle and sampler is not None:
        raise UserError("make_loader: give shuffle=True or a sampler, not both (the sampler decides the order)")
    if shuffle:
        sampler = _shuffle_sampler(dataset, seed, drop_last)
    generator = torch.Generator().manual_seed(seed % 2**63)  # seeds the workers' torch RNGs
    pin = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
    extra = {"persistent_workers": True, "worker_init_fn": _seed_worker, "prefetch_factor": 2} if workers else {}
    if batched:
        from torch.utils.data import BatchSampler, SequentialSampler

        batches = BatchSampler(sampler if sampler is not None else SequentialSampler(dataset), batch_size, drop_last)
        return EpochDataLoader(dataset, sampler=batches, batch_size=None, num_workers=workers, pin_memory=pin,
                               generator=generator, **extra)
    return EpochDataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                           drop_last=drop_last, pin_memory=pin, generator=generator, **extra)


def _shuffle_sampler(dataset: Any, seed: int, drop_last: bool) -> Any:
    """A new order every epoch, drawn from (seed, epoch) alone, sharded by rank under torch.distributed.

    A `DistributedSampler` (over one replica without a process group) draws each epoch's permutation from
    its own generator seeded with seed + epoch: the order does not depend on the worker count or on the
    global RNG (so resuming reproduces it), and N ranks together see what one process sees at the same
    global batch (the loader advances the epoch; `fit` sets it explicitly).
    """
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    up = dist.is_available() and dist.is_initialized()
    world, rank = (dist.get_world_size(), dist.get_rank()) if up else (1, 0)
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
