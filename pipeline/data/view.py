"""`Data`: what the stages see of the data, whatever its source: torch Datasets per split and bounded samples.

Nothing here holds a whole data set in memory unless it already is (the built-in digits): training and final
accuracies iterate loaders, and calibration, parity checks, the benchmark input and the run folder's
`data/*.npz` draw bounded samples (`sample(split, n, seed)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test", "unlabeled")


@dataclass(frozen=True)
class Data:
    """The run's data.

    Attributes:
        splits: un-augmented datasets by split ("train", "val", "test", optional "unlabeled"); items are
            `(x float32 CHW tensor, label)` or `(x, label, has_label)`; label -1 = unlabeled.
        train_sets: the datasets training reads ("train"[, "unlabeled"]), with any per-image augmentation.
        num_classes: classes of the label space.
        input_shape: (C, H, W) of one image.
        mean, std: the per-channel normalisation already applied to x (recorded in the manifest).
        description: one line for the report.
        digest_value: the cache key's data digest.
        kind: "digits", "npz", "images" or "factory".
        augment: "shift" (a random shift of the whole batch, applied by the training loop), "standard" or "none".
        preprocess: the exact image preprocessing (`Preprocess.to_dict()`), or None for array data.
        workers: DataLoader worker processes (None: the loader's default).
        test_is_val: no test split was given: the val split is the held-out one.
    """

    splits: dict[str, Any]
    train_sets: dict[str, Any]
    num_classes: int
    input_shape: tuple[int, ...]
    mean: list[float]
    std: list[float]
    description: str
    digest_value: str
    kind: str
    augment: str = "shift"
    preprocess: dict | None = None
    workers: int | None = None
    test_is_val: bool = False
    extra: dict = field(default_factory=dict)

    def digest(self) -> str:
        """The data's digest for cache keys (files' bytes and the recipe, or the digits' arrays)."""
        return self.digest_value

    def with_num_classes(self, num_classes: int) -> Data:
        """The same data with a wider label space (the config's `num_classes`)."""
        return replace(self, num_classes=num_classes)

    def has(self, split: str) -> bool:
        """Whether the split exists."""
        return split in self.splits

    def count(self, split: str) -> int:
        """Images in a split."""
        return len(self.splits[split])

    def labels(self, split: str) -> np.ndarray:
        """int64 labels of a split (-1 for unlabeled images), without decoding any image."""
        return dataset_labels(self.splits[split])

    @property
    def batch_shift(self) -> bool:
        """Training shifts each batch at random (`pipeline.training.ShiftAugment`)."""
        return self.augment == "shift"

    def loader(self, split: str, batch_size: int = 256, shuffle: bool = False, seed: int = 0,
               train: bool = False, dataset: Any = None, check: bool = False) -> Any:
        """A loader over one split (or over `dataset`), one batch in memory at a time.

        Args:
            split: the split's name.
            batch_size: images per batch.
            shuffle: a (seed, epoch)-determined order.
            seed: the shuffle seed.
            train: read the training version (per-image augmentation) of the split.
            dataset: read this dataset instead (e.g. `student_set`'s).
            check: run the content checks on every batch as it is read (image files and factory data, whose
                values were not all scanned at load); a bad batch raises a one-line UserError.
        Returns:
            A `pipeline.datasets.EpochDataLoader` (wrapped in `CheckedBatches` when checking).
        """
        from pipeline.datasets import make_loader

        ds = dataset if dataset is not None else (self.train_sets if train else self.splits)[split]
        loader = make_loader(ds, batch_size, shuffle=shuffle, seed=seed, workers=self._workers(ds))
        if check and self.kind in ("images", "factory"):
            return CheckedBatches(loader, f"data.{split}", self.num_classes)
        return loader

    def _workers(self, ds: Any) -> int | None:
        return 0 if getattr(ds, "batched", False) else self.workers

    def sample(self, split: str, n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """At most `n` un-augmented images of a split, as arrays.

        Args:
            split: the split.
            n: the most images returned.
            seed: None for the first n images, else n indices drawn at random (without replacement).
        Returns:
            (x float32 (k, C, H, W), y int64 (k,)), k = min(n, count).
        """
        ds, total = self.splits[split], self.count(split)
        k = max(0, min(int(n), total))
        if seed is None or k == total:
            idx = np.arange(k)
        else:
            idx = np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False))
        if getattr(ds, "batched", False):
            x, y = ds[idx.tolist()][:2]
            return np.ascontiguousarray(x.numpy(), np.float32), y.numpy().astype(np.int64)
        if k == 0:
            return np.zeros((0, *self.input_shape), np.float32), np.zeros(0, np.int64)
        items = [ds[int(i)] for i in idx]
        x = np.stack([np.asarray(it[0], np.float32) for it in items])
        return x, np.asarray([int(it[1]) for it in items], np.int64)

    def student_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Labels of the images the student learns from: train, then unlabeled (label 0, has_label False).

        Returns:
            (y int64, has_label bool), one entry per image of `student_set`.
        """
        y = self.labels("train")
        if "unlabeled" not in self.train_sets:
            return y, y >= 0
        n = len(self.train_sets["unlabeled"])
        return np.concatenate([y, np.zeros(n, np.int64)]), np.concatenate([y >= 0, np.zeros(n, bool)])

    def student_set(self, mask: np.ndarray, labeled_only: bool = False) -> Any:
        """The training images (train, then unlabeled) with only `mask`'s labels usable.

        Args:
            mask: (N,) bool over `student_labels()`: which labels training may use.
            labeled_only: keep only the images whose label is usable (training without a teacher).
        Returns:
            A map-style dataset of `(x, y, has_label)` items.
        """
        from pipeline.datasets import ArrayDataset

        y, _ = self.student_labels()
        parts = [self.train_sets["train"]] + ([self.train_sets["unlabeled"]] if "unlabeled" in self.train_sets else [])
        keep = np.flatnonzero(mask) if labeled_only else np.arange(len(y))
        if all(isinstance(p, ArrayDataset) for p in parts):  # in memory: one indexing operation per batch
            x = np.concatenate([p.x.numpy() for p in parts]) if len(parts) > 1 else parts[0].x.numpy()
            return ArrayDataset(x[keep], y[keep], mask[keep])
        from torch.utils.data import ConcatDataset, Subset

        whole = MaskedLabels(ConcatDataset(parts) if len(parts) > 1 else parts[0], y, mask)
        return whole if not labeled_only else Subset(whole, keep.tolist())


class CheckedBatches:
    """A loader whose batches pass `ImageStats` checks as they are read (non-finite or constant images, labels
    beyond num_classes); behaves as the loader for `fit` (len, set_epoch, samplers)."""

    def __init__(self, loader: Any, name: str, num_classes: int):
        """Args:
            loader: the DataLoader.
            name: the split's config field, for messages (e.g. "data.train").
            num_classes: labels must be below it.
        """
        self.loader, self.name, self.num_classes, self.batches = loader, name, num_classes, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, attr: str) -> Any:  # sampler, batch_sampler, dataset, ...
        return getattr(self.loader, attr)

    def set_epoch(self, epoch: int) -> None:
        """Choose the next pass's epoch (see `EpochDataLoader.set_epoch`)."""
        self.loader.set_epoch(epoch)

    def __iter__(self):
        from pipeline.data.checks import ImageStats

        for batch in self.loader:
            x = batch[0].numpy() if hasattr(batch[0], "numpy") else np.asarray(batch[0])
            y = batch[1].numpy() if hasattr(batch[1], "numpy") else np.asarray(batch[1])
            where = f"batch {self.batches} of the loader (image indices within the batch)"
            ImageStats(self.name, where, self.num_classes).add(x, y[y >= 0]).check(final=False)
            self.batches += 1
            yield batch


class MaskedLabels:
    """A dataset whose labels are replaced by `y` and usable only where `mask` (items `(x, y, has_label)`)."""

    def __init__(self, dataset: Any, y: np.ndarray, mask: np.ndarray):
        """Args:
            dataset: the images (items whose first element is x).
            y: (N,) int64 labels.
            mask: (N,) bool: which labels count.
        """
        self.dataset, self.y, self.mask = dataset, np.asarray(y, np.int64), np.asarray(mask, bool)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, int, bool]:
        x = self.dataset[i][0]
        return x, int(self.y[i]) if self.mask[i] else -1, bool(self.mask[i])


def dataset_labels(ds: Any) -> np.ndarray:
    """int64 labels of a dataset without decoding images where it says them (`labels`, `targets`, `y`,
    a Subset's indices); otherwise by reading every item once."""
    from torch.utils.data import Subset

    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[np.asarray(ds.indices, np.int64)]
    for name in ("labels", "targets", "y"):
        v = getattr(ds, name, None)
        if v is not None and not callable(v):
            return np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.int64).reshape(-1)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], np.int64)
