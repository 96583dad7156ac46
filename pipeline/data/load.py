"""The config's `data:` section (with `preprocess`, `augment`, `skip_corrupt`, `workers`) becomes a `Data`.

Sources: the built-in digits (in memory), paths (an image-folder tree, a `.csv` list, an `.npz` memory-mapped),
one folder split by class (`root` + `split`), or a factory returning torch Datasets. Structure is checked at
load (empty split, unknown class in val/test, class without training images, shapes that differ); array
contents are scanned batch by batch (`ImageStats`); image files get the same value checks on a first batch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.checks import ImageStats, check_class_coverage, scan_images
from pipeline.data.view import Data, dataset_labels
from pipeline.errors import UserError

CHECK_BATCH = 64  # images decoded at load for the value checks of image files


def load_data(spec: Any, base: Path, num_classes: int | None = None, cfg: Any = None,
              cache_dir: Path | None = None) -> Data:
    """Load the data a config describes and check it before any training.

    Args:
        spec: the `data:` section (`BuiltinData`, `FileData` or `FactoryData`).
        base: the config file's folder (relative paths resolve against it).
        num_classes: the config's `num_classes`, when given: labels must be below it.
        cfg: the whole `PipelineConfig` (preprocess, augment, skip_corrupt, workers, seed); None: defaults.
        cache_dir: where compressed npz members are extracted (default: `.edgepipe-cache` beside the config).
    Returns:
        The `Data`.
    Raises:
        UserError: a missing or unreadable file, data that no model can train on, or a recipe that does not
            fit the data, in one line naming the field or file.
    """
    opts = _Options(cfg)
    if getattr(spec, "builtin", None) == "digits":
        return _digits(spec, opts)
    if getattr(spec, "factory", None):
        from pipeline.data.factory import load_factory

        return load_factory(spec, base, opts)
    return _files(spec, base, num_classes, opts, Path(cache_dir) if cache_dir else base / ".edgepipe-cache")


class _Options:
    """The top-level config fields that shape the data (defaults when there is no config)."""

    def __init__(self, cfg: Any):
        self.preprocess = getattr(cfg, "preprocess", None)
        self.augment = getattr(cfg, "augment", None)
        self.skip_corrupt = bool(getattr(cfg, "skip_corrupt", False))
        self.workers = getattr(cfg, "workers", None)
        self.seed = int(getattr(cfg, "seed", 0))

    def recipe(self) -> Any:
        """The `Preprocess` for image files, or None when the config has no `preprocess:`."""
        from pipeline.preprocess import Preprocess, imagenet

        if self.preprocess is None:
            return None
        if self.preprocess == "imagenet":
            return imagenet()
        return Preprocess(**self.preprocess.model_dump())


def _digits(spec: Any, opts: _Options) -> Data:
    from pipeline.data.arrays import load_digits

    if opts.preprocess is not None:
        raise UserError(f"preprocess = {opts.preprocess!r}: the built-in digits are preprocessed by data.image_size "
                        "(allowed: leave preprocess out)")
    d = load_digits(spec.image_size, spec.split_seed)
    augment = opts.augment or "shift"
    digest = d.digest() if augment == "shift" else _sha({"digits": d.digest(), "augment": augment})
    return from_arrays(d, augment, digest, kind="digits", seed=opts.seed)


def from_arrays(d: Any, augment: str, digest: str, kind: str, seed: int = 0) -> Data:
    """A `Data` over in-memory arrays (a `DataSplits`)."""
    from pipeline.datasets import ArrayDataset

    splits = {"train": ArrayDataset(d.train_x, d.train_y), "val": ArrayDataset(d.val_x, d.val_y),
              "test": ArrayDataset(d.test_x, d.test_y)}
    if d.unlabeled_x is not None:
        splits["unlabeled"] = ArrayDataset(d.unlabeled_x)
    if augment == "standard":
        raise UserError("augment = 'standard': needs image files (a random crop and flip of each decoded image); "
                        "allowed for in-memory arrays: shift, none")
    train_sets = {k: v for k, v in splits.items() if k in ("train", "unlabeled")}
    return Data(splits, train_sets, d.num_classes, tuple(d.train_x.shape[1:]), list(d.mean), list(d.std),
                d.description, digest, kind, augment, extra=dict(d.extra))


def _kind_of(path: Path, field: str) -> str:
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in (".csv", ".npz"):
        return suffix[1:]
    raise UserError(f"{field} = {str(path)!r}: allowed: an image folder, a .csv list (path,label) or an .npz file")


def _files(spec: Any, base: Path, num_classes: int | None, opts: _Options, cache_dir: Path) -> Data:
    from pipeline.config import resolve
    from pipeline.data.sources import folder_splits, open_split

    if spec.root is not None:
        root = resolve(base, spec.root)
        kinds = {"train": "folder"}
        pre = _image_recipe(opts, "data.root")
        splits, train_sets, sources = folder_splits(root, spec, pre, opts)
    else:
        paths = {k: resolve(base, getattr(spec, k)) for k in ("train", "val", "test", "unlabeled") if getattr(spec, k)}
        kinds = {k: _kind_of(p, f"data.{k}") for k, p in paths.items()}
        images = [k for k, v in kinds.items() if v != "npz"]
        pre = _image_recipe(opts, f"data.{images[0]}") if images else None
        if pre is None and (spec.mean is None) != (spec.std is None):
            raise UserError("data.mean/std: give both, or neither")
        splits, train_sets, classes, sources = {}, {}, None, {}
        for k in ("train", "val", "test", "unlabeled"):
            if k not in paths:
                continue
            ev, tr = open_split(k, paths[k], kinds[k], pre, opts, spec, classes, cache_dir)
            classes = classes if classes is not None else getattr(ev, "classes", None)
            splits[k], sources[k] = ev, str(paths[k])
            if k in ("train", "unlabeled"):
                train_sets[k] = tr
    test_is_val = "test" not in splits
    if test_is_val:
        splits["test"] = splits["val"]
    shape = _check_shapes(splits)
    has_npz = "npz" in kinds.values()
    if has_npz:
        _scan_arrays(splits, sources, spec, num_classes)
    if any(v != "npz" for v in kinds.values()):
        _scan_first_batch(splits, sources, pre, num_classes)
    _check_labels(splits, sources, num_classes)
    augment = opts.augment or ("shift" if set(kinds.values()) == {"npz"} else "standard")
    if augment == "standard" or augment == "shift":
        train_sets = {k: _with_augment(v, augment, opts.seed) for k, v in train_sets.items()}
    labels = np.concatenate([dataset_labels(splits[k]) for k in ("train", "val", "test")])
    classes = getattr(splits["train"], "classes", None) or getattr(getattr(splits["train"], "dataset", None),
                                                                   "classes", None)
    inferred = len(classes) if classes else int(labels.max()) + 1
    mean = list(pre.mean) if pre is not None else list(spec.mean or [0.0])
    std = list(pre.std) if pre is not None else list(spec.std or [1.0])
    recipe = {"preprocess": pre.to_dict() if pre else None, "augment": augment, "mean": mean, "std": std,
              "skip_corrupt": opts.skip_corrupt, "split": spec.split,
              "split_seed": spec.split_seed if spec.root else None}
    digest = _sha({"files": _files_digest(splits), "recipe": recipe})
    where = f"image folder {spec.root} split {spec.split}" if spec.root else ", ".join(
        f"{k} {getattr(spec, k)}" for k in ("train", "val", "test", "unlabeled") if getattr(spec, k))
    description = f"{where}{' (val as test)' if test_is_val else ''}"
    return Data(splits, train_sets, inferred, shape, mean, std, description, digest,
                "npz" if set(kinds.values()) == {"npz"} else "images", augment,
                pre.to_dict() if pre else None, opts.workers, test_is_val, extra={"classes": classes})


def open_data_file(path: Path, field: str, preprocess: Any, cache_dir: Path) -> Any:
    """One data file or folder read as `data:` reads a split, outside a config (e.g. `edgepipe quantize --calib`).

    Args:
        path: an .npz (`x`, optional `y`), an image folder (class subfolders, or flat) or a .csv list.
        field: the option or field that named it, for messages.
        preprocess: "imagenet", a `PreprocessSpec`, or None (required for image files).
        cache_dir: where compressed npz members are extracted.
    Returns:
        A dataset of `(image, label)` items; label -1 where the data has no labels.
    Raises:
        UserError: a missing or unreadable path, no images, image files without a preprocess.
    """
    import types

    from pipeline.data.sources import open_split
    from pipeline.datasets import DatasetError

    if not path.exists():
        raise UserError(f"{field} {path}: not found (allowed: an .npz, an image folder or a .csv list)")
    kind = _kind_of(path, field)
    opts = _Options(types.SimpleNamespace(preprocess=preprocess))
    pre = _image_recipe(opts, field) if kind != "npz" else None
    spec = types.SimpleNamespace(mean=None, std=None)
    err = ""
    for split in ("train", "unlabeled"):  # labeled first; an npz with x only, or a flat folder, is unlabeled
        try:
            return open_split(split, path, kind, pre, opts, spec, None, cache_dir)[0]
        except DatasetError as e:
            err = str(e).replace("data.train: ", "").replace("data.unlabeled: ", "")
    raise UserError(f"{field} {path}: {err}")


def _image_recipe(opts: _Options, field: str) -> Any:
    pre = opts.recipe()
    if pre is None:
        raise UserError(f"{field} holds image files: preprocess is required (allowed: preprocess: imagenet, or "
                        "preprocess: {resize: N, crop: N, mode: RGB|L, mean: [...], std: [...]})")
    if pre.crop is None:
        raise UserError("preprocess.crop = null: required for image files (allowed: an integer >= 1; every image "
                        "must come out the same size to stack into batches)")
    return pre


def _with_augment(ds: Any, name: str, seed: int) -> Any:
    """The training copy of a dataset with per-image augmentation ("standard"); "shift" is per batch."""
    import copy

    from pipeline.datasets import make_augment

    target = getattr(ds, "dataset", ds)  # a Subset of a folder
    if name != "standard" or not hasattr(target, "augment"):
        return ds
    aug = copy.copy(target)
    aug.augment = make_augment(name, seed)
    if target is ds:
        return aug
    from torch.utils.data import Subset

    return Subset(aug, ds.indices)


def _check_shapes(splits: dict) -> tuple[int, ...]:
    shapes = {k: tuple(np.asarray(ds[0][0]).shape) for k, ds in splits.items() if len(ds)}
    if len(set(shapes.values())) > 1:
        raise UserError(f"data: the splits' images differ in shape (C, H, W): {shapes} (allowed: one shape; "
                        "set preprocess.crop so every image comes out the same size)")
    return next(iter(shapes.values()))


def _scan_arrays(splits: dict, sources: dict, spec: Any, num_classes: int | None) -> None:
    stats = {}
    for k, ds in splits.items():
        if not hasattr(ds, "images") or k in stats or (k == "test" and ds is splits.get("val")):
            continue
        st = ImageStats(f"data.{k}", sources.get(k, ""), num_classes=num_classes)
        scan_images(st, ds.images, None if k == "unlabeled" else ds.labels)
        st.check(spec.mean, spec.std)
        stats[k] = st
    if "train" in stats:
        check_class_coverage(stats["train"], [s for n, s in stats.items() if n in ("val", "test")])


def _scan_first_batch(splits: dict, sources: dict, pre: Any, num_classes: int | None) -> None:
    """The value checks on a first batch of each image split, as decoded (non-finite, constant, range)."""
    for k, ds in splits.items():
        if hasattr(ds, "images"):
            continue
        n = min(CHECK_BATCH, len(ds))
        x = np.stack([np.asarray(ds[i][0], np.float32) for i in range(n)])
        st = ImageStats(f"data.{k}", sources.get(k, ""), num_classes=num_classes).add(x)
        st.check(None, None, final=False)


def _check_labels(splits: dict, sources: dict, num_classes: int | None) -> None:
    train = set(dataset_labels(splits["train"]).tolist()) - {-1}
    if not train:
        raise UserError(f"data.train: {sources.get('train', '')}: no labeled images (every split but unlabeled "
                        "needs labels)")
    for k in ("val", "test"):
        if k not in splits:
            continue
        labels = dataset_labels(splits[k])
        missing = sorted(set(labels.tolist()) - train - {-1})
        if missing:
            raise UserError(f"data.train: {sources.get('train', '')}: no images of class {missing[0]}, but data.{k} "
                            f"({sources.get(k, '')}) has some: a model cannot learn a class it never sees")
        if num_classes is not None and len(labels) and labels.max() >= num_classes:
            raise UserError(f"data.{k}: {sources.get(k, '')}: label {int(labels.max())} >= num_classes = "
                            f"{num_classes} (allowed 0..{num_classes - 1})")


def _files_digest(splits: dict) -> dict:
    from pipeline.datasets import dataset_digest

    out = {}
    for k, ds in splits.items():
        target = getattr(ds, "dataset", ds)
        d = dataset_digest(target)
        if target is not ds:  # a Subset: which images are in it matters too
            d = _sha({"of": d, "indices": np.asarray(ds.indices).tolist()})
        out[k] = d
    return out


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
