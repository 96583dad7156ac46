"""Fixtures for the any-task tests: the detector of `detector_fixture.py`, trained once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # `import detector_fixture` (tests run with --import-mode=importlib)


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory):
    """(model, weights path): the detector trained on 600 generated 48 px images, 8 epochs (about 10 s on
    one thread; mAP@0.5 0.976 on the 200 held-out images in trial runs)."""
    import torch
    from detector_fixture import make_images, train_detector

    model = train_detector(make_images(600, 1), epochs=8, seed=0)
    path = tmp_path_factory.mktemp("detector") / "detector.pt"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="session")
def held_out():
    """200 held-out images (seed 2, disjoint from training) with their boxes."""
    from detector_fixture import make_images

    return make_images(200, 2)
