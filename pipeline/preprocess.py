"""How an image file becomes a model input: decode, resize, center-crop, scale, normalise.

Standalone (numpy and Pillow only) because it ships in deploy bundles, where the device runner
turns raw image files into inputs exactly as training did. The eval recipe matches torchvision's
`Resize(resize) -> CenterCrop(crop) -> ToTensor() -> Normalize(mean, std)` on PIL images: same
shorter-side rule, same crop offsets, same Pillow resampling, so a teacher trained with torchvision
sees the same numbers here. EXIF orientation is not applied, as in torchvision's loader.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence, Tuple

import numpy as np

try:  # inside edgepipe a bad setting is a UserError (exit code 2); in a deploy bundle there is no pipeline
    from pipeline.errors import UserError as _UserError
except ImportError:  # pragma: no cover - only without the pipeline package

    class _UserError(Exception):  # type: ignore[no-redef]
        """Stand-in outside edgepipe."""


class PreprocessError(ValueError, _UserError):
    """A preprocessing setting out of range, naming the field and what is allowed (always a ValueError)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = {"RGB": 3, "L": 1}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


class ImageError(Exception):
    """An image file that is missing, truncated or not an image; `.path` names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def _pil() -> Any:
    from PIL import Image  # imported on use so `import pipeline.preprocess` works without Pillow

    return Image


def resample_filter(name: str) -> Any:
    """Pillow's resampling filter for "bilinear", "bicubic" or "nearest"."""
    image = _pil()
    enum = getattr(image, "Resampling", image)  # Pillow >= 9.1 has the enum; older ones the constants
    return getattr(enum, name.upper())


def load_image(path: str | os.PathLike, mode: str = "RGB") -> Any:
    """Decode an image file fully and convert it to `mode`.

    Args:
        path: the image file.
        mode: "RGB" or "L" (8-bit grayscale).
    Returns:
        A PIL image in `mode`, decoded (the file is closed).
    Raises:
        ImageError: the file is missing, unreadable, truncated or not an image.
    """
    if mode not in MODES:
        raise PreprocessError(f"image mode = {mode!r}: allowed: {', '.join(MODES)}")
    image = _pil()
    try:
        with image.open(path) as im:
            im.load()  # force the full decode here so truncation is caught now, naming the file
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")  # Pillow warns when converting such palettes directly
            return im.convert(mode)
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except image.UnidentifiedImageError:
        raise ImageError(path, "not an image file Pillow can identify") from None
    except (IsADirectoryError, PermissionError) as e:
        raise ImageError(path, f"cannot open it ({type(e).__name__})") from None
    except (OSError, SyntaxError, ValueError, image.DecompressionBombError) as e:
        # Truncated data raises OSError, some corrupt headers SyntaxError or ValueError.
        raise ImageError(path, f"corrupt or truncated ({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class Preprocess:
    """The deterministic part of turning a PIL image into a float32 CHW array.

    Attributes:
        resize: resize so the shorter side has this many pixels (aspect kept); None keeps the size.
        crop: center-crop to crop x crop after resizing; None keeps the whole image.
        mode: "RGB" (3 channels) or "L" (1 channel).
        mean: per-channel mean subtracted after scaling pixels to 0..1 (one value per channel).
        std: per-channel divisor after subtracting the mean (one value > 0 per channel).
        interpolation: "bilinear", "bicubic" or "nearest" (Pillow's, antialiased when shrinking).
    """

    resize: Optional[int] = None
    crop: Optional[int] = None
    mode: str = "RGB"
    mean: Tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: Tuple[float, ...] = field(default=IMAGENET_STD)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise PreprocessError(f"preprocess.{name} = {v!r}: must be an integer >= 1 or null")
        if self.mode not in MODES:
            raise PreprocessError(f"preprocess.mode = {self.mode!r}: allowed: {', '.join(MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise PreprocessError(
                f"preprocess.interpolation = {self.interpolation!r}: allowed: {', '.join(INTERPOLATIONS)}")
        c = MODES[self.mode]
        for name in ("mean", "std"):
            v = getattr(self, name)
            try:
                values = tuple(float(x) for x in v)
            except (TypeError, ValueError):
                raise PreprocessError(f"preprocess.{name} = {v!r}: must be a list of {c} numbers") from None
            if len(values) != c or not all(math.isfinite(x) for x in values):
                raise PreprocessError(f"preprocess.{name} = {list(values)}: need {c} finite value(s), "
                                   f"one per channel of mode {self.mode}")
            object.__setattr__(self, name, values)  # frozen: normalise lists to tuples once
        if any(s <= 0 for s in self.std):
            raise PreprocessError(f"preprocess.std = {list(self.std)}: every value must be > 0")

    @property
    def channels(self) -> int:
        """Channels of the output array (3 for RGB, 1 for L)."""
        return MODES[self.mode]

    @property
    def output_size(self) -> Optional[int]:
        """Side of the square output when `crop` is set, else None (the size follows the image)."""
        return self.crop

    def eval_transform(self, img: Any) -> Any:
        """The geometric eval steps on a PIL image: mode, shorter-side resize, center crop.

        Args:
            img: a PIL image.
        Returns:
            A PIL image in `mode`, resized and cropped.
        """
        img = img if img.mode == self.mode else img.convert(self.mode)
        if self.resize is not None:
            img = resize_shorter(img, self.resize, self.interpolation)
        if self.crop is not None:
            img = center_crop(img, self.crop)
        return img

    def to_array(self, img: Any) -> np.ndarray:
        """Scale a PIL image to 0..1 and normalise: float32 (C, H, W), no geometric change.

        Args:
            img: a PIL image (converted to `mode` if it is not already).
        Returns:
            The normalised array.
        """
        img = img if img.mode == self.mode else img.convert(self.mode)
        a = np.asarray(img, dtype=np.uint8)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        x = a.astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def __call__(self, img: Any) -> np.ndarray:
        """The full eval recipe: `to_array(eval_transform(img))`, float32 (C, H, W)."""
        return self.to_array(self.eval_transform(img))

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Decode an image file and apply the eval recipe (raises `ImageError` naming the file)."""
        return self(load_image(path, self.mode))

    def to_dict(self) -> dict:
        """Plain JSON-ready form for the manifest and deploy bundles."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        """Inverse of `to_dict`; unknown keys are errors that list the allowed ones."""
        if not isinstance(d, dict):
            raise PreprocessError(f"preprocess must be a mapping, got {type(d).__name__}")
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise PreprocessError(f"preprocess: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
        return cls(**d)


def imagenet(size: int = 224, resize: Optional[int] = None) -> Preprocess:
    """torchvision's ImageNet eval recipe: resize the shorter side to 256/224 of `size`, center-crop `size`.

    Args:
        size: the crop (model input) side, 224 for the standard checkpoints.
        resize: the shorter side before cropping; default int(size * 256 / 224), i.e. 256 for 224.
    Returns:
        A `Preprocess` in RGB with the ImageNet mean and std, bilinear.
    """
    return Preprocess(resize=resize or int(size * 256 / 224), crop=size, mode="RGB",
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear")


def resize_shorter(img: Any, size: int, interpolation: str = "bilinear") -> Any:
    """Resize a PIL image so its shorter side is `size`, the longer side truncated as torchvision does."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample_filter(interpolation))


def center_crop(img: Any, size: int) -> Any:
    """Crop the central size x size region (zero-padded when the image is smaller, as torchvision does)."""
    w, h = img.size
    if w < size or h < size:
        canvas = _pil().new(img.mode, (max(w, size), max(h, size)))  # black, like torchvision's pad
        canvas.paste(img, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        img, (w, h) = canvas, canvas.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def normalise_list(values: Sequence[float], channels: int, what: str) -> Tuple[float, ...]:
    """One value per channel from a list of 1 (broadcast) or `channels` numbers, for config layers."""
    vals = tuple(float(v) for v in values)
    if len(vals) == 1:
        return vals * channels
    if len(vals) != channels:
        raise PreprocessError(f"{what} = {list(vals)}: need 1 or {channels} values (one per channel)")
    return vals
