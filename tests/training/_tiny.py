"""Tiny data and models shared by the training tests and the DDP worker processes (importable by name)."""

from __future__ import annotations

import numpy as np
import torch.nn as nn


def bars(n: int, seed: int, classes: int = 3, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Class k carries a bright bar at row 2k (channel 0) and column 2k (channel 1), plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int64)
    x = rng.normal(0, 0.3, (n, 2, size, size)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, 0, 2 * k, :] += 1.5
        x[i, 1, :, 2 * k] += 1.5
    return x, y


def conv_net(width: int = 8, classes: int = 3, norm: str = "bn") -> nn.Module:
    """conv-norm-relu, conv-relu, 2x2 pool, linear: position-aware, so the bars task is learnable."""
    norms = {"bn": lambda c: nn.BatchNorm2d(c), "gn": lambda c: nn.GroupNorm(2, c), "none": lambda c: nn.Identity()}
    return nn.Sequential(
        nn.Conv2d(2, width, 3, padding=1), norms[norm](width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, classes),
    )
