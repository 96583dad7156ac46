"""Batches for the training loop: batch unpacking, the batch-level shift augmentation, loader lengths.

Datasets and loaders live in `pipeline.datasets` (`ArrayDataset`, `make_loader`, `shift_set`).

A batch is `(x, y, has_label)` or `(x, y)`; a label of -1 (or has_label False) marks an unlabeled image,
which learns from the teacher alone.
"""

from __future__ import annotations

from typing import Any


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
        from pipeline.datasets.augment import shift_set

        self.shifts = shift_set(size)

    def __call__(self, x: Any) -> Any:
        import torch

        k = int(torch.randint(len(self.shifts), (1,)).item())
        return shift_images(x, *self.shifts[k])


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
