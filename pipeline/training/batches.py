"""Batches for the training loop: in-memory arrays as a dataset, loaders, batch unpacking, augmentation.

A batch is `(x, y, has_label)` or `(x, y)`; a label of -1 (or has_label False) marks an unlabeled image,
which learns from the teacher alone.
"""

from __future__ import annotations

from typing import Any


class ArrayDataset:
    """In-memory images and labels (numpy or torch) as a map-style dataset that also serves whole batches.

    `dataset[i]` gives one `(x, y, has_label)`; `dataset[[i, j, ...]]` gives a stacked batch in one
    indexing operation, which `make_loader` uses (per-sample collation costs more than a small model's step).
    """

    def __init__(self, x: Any, y: Any = None, has_label: Any = None):
        """Args:
            x: images (N, C, H, W), float32 numpy array or tensor.
            y: labels (N,) integer, or None when there are none (all unlabeled).
            has_label: (N,) bool: which labels may be used; None = all of them (labels < 0 never count).
        Raises:
            ValueError: lengths differ.
        """
        import torch

        self.x = torch.as_tensor(x)
        n = len(self.x)
        self.y = torch.full((n,), -1, dtype=torch.int64) if y is None else torch.as_tensor(y).long()
        has = torch.ones(n, dtype=torch.bool) if has_label is None else torch.as_tensor(has_label).bool()
        for name, v in (("y", self.y), ("has_label", has)):
            if len(v) != n:
                raise ValueError(f"ArrayDataset: {name} has {len(v)} entries, x has {n} images; they must match")
        self.has_label = has & (self.y >= 0)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: Any) -> tuple[Any, Any, Any]:
        import torch

        if not isinstance(index, int):
            index = torch.as_tensor(index, dtype=torch.int64)
        return self.x[index], self.y[index], self.has_label[index]


def make_loader(dataset: Any, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                num_workers: int = 0, pin_memory: bool = False) -> Any:
    """A DataLoader over `dataset` with `make_sampler`'s rank-sharded, (seed, epoch)-determined order.

    Args:
        dataset: an `ArrayDataset` (batches are fetched with one indexing operation) or any map-style dataset.
        batch_size: images per batch on this rank (the global batch is batch_size x world size).
        shuffle: reshuffle every epoch.
        seed: the shuffle seed.
        drop_last: drop a last, smaller batch.
        num_workers: DataLoader worker processes (0 loads in the training process).
        pin_memory: page-locked host memory, for asynchronous copies to a GPU.
    Returns:
        A `torch.utils.data.DataLoader`.
    Raises:
        ValueError: batch_size < 1.
    """
    from torch.utils.data import BatchSampler, DataLoader

    from pipeline.training.dist import make_sampler

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size {batch_size!r}: must be an integer >= 1")
    sampler = make_sampler(dataset, shuffle=shuffle, seed=seed)
    if isinstance(dataset, ArrayDataset):
        batches = BatchSampler(sampler, batch_size, drop_last)
        return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=num_workers, pin_memory=pin_memory)


def unpack_batch(batch: Any) -> tuple[Any, Any, Any]:
    """(x, y, has_label) from a `(x, y, has_label)` or `(x, y)` batch (or a bare x: all unlabeled).

    Raises:
        ValueError: the batch has another shape.
    """
    import torch

    if isinstance(batch, torch.Tensor):
        x, y, has = batch, None, None
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        x, y = batch[0], batch[1]
        has = batch[2] if len(batch) == 3 else None
    else:
        kind = f"{type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise ValueError(f"a training batch must be (x, y, has_label), (x, y) or x; got a {kind}")
    n = len(x)
    y = torch.full((n,), -1, dtype=torch.int64) if y is None else torch.as_tensor(y).long()
    labeled = y >= 0
    if has is not None:
        labeled = labeled & torch.as_tensor(has).bool()
    return x, y, labeled


class ShiftAugment:
    """The digits demo's augmentation: one random shift from `shift_set(size)` for the whole batch.

    Draws from torch's global RNG, so seeding and the resume state cover it; runs on the batch's device.
    """

    def __init__(self, size: int):
        """Args:
            size: image side in pixels (the shifts go up to size/16 pixels, at least 1).
        """
        self.shifts = shift_set(size)

    def __call__(self, x: Any) -> Any:
        import torch

        k = int(torch.randint(len(self.shifts), (1,)).item())
        return shift_images(x, *self.shifts[k])


def shift_set(size: int) -> list[tuple[int, int]]:
    """Every (dy, dx) shift of up to size/16 pixels (at least 1) in each direction, (0, 0) included."""
    p = max(1, round(size / 16))
    return [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1)]


def shift_images(xb: Any, dy: int, dx: int) -> Any:
    """Shift a batch (torch tensor, NCHW) by (dy, dx) pixels, filling with each image's background level."""
    import torch

    if dy == 0 and dx == 0:
        return xb
    bg = xb.amin(dim=(1, 2, 3), keepdim=True)  # background level after normalisation
    out = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
    if dy > 0:
        out[:, :, :dy] = bg
    elif dy < 0:
        out[:, :, dy:] = bg
    if dx > 0:
        out[:, :, :, :dx] = bg
    elif dx < 0:
        out[:, :, :, dx:] = bg
    return out


def loader_length(loader: Any, steps_per_epoch: int | None) -> int:
    """Optimiser steps per epoch: `steps_per_epoch` when given, else `len(loader)`.

    Raises:
        ValueError: neither is known, or the value is < 1.
    """
    if steps_per_epoch is None:
        try:
            steps_per_epoch = len(loader)
        except TypeError:
            raise ValueError(f"the train loader ({type(loader).__name__}) has no len(): pass steps_per_epoch= "
                             "(the one-cycle schedule needs the number of steps)") from None
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch {steps_per_epoch!r}: must be an integer >= 1 (is the loader empty?)")
    return steps_per_epoch
