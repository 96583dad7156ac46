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
from typing import Any

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
    unlabeled_x: np.ndarray | None = None
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


def load_data(spec: Any, base: Path, num_classes: int | None = None) -> DataSplits:
    """Load the data a config section describes, and check its content before any training.

    Args:
        spec: a `BuiltinData` or `NpzData` config section.
        base: the config file's folder (relative paths resolve against it).
        num_classes: the config's `num_classes`, when given: labels must be below it.
    Returns:
        The splits.
    Raises:
        UserError: an unreadable file, or content no model can train on (see `ImageStats`), in one
            line naming the split and the file.
    """
    if getattr(spec, "builtin", None) == "digits":
        return load_digits(spec.image_size, spec.split_seed)
    from pipeline.config import resolve

    paths = {k: resolve(base, getattr(spec, k)) for k in ("train", "val", "test", "unlabeled") if getattr(spec, k)}
    train_x, train_y = _read_npz(paths["train"], "data.train")
    val_x, val_y = _read_npz(paths["val"], "data.val")
    if spec.test:
        test_x, test_y = _read_npz(paths["test"], "data.test")
    else:
        test_x, test_y = val_x, val_y
    unl = _read_npz(paths["unlabeled"], "data.unlabeled", need_y=False)[0] if spec.unlabeled else None
    shapes = {a.shape[1:] for a in (train_x, val_x, test_x) + ((unl,) if unl is not None else ())}
    if len(shapes) != 1:
        raise UserError(f"data: train/val/test/unlabeled images differ in shape: {sorted(shapes)}")
    mean, std = spec.mean, spec.std
    if mean is not None:
        c = train_x.shape[1]
        if len(mean) not in (1, c) or len(std) not in (1, c):
            raise UserError(f"data.mean/std: need 1 or {c} values (one per channel), got {len(mean)} and {len(std)}")
    splits = [("data.train", train_x, train_y), ("data.val", val_x, val_y)]
    splits += [("data.test", test_x, test_y)] if spec.test else []
    splits += [("data.unlabeled", unl, None)] if unl is not None else []
    stats = {}
    for name, x, y in splits:
        st = ImageStats(name, str(paths[name.split(".")[1]]), num_classes=num_classes)
        scan_images(st, x, y)
        st.check(mean, std)
        stats[name] = st
    check_class_coverage(stats["data.train"], [s for n, s in stats.items() if n in ("data.val", "data.test")])
    ys = np.concatenate([train_y, val_y, test_y])
    inferred = int(ys.max()) + 1
    if mean is not None:
        m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        norm = lambda a: None if a is None else ((a - m) / s).astype(np.float32)  # noqa: E731
        train_x, val_x, test_x, unl = norm(train_x), norm(val_x), norm(test_x), norm(unl)
    return DataSplits(
        train_x, train_y, val_x, val_y, test_x, test_y, inferred,
        list(mean or [0.0]), list(std or [1.0]), f"npz files ({spec.train}, {spec.val}, {spec.test or 'val as test'})",
        unlabeled_x=unl,
    )


# --- Content checks -------------------------------------------------------------------------------
# Bad data used to surface minutes into training as a traceback (`No data is collected`, the
# quantizer's `scale issue`). These checks run on the raw arrays first and fail with one line naming
# the split and file. They work on statistics accumulated batch by batch (`ImageStats.add`), so data
# streamed from disk can be checked in bounded memory: O(channels + classes), plus one batch.

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


def _read_npz(path: Path, field: str, need_y: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
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
            raise UserError(f"{field}: {path}: y must be 1-D with one label per image, "
                            f"got shape {y.shape} for {len(x)} images")
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
