"""How the stages train: one `fit` call per model, with the run's device, resume states and logging.

Every stage that trains (train_teacher, distill and its comparison runs, prune's fine-tune) goes through
`train_model`: the teacher, when given, runs online on the same augmented batch as the student (nothing is
precomputed), on the config's `device`. Each call keeps a resume state in `DIR/.resume/<stage>/<tag>.pt`,
keyed by the stage's cache key and the call's tag, so an interrupted stage picks up at its last finished
epoch; `clear_resume` removes a stage's states once it has succeeded.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

RESUME_DIR = ".resume"


def resume_path(inputs: Any, stage: str, tag: str) -> Path | None:
    """The resume state of one training call, or None when the stage has no cache key to name it by.

    Args:
        inputs: the stage's `StageInputs` (out_dir and cache_key).
        stage: the stage's name.
        tag: the call's tag within the stage (e.g. "distill/scratch").
    Returns:
        `out_dir/.resume/<stage>/<tag>.pt` (the tag made file-name safe), or None.
    """
    if not getattr(inputs, "cache_key", ""):
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_") or "train"
    return Path(inputs.out_dir) / RESUME_DIR / stage / f"{safe}.pt"


def clear_resume(out_dir: Path, stage: str) -> None:
    """Delete a stage's resume states (after it has finished successfully)."""
    shutil.rmtree(Path(out_dir) / RESUME_DIR / stage, ignore_errors=True)


def seeded_model(inputs: Any, role: str) -> Any:
    """A fresh teacher or student, initialised from the config's seed (the same weights in every run).

    Args:
        inputs: the stage's `StageInputs`.
        role: "teacher" or "student".
    Returns:
        The untrained nn.Module.
    """
    import torch

    from pipeline.stages.common import make_model

    torch.manual_seed(inputs.config.seed)
    return make_model(inputs, role)


def train_model(
    inputs: Any, stage: str, tag: str, model: Any, *, mask: np.ndarray | None = None, epochs: int, batch_size: int,
    lr: float, weight_decay: float, seed: int, teacher: Any = None,
    temperature: float = 4.0, alpha: float = 0.3, features: Any = (), patience: int | None = None,
    log_lines: int | None = 4,
) -> dict[str, Any]:
    """Train `model` in place with `pipeline.training.fit` on the training images.

    Args:
        inputs: the stage's `StageInputs` (data, config.device, out_dir, cache_key, log).
        stage: the stage's name (names the resume folder).
        tag: this call's name in log lines and its resume file.
        model: the student (or the teacher being trained).
        mask: (N,) bool over `data.student_labels()` (train, then unlabeled images): which labels may be used
            (None: every train label). Without a teacher only those images train.
        epochs, batch_size, lr, weight_decay, seed: the budget and optimiser (AdamW, one-cycle).
        teacher: the teacher for online KD, or None for labels alone.
        temperature, alpha: KD temperature and label-loss weight.
        features: `FeatureHint`s or (student_layer, teacher_layer, weight) triples (needs a teacher).
        patience: early stopping on the val split (None: off).
        log_lines: log about this many epoch lines (None: every epoch).
    Returns:
        `fit`'s stats (epochs, final_loss, val_accuracy, device, precision, threads, images_per_s, ...).
    """
    from pipeline.training import ShiftAugment, fit

    d = inputs.data
    if mask is None:
        mask = d.student_labels()[1]
    # labels alone: the labeled images are the whole training set
    dataset = d.student_set(mask.astype(bool), labeled_only=teacher is None)
    loader = d.loader("train", _per_rank(batch_size), shuffle=True, seed=seed, dataset=dataset, check=True)
    val_loader = d.loader("val", 256)
    pairs = [(f.student, f.teacher, f.weight) if hasattr(f, "student") else tuple(f) for f in features]
    path = resume_path(inputs, stage, tag)
    augment = ShiftAugment(d.input_shape[-1]) if d.batch_shift else None
    log = inputs.log if log_lines is None else _every(inputs.log, tag, epochs, log_lines)
    return fit(model, loader, epochs=epochs, lr=lr, weight_decay=weight_decay, teacher=teacher,
               temperature=temperature, alpha=alpha, augment=augment, features=pairs,
               val_loader=val_loader, patience=patience, device=getattr(inputs.config, "device", "auto"),
               resume_path=path, resume_key=f"{inputs.cache_key}:{tag}", seed=seed, log=log, tag=tag, quiet=True)


def _per_rank(batch_size: int) -> int:
    """The config's batch size is the global batch: under torchrun each of N ranks takes batch_size / N."""
    from pipeline.errors import UserError
    from pipeline.training.dist import rank_and_world

    world = rank_and_world()[1]
    if batch_size % world:
        raise UserError(f"batch_size = {batch_size} does not divide by the {world} processes of this run "
                        f"(allowed: a multiple of {world}; it is the global batch, split across processes)")
    return batch_size // world


def check_features(features: Any, student: Any, teacher: Any, field: str = "distill.features") -> None:
    """Check every feature pair names a layer of its model.

    Args:
        features: `FeatureHint`s.
        student, teacher: the two models.
        field: the config field, for the message.
    Raises:
        UserError: an unknown layer name, with some valid names.
    """
    from pipeline.errors import UserError

    for i, f in enumerate(features):
        for role, model in (("student", student), ("teacher", teacher)):
            name = getattr(f, role)
            names = [n for n, _ in model.named_modules() if n]
            if name not in names:
                some = ", ".join(names[:3] + (["..."] if len(names) > 6 else []) + names[-3:])
                raise UserError(f"{field}[{i}].{role} = {name!r}: no such layer in the {role} "
                                f"(allowed: names from named_modules(), e.g. {some})")


def _every(log: Any, tag: str, epochs: int, lines: int) -> Any:
    """Log only a few of the per-epoch lines (every other line, e.g. resuming, passes)."""
    step = max(1, epochs // lines)
    prefix = f"[{tag}] epoch "

    def inner(msg: str) -> None:
        if msg.startswith(prefix):
            try:
                ep = int(msg[len(prefix):].split("/")[0])
            except ValueError:
                ep = epochs
            if ep % step and ep != epochs:
                return
        log(msg)

    return inner
