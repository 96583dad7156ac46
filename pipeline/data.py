"""Data sets: the built-in `digits` (scikit-learn's bundled handwritten digits) and users' npz files.

Digits split (fixed, documented): stratified by class with `split_seed` (default 0), 65 % train,
10 % val, 25 % test (1,797 images: 1,167 / 180 / 450). Images are scaled from 0..16 to 0..1,
upsampled from 8x8 to `image_size` (bilinear, align_corners=False), then normalised with
mean 0.5, std 0.5. The test split is held out: only final accuracies are measured on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pipeline.errors import UserError

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
    unlabeled_x: Optional[np.ndarray] = None
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


def load_data(spec: Any, base: Path) -> DataSplits:
    """Load the data a config section describes.

    Args:
        spec: a `BuiltinData` or `NpzData` config section.
        base: the config file's folder (relative paths resolve against it).
    Returns:
        The splits.
    """
    if getattr(spec, "builtin", None) == "digits":
        return load_digits(spec.image_size, spec.split_seed)
    from pipeline.config import resolve

    train_x, train_y = _read_npz(resolve(base, spec.train), "data.train")
    val_x, val_y = _read_npz(resolve(base, spec.val), "data.val")
    if spec.test:
        test_x, test_y = _read_npz(resolve(base, spec.test), "data.test")
    else:
        test_x, test_y = val_x, val_y
    unl = _read_npz(resolve(base, spec.unlabeled), "data.unlabeled", need_y=False)[0] if spec.unlabeled else None
    shapes = {a.shape[1:] for a in (train_x, val_x, test_x) + ((unl,) if unl is not None else ())}
    if len(shapes) != 1:
        raise UserError(f"data: train/val/test/unlabeled images differ in shape: {sorted(shapes)}")
    ys = np.concatenate([train_y, val_y, test_y])
    if ys.min() < 0:
        raise UserError(f"data: labels must be >= 0, found {int(ys.min())}")
    num_classes = int(ys.max()) + 1
    mean, std = spec.mean, spec.std
    if mean is not None:
        c = train_x.shape[1]
        if len(mean) not in (1, c) or len(std) not in (1, c):
            raise UserError(f"data.mean/std: need 1 or {c} values (one per channel), got {len(mean)} and {len(std)}")
        m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        norm = lambda a: None if a is None else ((a - m) / s).astype(np.float32)  # noqa: E731
        train_x, val_x, test_x, unl = norm(train_x), norm(val_x), norm(test_x), norm(unl)
    return DataSplits(
        train_x, train_y, val_x, val_y, test_x, test_y, num_classes,
        list(mean or [0.0]), list(std or [1.0]), f"npz files ({spec.train}, {spec.val}, {spec.test or 'val as test'})",
        unlabeled_x=unl,
    )


def _read_npz(path: Path, field: str, need_y: bool = True) -> tuple[np.ndarray, Optional[np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise UserError(f"{field}: cannot read {path} as an npz file: {e}") from None
    if "x" not in arrays or (need_y and "y" not in arrays):
        wanted = "'x' and 'y'" if need_y else "'x'"
        raise UserError(f"{field}: {path} must contain arrays {wanted}, found {sorted(arrays)}")
    x = arrays["x"]
    if x.ndim != 4:
        raise UserError(f"{field}: {path}: x must be NCHW (4 dimensions), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"{field}: {path}: x must be float32, got {x.dtype}")
    y = None
    if need_y:
        y = arrays["y"]
        if y.ndim != 1 or len(y) != len(x):
            raise UserError(f"{field}: {path}: y must be 1-D with one label per image, got shape {y.shape} for {len(x)} images")
        if not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{field}: {path}: y must be int64 class indices, got {y.dtype}")
        y = y.astype(np.int64)
    return x.astype(np.float32), y


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
