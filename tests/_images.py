"""A tiny generated image project for tests: shapes in 32 px RGB PNGs, 3 classes, folders, a CSV, unlabeled."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("circle", "cross", "square")


def _image(kind: str, rng: np.random.Generator, size: int = 32):
    """A 32 px RGB picture of one shape on a noisy background (a class a tiny model can tell apart)."""
    from PIL import Image, ImageDraw

    bg = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    o, c = int(rng.integers(4, 10)), tuple(int(v) for v in rng.integers(150, 256, 3))
    if kind == "circle":
        d.ellipse([o, o, size - o, size - o], outline=c, width=3)
    elif kind == "cross":
        d.line([o, o, size - o, size - o], fill=c, width=3)
        d.line([o, size - o, size - o, o], fill=c, width=3)
    else:
        d.rectangle([o, o, size - o, size - o], outline=c, width=3)
    return img


def make_image_project(root: Path, per_class: int = 20, ext: str = "png") -> Path:
    """train/<class>/, val/<class>/, a test.csv list and a flat unlabeled/ folder; returns the root."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 5), ("test_images", 5)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _image(c, rng).save(root / split / c / f"{i:03d}.{ext}")
    rows = ["path,label"] + [f"test_images/{c}/{i:03d}.{ext},{c}" for c in CLASSES for i in range(5)]
    (root / "test.csv").write_text("\n".join(rows) + "\n")
    (root / "unlabeled").mkdir(exist_ok=True)
    for i in range(10):
        _image(CLASSES[i % 3], rng).save(root / "unlabeled" / f"u{i:02d}.{ext}")
    return root
