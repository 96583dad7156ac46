"""One split of user data from a path: an image-folder tree, a flat folder, a CSV list or an npz file."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_split(split: str, path: Path, kind: str, pre: Any, opts: Any, spec: Any, classes: Any,
               cache_dir: Path) -> tuple[Any, Any]:
    """The dataset of one split (un-augmented; training adds augmentation to its own copy).

    Args:
        split: "train", "val", "test" or "unlabeled".
        path: the resolved path.
        kind: "folder", "csv" or "npz".
        pre: the `Preprocess` for image files (None for npz).
        opts: the loader options (skip_corrupt).
        spec: the `FileData` section (npz mean/std).
        classes: the train split's class names (val/test use the same indices), or None.
        cache_dir: where compressed npz members are extracted.
    Returns:
        (dataset, the same dataset for training).
    Raises:
        UserError: the files do not make a data set (naming the field and path).
    """
    from pipeline.datasets import (
        DatasetError,
        ImageFolderDataset,
        ImageListDataset,
        NpzDataset,
        UnlabeledFolderDataset,
    )

    try:
        if kind == "npz":
            ds = NpzDataset(path, cache_dir=cache_dir, mean=spec.mean, std=spec.std, labeled=split != "unlabeled")
        elif kind == "csv":
            ds = ImageListDataset(path, pre, classes=classes, skip_corrupt=opts.skip_corrupt)
        elif split == "unlabeled":
            ds = UnlabeledFolderDataset(path, pre, skip_corrupt=opts.skip_corrupt, recursive=True)
        else:
            ds = ImageFolderDataset(path, pre, classes=classes, skip_corrupt=opts.skip_corrupt)
    except DatasetError as e:
        raise DatasetError(f"data.{split}: {e}") from None
    if len(ds) == 0 and kind != "npz":  # npz: the content checks name the empty array's shape
        raise DatasetError(f"data.{split}: {path}: no images")
    return ds, ds


def folder_splits(root: Path, spec: Any, pre: Any, opts: Any) -> tuple[dict, dict, dict]:
    """One image-folder tree split by class: `spec.split` fractions, seeded by `spec.split_seed`.

    Returns:
        (splits, train_sets, sources): Subsets of one `ImageFolderDataset` per split.
    """
    from torch.utils.data import Subset

    from pipeline.datasets import DatasetError, ImageFolderDataset, stratified_split

    try:
        whole = ImageFolderDataset(root, pre, skip_corrupt=opts.skip_corrupt)
    except DatasetError as e:
        raise DatasetError(f"data.root: {e}") from None
    parts = stratified_split(whole.labels, spec.split, spec.split_seed)
    names = ("train", "val", "test")[: len(parts)]
    splits = {}
    for name, idx in zip(names, parts, strict=True):
        if len(idx) == 0:
            raise DatasetError(f"data.split = {spec.split}: the {name} split of {root} is empty (allowed: fractions "
                               "that leave every split at least one image per class)")
        splits[name] = Subset(whole, idx.tolist())
    return splits, {"train": splits["train"]}, {k: f"{root} ({k} split)" for k in splits}
