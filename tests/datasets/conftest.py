"""Tiny image folders, lists and npz files written into tmp_path with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, size=(40, 30), seed=0, mode="RGB", fmt=None) -> Path:
    """A random image of `size` (width, height) saved at `path` (format from the extension)."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, fmt)
    return path


def truncated_jpeg(path: Path, seed=0) -> Path:
    """A JPEG cut to half its bytes: its header reads, its decode fails."""
    write_image(path, (64, 48), seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture()
def make_image():
    """write_image(path, size=(w, h), seed=0, mode="RGB", fmt=None) -> path."""
    return write_image


@pytest.fixture()
def make_truncated_jpeg():
    """truncated_jpeg(path, seed=0) -> path: a JPEG whose header reads but whose decode fails."""
    return truncated_jpeg


@pytest.fixture()
def image_tree(tmp_path: Path) -> Path:
    """root/{ant,bee,cat}/ with PNG and JPEG files of several sizes, plus files that must be ignored."""
    root = tmp_path / "train"
    seed = 0
    for cls, n in (("bee", 3), ("ant", 2), ("cat", 4)):
        for i in range(n):
            ext = ".png" if i % 2 == 0 else ".JPG"
            write_image(root / cls / f"img{i}{ext}", (40 + 3 * i, 30 + 2 * i), seed)
            seed += 1
    (root / "cat" / "notes.txt").write_text("not an image extension: ignored")
    (root / "cat" / "._img0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # hidden: ignored
    (root / ".ipynb_checkpoints").mkdir()  # hidden folder: not a class
    write_image(root / "bee" / "sub" / "deep.webp", (33, 33), 99)  # nested files belong to the class
    return root
