"""Helpers the stages share: rebuilding models from artifacts, counting MACs, held-out accuracy, label subsets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.pruning.budget import macs_and_params  # noqa: F401  (the stages count MACs with Torch-Pruning's counter)


def make_model(inputs: Any, role: str) -> Any:
    """A fresh (untrained) teacher or student as the config describes it."""
    from pipeline.models import build_model

    spec = getattr(inputs.config, role)
    return build_model(spec, inputs.data.num_classes, inputs.data.input_shape[0], inputs.config_dir, role)


def load_model(inputs: Any, role: str, path: Path) -> Any:
    """Rebuild the teacher or student from a checkpoint an earlier stage wrote (pruned or not)."""
    from pipeline.models.checkpoint import load_checkpoint

    return load_checkpoint(make_model(inputs, role), path)


def accuracy_on(inputs: Any, model: Any, split: str = "test") -> float:
    """The model's score on a split: the user's `eval:` function when the config names one, else top-1.

    Every stage that measures a torch model's accuracy comes through here (train_teacher, distill, prune),
    so a detector or any other task is scored the same way everywhere; ONNX stages use the same function.

    Args:
        inputs: the stage's `StageInputs` (data, config.device, config.eval, config_dir).
        model: the nn.Module.
        split: "test" (the held-out split) or "val".
    Returns:
        Top-1 accuracy (streamed through a loader, memory: one batch), or the user's score, in [0, 1].
    Raises:
        UserError: the user's function fails or returns something other than a score in [0, 1].
    """
    spec = getattr(inputs.config, "eval", None)
    if spec:
        from pipeline.tasks.user_eval import eval_split, load_eval, make_predict, score

        # the user's function reads every output (boxes, scores, masks): argmax over a tuple means nothing
        return score(load_eval(spec, inputs.config_dir), make_predict(model), eval_split(inputs.data, split))
    from pipeline.training import evaluate_loader

    device = getattr(inputs.config, "device", "auto")
    return evaluate_loader(model, inputs.data.loader(split, 256), device)


def labeled_subset(y: np.ndarray, has_label: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A mask keeping `fraction` of the labeled images' labels, stratified by class (at least one per class)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    if fraction >= 1.0:
        return has_label.copy()
    for c in np.unique(y[has_label]):
        idx = np.flatnonzero(has_label & (y == c))
        k = max(1, int(round(len(idx) * fraction)))
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def classifier_layers(model: Any, num_classes: int) -> list:
    """Layers whose outputs are the class logits: never pruned (their output count is the label space)."""
    import torch.nn as nn

    last = None
    for mod in model.modules():
        linear = isinstance(mod, nn.Linear) and mod.out_features == num_classes
        if linear or (isinstance(mod, nn.Conv2d) and mod.out_channels == num_classes):
            last = mod
    return [last] if last is not None else []
