"""Training augmentations, chosen by name, seeded per (seed, epoch, index).

Each sample draws from its own numpy Generator built from (seed, epoch, index), so the result does
not depend on which DataLoader worker decodes it, on the number of workers, or on the order of
batches: rerunning an epoch reproduces it exactly, and worker processes need no seeding of their own.

- "none": the preprocessing's eval recipe only.
- "shift": the eval recipe, then a random translation of up to size/16 pixels (at least 1) in each
  direction, the uncovered border filled with the image's minimum (its background level after
  normalisation); the same shifts and fill as `pipeline.training.shift_images`, drawn per image.
- "standard": torchvision's training recipe without torchvision: RandomResizedCrop (area 8-100 %,
  aspect 3/4-4/3, ten tries then a center crop) to the output size, then a horizontal flip with p 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.preprocess import Preprocess, resample_filter

AUGMENTS = ("none", "shift", "standard")
_STREAM = 0x6175  # separates this random stream from other users of the same seed


@dataclass(frozen=True)
class Augment:
    """A named training augmentation with its seed.

    Attributes:
        name: "none", "shift" or "standard".
        seed: base seed; each sample's randomness comes from (seed, epoch, index).
        scale: RandomResizedCrop area range ("standard").
        ratio: RandomResizedCrop aspect-ratio range ("standard").
    """

    name: str = "none"
    seed: int = 0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        if self.name not in AUGMENTS:
            raise UserError(f"augment = {self.name!r}: allowed: {', '.join(AUGMENTS)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise UserError(f"augment seed = {self.seed!r}: must be an integer")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise UserError(f"augment scale = {self.scale!r}: need 0 < min <= max <= 1")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise UserError(f"augment ratio = {self.ratio!r}: need 0 < min <= max")

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        """The Generator for one sample in one epoch (independent of worker and batch order)."""
        return np.random.default_rng([self.seed % 2**63, _STREAM, int(epoch), int(index)])

    def image(self, img: Any, pre: Preprocess, epoch: int, index: int) -> np.ndarray:
        """Augment a decoded PIL image and turn it into the model's float32 (C, H, W) input.

        Args:
            img: the decoded image.
            pre: the preprocessing (mode, sizes, normalisation).
            epoch: training epoch (0-based).
            index: the sample's index in its dataset.
        Returns:
            The normalised array.
        """
        if self.name == "standard":
            rng = self.rng(epoch, index)
            img = img if img.mode == pre.mode else img.convert(pre.mode)
            w, h = img.size
            out = (pre.crop, pre.crop) if pre.crop else (pre.resize, pre.resize) if pre.resize else (w, h)
            left, top, cw, ch = random_resized_crop_box(w, h, rng, self.scale, self.ratio)
            # Crop, then resize: the order torchvision uses, so border pixels are treated the same.
            img = img.crop((left, top, left + cw, top + ch)).resize(out, resample_filter(pre.interpolation))
            if rng.random() < 0.5:
                img = img.transpose(_flip_lr())
            return pre.to_array(img)
        x = pre(img)
        return self.array(x, epoch, index) if self.name == "shift" else x

    def array(self, x: np.ndarray, epoch: int, index: int) -> np.ndarray:
        """Augment an already preprocessed float32 (C, H, W) array (npz data, or after the eval recipe).

        Args:
            x: the array.
            epoch: training epoch (0-based).
            index: the sample's index in its dataset.
        Returns:
            A new float32 (C, H, W) array of the same shape (`x` itself for "none").
        """
        if self.name == "none":
            return x
        rng = self.rng(epoch, index)
        if self.name == "shift":
            shifts = shift_set(x.shape[-1])
            return shift_array(x, *shifts[int(rng.integers(len(shifts)))])
        c, h, w = x.shape
        left, top, cw, ch = random_resized_crop_box(w, h, rng, self.scale, self.ratio)
        out = np.stack([_resize_float(x[k, top:top + ch, left:left + cw], (w, h)) for k in range(c)])
        if rng.random() < 0.5:
            out = out[:, :, ::-1]
        return np.ascontiguousarray(out, dtype=np.float32)


def make_augment(name: str | None, seed: int = 0) -> Augment | None:
    """The augmentation called `name` ("none", "shift", "standard"), or None for "none"/None.

    Raises:
        UserError: an unknown name, listing the allowed ones.
    """
    if name is None or name == "none":
        return None
    return Augment(name, seed)


def shift_set(size: int) -> list[tuple[int, int]]:
    """Every (dy, dx) shift of up to size/16 pixels (at least 1) in each direction, (0, 0) included."""
    p = max(1, round(size / 16))
    return [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1)]


def shift_array(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift a (C, H, W) array by (dy, dx) pixels, filling the uncovered border with its minimum."""
    if dy == 0 and dx == 0:
        return x
    out = np.roll(x, (dy, dx), axis=(1, 2))
    bg = x.min()  # the background level after normalisation, over all channels (as shift_images)
    if dy > 0:
        out[:, :dy] = bg
    elif dy < 0:
        out[:, dy:] = bg
    if dx > 0:
        out[:, :, :dx] = bg
    elif dx < 0:
        out[:, :, dx:] = bg
    return out


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """Pick a RandomResizedCrop region: (left, top, width, height), inside the image.

    Up to ten tries of a random area fraction in `scale` and a log-uniform aspect ratio in `ratio`;
    when none fits, the largest center crop whose aspect ratio lies within `ratio`.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= width and 0 < ch <= height:
            top = int(rng.integers(0, height - ch + 1))
            left = int(rng.integers(0, width - cw + 1))
            return left, top, cw, ch
    in_ratio = width / height
    if in_ratio < ratio[0]:
        cw, ch = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        cw, ch = int(round(height * ratio[1])), height
    else:
        cw, ch = width, height
    return (width - cw) // 2, (height - ch) // 2, cw, ch


def _resize_float(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    # Pillow's 32-bit float mode keeps normalised values (negative too) through bilinear resampling.
    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
    resample = getattr(Image, "Resampling", Image).BILINEAR
    return np.asarray(img.resize(size, resample), dtype=np.float32)


def _flip_lr() -> Any:
    from PIL import Image

    return getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT
