"""Tiny models and data for the training-loop tests (CPU, one thread, a few hundred images)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# The DDP test's worker processes import `_tiny` and `_ddp_worker` by name (spawned children inherit sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny import bars, conv_net  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture()
def bars_data():
    """The `bars(n, seed)` generator."""
    return bars


@pytest.fixture()
def make_net():
    """The `conv_net(width, classes, norm)` factory."""
    return conv_net
