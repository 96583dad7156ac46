"""Data from the user's code: `data: {factory: "module:function"}` returning torch Datasets per split."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError


def load_factory(spec: Any, base: Path, opts: Any) -> Any:
    """Call the factory and wrap what it returns.

    Args:
        spec: the `FactoryData` section.
        base: the config's folder (put on the import path).
        opts: the loader options (augment, workers).
    Returns:
        A `Data` (kind "factory"; the factory's datasets do their own augmentation unless `augment: shift`).
    Raises:
        UserError: the factory cannot be imported or called, or returns something else than
            {"train", "val"[, "test", "unlabeled"]: Dataset}.
    """
    from pipeline.data.load import _check_labels, _check_shapes, _sha
    from pipeline.data.view import Data, dataset_labels

    mod_name, fn_name = spec.factory.split(":")
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"data.factory = {spec.factory!r}: cannot import it ({type(e).__name__}: {e})") from None
    try:
        out = fn(**spec.kwargs)
    except Exception as e:
        raise UserError(f"data.factory = {spec.factory!r} raised {type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(out, dict) or not {"train", "val"} <= set(out) or set(out) - {"train", "val", "test",
                                                                                  "unlabeled"}:
        keys = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise UserError(f"data.factory = {spec.factory!r} returned {keys}: allowed: a dict with train, val and "
                        "optionally test and unlabeled torch Datasets")
    splits = dict(out)
    test_is_val = "test" not in splits
    splits.setdefault("test", splits["val"])
    shape = _check_shapes(splits)
    _check_labels(splits, {k: spec.factory for k in splits}, None)
    labels = np.concatenate([dataset_labels(splits[k]) for k in ("train", "val", "test")])
    classes = getattr(splits["train"], "classes", None)
    num_classes = len(classes) if classes else int(labels.max()) + 1
    src = Path(getattr(sys.modules[mod_name], "__file__", "") or "")
    src_sha = hashlib.sha256(src.read_bytes()).hexdigest() if src.is_file() else ""
    digest = _sha({"factory": spec.factory, "kwargs": json.dumps(spec.kwargs, sort_keys=True, default=str),
                   "source": src_sha, "sizes": {k: len(v) for k, v in splits.items()}, "augment": opts.augment})
    train_sets = {k: splits[k] for k in ("train", "unlabeled") if k in splits}
    return Data(splits, train_sets, num_classes, shape, [0.0], [1.0], f"factory {spec.factory}", digest, "factory",
                opts.augment or "none", None, opts.workers, test_is_val)
