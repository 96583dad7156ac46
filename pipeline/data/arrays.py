"""The built-in `digits` data set (scikit-learn's bundled handwritten digits), in memory.

Digits split (fixed, documented): stratified by class with `split_seed` (default 0), 65 % train,
10 % val, 25 % test (1,797 images: 1,167 / 180 / 450). Images are scaled from 0..16 to 0..1,
upsampled from 8x8 to `image_size` (bilinear, align_corners=False), then normalised with
mean 0.5, std 0.5. The test split is held out: only final accuracies are measured on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DIGITS_MEAN, DIGITS_STD = 0.5, 0.5


@dataclass(frozen=True)
class DataSplits:
    """Arrays the stages train and evaluate on (x float32 NCHW, already normalised; y int64)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: list[float]
    std: list[float]
    description: str
    unlabeled_x: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self.train_x.shape[1:])

    def digest(self) -> str:
        """sha256 over every array, so a data change invalidates cached stages."""
        h = hashlib.sha256()
        for a in (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y, self.unlabeled_x):
            if a is not None:
                h.update(str(a.shape).encode() + str(a.dtype).encode())
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def load_digits(image_size: int = 16, split_seed: int = 0) -> DataSplits:
    """scikit-learn's bundled digits, split 65/10/25 (stratified) and upsampled to image_size."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=0.25, stratify=y, random_state=split_seed)
    train, val = train_test_split(rest, test_size=180, stratify=y[rest], random_state=split_seed)
    x = (_resize(x, image_size) - DIGITS_MEAN) / DIGITS_STD
    return DataSplits(
        x[train], y[train], x[val], y[val], x[test], y[test], 10, [DIGITS_MEAN], [DIGITS_STD],
        f"scikit-learn digits, 8x8 upsampled to {image_size}x{image_size}, split 65/10/25 (seed {split_seed})",
        extra={"resize": [image_size, image_size], "scale": 1 / 16},
    )


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[-1] == size:
        return x.astype(np.float32)
    import torch
    import torch.nn.functional as F

    t = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False)
    return t.numpy().astype(np.float32)
