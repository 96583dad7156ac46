"""What every dataset here shares: errors that survive worker processes, compact path storage,
the epoch and skip flags shared with DataLoader workers, and the decode-in-__getitem__ image dataset.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.datasets.augment import Augment
from pipeline.errors import UserError
from pipeline.preprocess import ImageError, Preprocess, load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DatasetError(UserError):
    """A data problem naming the file: exit code 2, one line, also when raised in a DataLoader worker.

    DataLoader re-raises a worker's exception as `type(e)("Caught ... Original Traceback ...")`; the
    constructor keeps only the original one-line message so the CLI still prints just that line.
    """

    def __init__(self, message: str = ""):
        marker = f"{type(self).__name__}: "
        if message.startswith(f"Caught {type(self).__name__}") and marker in message:
            message = message.rstrip().rsplit(marker, 1)[-1]
        super().__init__(message)


class PathTable:
    """Many relative paths in two numpy arrays (UTF-8 bytes and offsets), not a list of str objects.

    Worker processes forked by DataLoader would otherwise touch every str's reference count and copy
    the pages holding them, growing each worker's memory with the number of files.
    """

    def __init__(self, paths: Iterable[str]):
        encoded = [p.encode("utf-8") for p in paths]
        self._offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._data = np.frombuffer(b"".join(encoded), np.uint8).copy()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._data[self._offsets[i]:self._offsets[i + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


class SharedState:
    """The epoch and per-sample "unreadable" flags, in shared memory so workers see the main process's
    `set_epoch` and the main process sees which files workers had to skip (persistent workers too)."""

    def __init__(self, n: int):
        self.epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.bad = torch.zeros(max(n, 1), dtype=torch.uint8).share_memory_()


def set_epoch(dataset: Any, epoch: int) -> None:
    """Set the augmentation epoch on a dataset, looking through Subset and ConcatDataset wrappers."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if hasattr(dataset, "dataset"):  # torch Subset
        set_epoch(dataset.dataset, epoch)
    for d in getattr(dataset, "datasets", ()):  # torch ConcatDataset
        set_epoch(d, epoch)


class EpochMixin:
    """`set_epoch`/`epoch` backed by `self._state` (a SharedState)."""

    _state: SharedState

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the augmentation of every following sample, in every worker process."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch = {epoch!r}: must be an integer >= 0")
        self._state.epoch[0] = epoch

    @property
    def epoch(self) -> int:
        """The current augmentation epoch."""
        return int(self._state.epoch[0])


class ImageFilesDataset(EpochMixin, Dataset):
    """Images listed as paths relative to `root`, decoded in `__getitem__` (in DataLoader workers).

    Nothing but paths and labels is kept: memory grows with the batch, not with the data set.
    Items are `(x, label)`: x a float32 tensor (C, H, W), label an int (-1 when unlabeled).
    """

    def __init__(self, root: Path, rel_paths: Sequence[str], labels: Sequence[int], preprocess: Preprocess,
                 augment: Augment | None, skip_corrupt: bool, classes: list[str] | None, what: str):
        if not isinstance(preprocess, Preprocess):
            raise TypeError(f"{what}: preprocess must be a pipeline.preprocess.Preprocess, "
                            f"got {type(preprocess).__name__}")
        if augment is not None and not isinstance(augment, Augment):
            raise TypeError(f"{what}: augment must be an Augment (see make_augment) or None, got {augment!r}")
        self.root, self.preprocess, self.augment = Path(root), preprocess, augment
        self.skip_corrupt, self.classes, self.what = bool(skip_corrupt), classes, what
        self._skipped_at_index: list[str] = []
        keep_paths, keep_labels = list(rel_paths), list(labels)
        if skip_corrupt:  # cheap header check now; files that only fail a full decode are caught on read
            ok = [self._header_ok(p) for p in keep_paths]
            keep_paths = [p for p, good in zip(keep_paths, ok, strict=True) if good]
            keep_labels = [lab for lab, good in zip(keep_labels, ok, strict=True) if good]
        if not keep_paths:
            raise DatasetError(f"{what}: no readable images (extensions {', '.join(IMAGE_EXTENSIONS)})")
        self._paths = PathTable(keep_paths)
        self._labels = np.asarray(keep_labels, np.int64)
        self._state = SharedState(len(self._paths))

    def _header_ok(self, rel: str) -> bool:
        from PIL import Image

        path = self.root / rel
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 - opening reads the header; a non-image fails here
            return True
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            self._skipped_at_index.append(str(path))
            return False

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def labels(self) -> np.ndarray:
        """int64 label per sample (-1 for unlabeled images)."""
        return self._labels

    @property
    def num_classes(self) -> int | None:
        """Number of classes (from `classes`), or None for unlabeled data."""
        return None if self.classes is None else len(self.classes)

    def path(self, i: int) -> Path:
        """The file of sample `i`."""
        return self.root / self._paths[i]

    def files(self) -> Iterator[Path]:
        """Every sample's file, in index order."""
        return (self.root / p for p in self._paths)

    def digest_files(self) -> list[Path]:
        """Files whose bytes define this data set (for `files_digest` cache keys)."""
        return list(self.files())

    @property
    def skipped(self) -> list[str]:
        """Unreadable files left out: at indexing (not images) and on read (truncated), all processes."""
        bad = torch.nonzero(self._state.bad[: len(self)]).flatten().tolist()
        return self._skipped_at_index + [str(self.path(i)) for i in bad]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.what}: index {index} out of range for {n} images")
        index %= n
        for step in range(n):
            i = (index + step) % n
            if self._state.bad[i]:
                continue
            try:
                img = load_image(self.path(i), self.preprocess.mode)
            except ImageError as e:
                if not self.skip_corrupt:
                    raise DatasetError(f"{self.what}: {e} (set skip_corrupt to leave such files out)") from None
                self._state.bad[i] = 1
                continue
            # An unreadable file is replaced by the next readable one, keeping batches full; its
            # index still seeds the augmentation so the substitute is not a copy of a neighbour's view.
            if self.augment is None:
                x = self.preprocess(img)
            else:
                x = self.augment.image(img, self.preprocess, self.epoch, index)
            return torch.from_numpy(x), int(self._labels[i])
        raise DatasetError(f"{self.what}: every one of the {n} images is unreadable (see .skipped)")


def is_image_file(name: str) -> bool:
    """An image by extension (case-insensitive), not hidden (macOS `._x.jpg` resource forks are not images)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
