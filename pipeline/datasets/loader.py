"""DataLoaders that are seeded, advance the augmentation epoch themselves, and use worker processes well."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

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
        if hasattr(self.sampler, "set_epoch"):  # DistributedSampler reshuffles per epoch
            self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return super().__iter__()


class SeededShuffleSampler(Sampler):
    """A fresh permutation per epoch drawn from (seed, epoch) alone.

    torch's own shuffling advances one generator that worker start-up also draws from, so the order
    of a later epoch would depend on the worker count and could not be reproduced when resuming.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of `epoch` for the next pass."""
        self.epoch = int(epoch)

    def __iter__(self):
        rng = np.random.default_rng([self.seed % 2**63, 0x5348, self.epoch])
        return iter(rng.permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive numpy's and random's from it so
    # code using the global generators (a user's transform) is reproducible too.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def default_workers() -> int:
    """min(4, CPU count): enough to keep up with JPEG decoding without crowding small machines."""
    return min(4, os.cpu_count() or 1)


def make_loader(dataset: Any, batch_size: int, shuffle: bool, seed: int, workers: int | None = None,
                drop_last: bool = False, sampler: Any = None, pin_memory: bool | None = None) -> EpochDataLoader:
    """Build a seeded DataLoader over a dataset from this package (or any map-style dataset).

    Args:
        batch_size: images per batch, >= 1.
        shuffle: a new order every epoch, fixed by (seed, epoch) whatever the workers; not with `sampler`.
        seed: seeds the shuffling and the workers' base seeds.
        workers: worker processes decoding images; default min(4, CPUs); 0 decodes in this process.
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
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"workers = {workers!r}: must be an integer >= 0 (0 = load in the main process)")
    if shuffle and sampler is not None:
        raise UserError("make_loader: give shuffle=True or a sampler, not both (the sampler decides the order)")
    if shuffle:
        sampler = SeededShuffleSampler(len(dataset), seed)
    generator = torch.Generator().manual_seed(seed % 2**63)  # seeds the workers' torch RNGs
    pin = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
    extra = {"persistent_workers": True, "worker_init_fn": _seed_worker, "prefetch_factor": 2} if workers else {}
    return EpochDataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                           drop_last=drop_last, pin_memory=pin, generator=generator, **extra)
