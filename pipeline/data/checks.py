"""Content checks for image data: bad data fails before training, in one line naming the split and file.

Bad data used to surface minutes into training as a traceback (`No data is collected`, the
quantizer's `scale issue`). These checks work on statistics accumulated batch by batch (`ImageStats.add`),
so data streamed from disk is checked in bounded memory: O(channels + classes), plus one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import UserError

# Normalised pixels beyond this are a scale mismatch (0..1 normalisation gives about -3..3).
MAX_NORMALISED = 100.0
# A channel whose whole range is below this after normalisation (and whose mean lies far outside that
# range) was given mean/std for another scale, e.g. 0..255 statistics for 0..1 pixels.
MIN_NORMALISED_SPREAD = 0.05
_SHOW = 5  # image indices quoted in a message


@dataclass
class ImageStats:
    """What the content checks need from one split, accumulated with `add(x, y)` one batch at a time.

    Attributes:
        name: the config field ("data.train") and `path` its file, both quoted in messages.
        num_classes: the config's `num_classes`, when given: labels must be below it.
    """

    name: str
    path: str
    num_classes: int | None = None
    count: int = 0
    image_shape: tuple | None = None
    nonfinite: int = 0
    nonfinite_first: int | None = None
    constant: int = 0
    constant_first: list = field(default_factory=list)  # up to _SHOW indices
    constant_value: float | None = None
    lo: np.ndarray | None = None  # per channel, over finite pixels
    hi: np.ndarray | None = None
    labeled: bool = False
    negative: int = 0
    negative_first: tuple | None = None  # (index, label)
    too_big: int = 0
    too_big_first: tuple | None = None
    class_counts: dict = field(default_factory=dict)

    def add(self, x: np.ndarray, y: np.ndarray | None = None) -> ImageStats:
        """Account for one batch: x (N, C, H, W) float, y (N,) integer labels or None."""
        n, offset = len(x), self.count
        self.image_shape = self.image_shape or tuple(x.shape[1:])
        self.count += n
        if n == 0:
            return self
        flat = x.reshape(n, -1)
        finite = np.isfinite(flat)
        row_ok = finite.all(axis=1)
        bad = np.flatnonzero(~row_ok)
        if len(bad):
            self.nonfinite += len(bad)
            if self.nonfinite_first is None:
                self.nonfinite_first = offset + int(bad[0])
        if flat.shape[1] > 1:
            const = np.flatnonzero(row_ok & (flat.max(axis=1) == flat.min(axis=1)))
            if len(const):
                if self.constant_value is None:
                    self.constant_value = float(flat[const[0], 0])
                self.constant += len(const)
                self.constant_first += [offset + int(i) for i in const[: _SHOW - len(self.constant_first)]]
        if len(bad):
            lo = np.where(finite, flat, np.inf).reshape(x.shape).min(axis=(0, 2, 3))
            hi = np.where(finite, flat, -np.inf).reshape(x.shape).max(axis=(0, 2, 3))
        else:
            lo, hi = x.min(axis=(0, 2, 3)), x.max(axis=(0, 2, 3))
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
        if y is not None:
            self._add_labels(np.asarray(y), offset)
        return self

    def _add_labels(self, y: np.ndarray, offset: int) -> None:
        self.labeled = True
        neg = np.flatnonzero(y < 0)
        if len(neg):
            self.negative += len(neg)
            self.negative_first = self.negative_first or (offset + int(neg[0]), int(y[neg[0]]))
        ok = y >= 0
        if self.num_classes is not None:
            big = np.flatnonzero(y >= self.num_classes)
            if len(big):
                self.too_big += len(big)
                self.too_big_first = self.too_big_first or (offset + int(big[0]), int(y[big[0]]))
            ok &= y < self.num_classes
        classes, counts = np.unique(y[ok], return_counts=True)
        for k, c in zip(classes.tolist(), counts.tolist(), strict=True):
            self.class_counts[k] = self.class_counts.get(k, 0) + c

    def check(self, mean: list | None = None, std: list | None = None, final: bool = True) -> None:
        """Raise a one-line UserError for the first problem found.

        Args:
            mean, std: the normalisation that will be applied to x (None: none).
            final: all batches were added. With False (checking a stream as it goes), only the checks
                that more data cannot undo run: non-finite and constant images, labels, overflowing range.
        """
        where = f"{self.name}: {self.path}"
        if final and self.count == 0:
            shape = f"(N, {', '.join(map(str, self.image_shape))})" if self.image_shape else "empty"
            raise UserError(f"{where}: no images (x has shape {shape}): every split needs at least one image")
        if self.nonfinite:
            raise UserError(f"{where}: {self.nonfinite} of {self.count} images contain NaN or Inf "
                            f"(first: image {self.nonfinite_first}): repair or remove them")
        if self.constant:
            more = ", ..." if self.constant > len(self.constant_first) else ""
            which = ", ".join(map(str, self.constant_first)) + more
            raise UserError(f"{where}: {self.constant} of {self.count} images are constant, every pixel equal "
                            f"(images {which}; image {self.constant_first[0]} is all {self.constant_value:.4g}): "
                            "blank or corrupt images, remove them")
        if self.negative:
            i, v = self.negative_first
            raise UserError(f"{where}: {_count(self.negative, 'label')} negative (first: y[{i}] = {v}): "
                            "labels are class indices 0, 1, ...")
        if self.too_big:
            i, v = self.too_big_first
            raise UserError(f"{where}: {_count(self.too_big, 'label')} >= num_classes = {self.num_classes} (first: "
                            f"y[{i}] = {v}): allowed 0..{self.num_classes - 1}; raise num_classes or fix the labels")
        self._check_range(where, mean, std, final)

    def _check_range(self, where: str, mean: list | None, std: list | None, final: bool) -> None:
        if self.lo is None or not np.isfinite(self.lo).all():
            return
        lo, hi = float(self.lo.min()), float(self.hi.max())
        c = len(self.lo)
        m = np.broadcast_to(np.asarray(mean if mean is not None else [0.0], np.float64), (c,))
        s = np.broadcast_to(np.asarray(std if std is not None else [1.0], np.float64), (c,))
        reach = float(np.max(np.maximum(np.abs(self.lo - m), np.abs(self.hi - m)) / s))
        pixels = f"pixels range {lo:.4g}..{hi:.4g}"
        byte_range = 1.5 < hi <= 255.5 and lo >= -0.5  # looks like raw 0..255 pixels
        if reach > MAX_NORMALISED:
            if mean is None:
                mid, half = (127.5, 127.5) if byte_range else ((hi + lo) / 2, (hi - lo) / 2)
                raise UserError(f"{where}: {pixels} and data.mean/std are not set: normalise them, e.g. "
                                f"data.mean: {_fmt([mid])}, data.std: {_fmt([half])}, or scale x to 0..1")
            if byte_range and max(map(abs, mean)) <= 1 and max(std) <= 1:
                raise UserError(f"{where}: {pixels} but data.mean {_fmt(mean)} / std {_fmt(std)} are for 0..1 images: "
                                f"divide x by 255, or set data.mean: {_fmt([v * 255 for v in mean])} and "
                                f"data.std: {_fmt([v * 255 for v in std])}")
            raise UserError(f"{where}: {pixels}; normalised with data.mean {_fmt(mean)} / std {_fmt(std)} they reach "
                            f"{reach:.3g} (expected within +-{MAX_NORMALISED:g}): put mean/std on the scale of x")
        if not final or mean is None:
            return
        width = self.hi - self.lo
        # a std far wider than the pixels' range, with the mean far outside it: mean/std of another scale
        off = np.abs(m - (self.hi + self.lo) / 2) > 10 * width
        narrow = (width > 0) & (width / s < MIN_NORMALISED_SPREAD) & off
        if narrow.any():
            ch = int(np.flatnonzero(narrow)[0])
            if hi <= 1.5 and lo >= -1.5 and max(map(abs, mean)) > 2:
                raise UserError(f"{where}: {pixels} but data.mean {_fmt(mean)} / std {_fmt(std)} are for 0..255 "
                                f"images: set data.mean: {_fmt([v / 255 for v in mean])} and data.std: "
                                f"{_fmt([v / 255 for v in std])}, or give x in 0..255")
            raise UserError(f"{where}: channel {ch} spans {float(self.lo[ch]):g}..{float(self.hi[ch]):g}, only "
                            f"{float(width[ch] / s[ch]):.2g} after dividing by data.std {_fmt(std)}: "
                            "put mean/std on the scale of x")


def scan_images(stats: ImageStats, x: np.ndarray, y: np.ndarray | None = None, batch: int = 4096) -> ImageStats:
    """Add arrays to `stats` in batches of `batch` images (bounded temporary memory)."""
    if len(x) == 0:
        return stats.add(x, y)
    for i in range(0, len(x), batch):
        stats.add(x[i:i + batch], None if y is None else y[i:i + batch])
    return stats


def check_class_coverage(train: ImageStats, others: list) -> None:
    """Every class labelled in val/test must have training images: a model cannot learn an unseen class."""
    seen = set(train.class_counts)
    for st in others:
        missing = sorted(set(st.class_counts) - seen)
        if missing:
            shown = ("class " if len(missing) == 1 else "classes ") + ", ".join(map(str, missing[:10]))
            shown += ", ..." if len(missing) > 10 else ""
            n = sum(st.class_counts[k] for k in missing)
            raise UserError(f"{train.name}: {train.path}: no images of {shown}, but {st.name} ({st.path}) has "
                            f"{n} image{'s' if n != 1 else ''} of it: a model cannot learn a class it never sees; "
                            f"add training images of it or remove them from {st.name}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun} is" if n == 1 else f"{n} {noun}s are"


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"
