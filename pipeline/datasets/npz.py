"""npz data without loading it whole: memory-map the arrays inside the zip.

`np.savez` stores each array as an uncompressed `.npy` member, so its bytes sit contiguously in
the file: read the member's local header for where its data starts, parse the `.npy` header for
dtype, shape and order, and `np.memmap` the rest. `np.savez_compressed` members cannot be mapped;
they are extracted once (streamed, bounded memory) to a `.npy` in a cache folder and mapped from there.
"""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.datasets.augment import Augment
from pipeline.datasets.base import DatasetError, EpochMixin, SharedState
from pipeline.fileio import atomic_path
from pipeline.preprocess import normalise_list

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # zip local file header, 30 bytes


def _npy_header(f: Any, where: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(f)
    else:  # 3.0 only differs in allowing UTF-8 field names; numpy has no public reader for it
        shape, fortran, dtype = fmt._read_array_header(f, version)
    if dtype.hasobject:
        raise DatasetError(f"{where}: holds Python objects (dtype {dtype}); only numeric arrays can be mapped")
    return dtype, tuple(shape), fortran


def open_npy(path: Path, offset: int, where: str) -> np.ndarray:
    """Memory-map the `.npy` whose magic starts at byte `offset` of `path` (read-only).

    Args:
        path: the file (an `.npy`, or an `.npz` with `offset` at an uncompressed member).
        offset: where the `.npy` magic string starts.
        where: names the array in errors.
    Returns:
        An `np.memmap` (nothing read beyond the header).
    """
    with open(path, "rb") as f:
        f.seek(offset)
        dtype, shape, fortran = _npy_header(f, where)
        data_at = f.tell()
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)  # np.memmap cannot map zero bytes
    return np.memmap(path, dtype=dtype, mode="r", offset=data_at, shape=shape, order="F" if fortran else "C")


def npz_member(path: Path, key: str, cache_dir: Path | None) -> np.ndarray:
    """Array `key` of an npz file, memory-mapped (compressed members via a one-time `.npy` cache).

    Args:
        path: the npz file.
        key: the array's name (`x` for the member `x.npy`).
        cache_dir: folder for extracted compressed members; required only for those.
    Returns:
        An `np.memmap` of the array.
    Raises:
        DatasetError: not a zip, no such array, encrypted, or compressed without a cache folder.
    """
    where = f"{path}: array {key!r}"
    try:
        with zipfile.ZipFile(path) as z:
            names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
            if key not in names:
                raise DatasetError(f"{path}: no array {key!r} (found {', '.join(sorted(names)) or 'none'})")
            info = z.getinfo(f"{key}.npy")
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"{path}: cannot read as an npz file: {e}") from None
    if info.flag_bits & 0x1:
        raise DatasetError(f"{where}: encrypted zip members are not supported")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            sig, *_, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
        if sig != b"PK\x03\x04":
            raise DatasetError(f"{where}: corrupt zip (no local header at byte {info.header_offset})")
        return open_npy(path, info.header_offset + _LOCAL_HEADER.size + name_len + extra_len, where)
    if cache_dir is None:
        raise DatasetError(f"{where} is compressed (np.savez_compressed): give a cache folder to extract it to, "
                           "or save the file with np.savez")
    # The member's CRC-32 and sizes, from the zip directory, identify its content without reading it.
    name = f"{Path(path).stem}-{key}-{info.CRC:08x}-{info.file_size}-{info.compress_size}.npy"
    cached = Path(cache_dir) / "npz" / name
    if not (cached.is_file() and cached.stat().st_size == info.file_size):
        try:
            with atomic_path(cached) as tmp, zipfile.ZipFile(path) as z, z.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # zipfile checks the CRC at the end of the stream
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise DatasetError(f"{where}: cannot extract to {cached}: {type(e).__name__}: {e}") from None
    return open_npy(cached, 0, where)


class NpzDataset(EpochMixin, Dataset):
    """Images from an npz file (`x` float NCHW, `y` integer labels), read one at a time from a memory map.

    The image array is never loaded whole, in this process or in DataLoader workers (the map is
    reopened in each worker rather than pickled). Labels (one int64 per image) are read into memory.

    Args:
        path: the npz file.
        cache_dir: folder for extracting compressed npz members (needed only for np.savez_compressed files).
        augment: training augmentation applied to each normalised array ("shift", "standard"), or None.
        mean: per-channel mean subtracted from x (1 or C values), or None.
        std: per-channel std x is divided by (1 or C values), or None.
        labeled: False for x-only files: every label is -1.
    Raises:
        DatasetError: missing/corrupt file, missing arrays, wrong shapes or dtypes, negative labels.
    """

    def __init__(self, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 augment: Augment | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, labeled: bool = True):
        self.path = Path(path)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.augment = augment
        if not self.path.is_file():
            raise DatasetError(f"npz file not found: {self.path}")
        x = npz_member(self.path, "x", self.cache_dir)
        if x.ndim != 4:
            raise DatasetError(f"{self.path}: x must be NCHW (4 dimensions), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise DatasetError(f"{self.path}: x must be float32, got {x.dtype}")
        self._x: np.ndarray | None = x
        self._shape = tuple(x.shape)
        self._labels = np.full(len(x), -1, np.int64)
        if labeled:
            y = npz_member(self.path, "y", self.cache_dir)
            if y.ndim != 1 or len(y) != len(x):
                raise DatasetError(f"{self.path}: y must be 1-D with one label per image, got shape {y.shape} "
                                   f"for {len(x)} images")
            if not np.issubdtype(y.dtype, np.integer):
                raise DatasetError(f"{self.path}: y must be int64 class indices, got {y.dtype}")
            self._labels = np.asarray(y, np.int64)
            if len(y) and self._labels.min() < 0:
                raise DatasetError(f"{self.path}: labels must be >= 0, found {int(self._labels.min())}")
        c = self._shape[1]
        if (mean is None) != (std is None):
            raise DatasetError(f"{self.path}: give both mean and std, or neither")
        as_array = lambda v, name: np.asarray(normalise_list(v, c, f"{self.path}: {name}"), np.float32)  # noqa: E731
        self.mean = None if mean is None else as_array(mean, "mean").reshape(-1, 1, 1)
        self.std = None if std is None else as_array(std, "std").reshape(-1, 1, 1)
        if self.std is not None and (self.std <= 0).any():
            raise DatasetError(f"{self.path}: std must be > 0, got {self.std.ravel().tolist()}")
        self._state = SharedState(len(x))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_x"] = None  # a pickled np.memmap would carry all its data; workers map the file themselves
        return state

    def _images(self) -> np.ndarray:
        if self._x is None:
            self._x = npz_member(self.path, "x", self.cache_dir)
        return self._x

    def __len__(self) -> int:
        return self._shape[0]

    @property
    def images(self) -> np.ndarray:
        """The whole image array as a read-only memory map (indexing it reads only what is indexed)."""
        return self._images()

    @property
    def labels(self) -> np.ndarray:
        """int64 label per image (-1 when unlabeled)."""
        return self._labels

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return self._shape[1:]

    def digest_files(self) -> list[Path]:
        """The npz file (for `files_digest` cache keys)."""
        return [self.path]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.path}: index {index} out of range for {n} images")
        index %= n
        x = np.array(self._images()[index], dtype=np.float32)  # copies one image out of the map
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.augment is not None:
            x = self.augment.array(x, self.epoch, index)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(self._labels[index])
