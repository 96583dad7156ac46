"""Stage `distill`: Hinton knowledge distillation of the student from the teacher.

The student learns from the teacher's temperature-softened logits (KL scaled by T^2) plus an
alpha-weighted cross-entropy on the labels it may see; images without labels (`labeled_fraction`
< 1, or `data.unlabeled`) learn from the teacher alone. To show what KD gained, the same student is
also trained from scratch on the same labels with the same budget (same batch size and number of
optimiser steps), and optionally both again with only `label_scarce_fraction` of the labels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.common import labeled_subset, load_model, macs_and_params, make_model, student_train_set
from pipeline.stages.metrics import DistillMetrics, LabelScarce
from pipeline.training import teacher_logits_per_shift


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `student.pt` (KD) and, when compared, `scratch.pt`.

    Args:
        inputs: needs the `train_teacher` artifact.
        cfg: `DistillConfig`.
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = student.pt; DistillMetrics: KD and scratch accuracies on the held-out split.
    """
    from pipeline.models.checkpoint import save_checkpoint

    d, seed = inputs.data, inputs.config.seed
    teacher = load_model(inputs, "teacher", inputs.artifact("train_teacher").path)
    x, y, has_label = student_train_set(inputs)
    t_logits = teacher_logits_per_shift(teacher, x)
    files = {}

    mask = labeled_subset(y, has_label, cfg.labeled_fraction, seed)
    student, kd_acc = _kd(inputs, cfg, x, y, mask, t_logits, "distill")
    files["model"] = save_checkpoint(student, workdir / "student.pt", {"role": "student"})
    macs, params = macs_and_params(student, d.input_shape)
    sc_acc = gain = scarce = None
    if cfg.compare_scratch:
        scratch, sc_acc = _scratch(inputs, cfg, x, y, mask, len(x), "distill/scratch")
        files["scratch"] = save_checkpoint(scratch, workdir / "scratch.pt", {"role": "student-scratch"})
        gain = round((kd_acc - sc_acc) * 100, 2)
    if cfg.label_scarce_fraction:
        f = cfg.label_scarce_fraction
        few = labeled_subset(y, has_label, f, seed)
        _, kd_few = _kd(inputs, cfg, x, y, few, t_logits, f"distill/{f:.0%}-labels")
        _, sc_few = _scratch(inputs, cfg, x, y, few, len(x), f"distill/scratch-{f:.0%}-labels")
        scarce = LabelScarce(labeled_fraction=f, labeled_images=int(few.sum()), kd_accuracy=kd_few,
                             scratch_accuracy=sc_few, kd_gain_pp=round((kd_few - sc_few) * 100, 2))
    metrics = DistillMetrics(temperature=cfg.temperature, alpha=cfg.alpha, accuracy=kd_acc, params=params, macs=macs,
                             labeled_images=int(mask.sum()), images=len(x), scratch_accuracy=sc_acc,
                             kd_gain_pp=gain, label_scarce=scarce)
    return Artifact(files, "model", metrics)


def _kd(inputs, cfg, x, y, mask, t_logits, tag):
    from pipeline.training import evaluate, train

    d = inputs.data
    student = make_model(inputs, "student")
    train(
        student, x, y, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
        seed=inputs.config.seed, teacher_logits=t_logits, temperature=cfg.temperature, alpha=cfg.alpha,
        labeled_mask=mask, val=(d.val_x, d.val_y), log=_every(inputs.log, cfg.epochs), tag=tag,
    )
    acc = evaluate(student, d.test_x, d.test_y)
    inputs.log(f"[{tag}] held-out accuracy {acc * 100:.2f}% ({int(mask.sum())} labeled of {len(x)} images)")
    return student, acc


def _scratch(inputs, cfg, x, y, mask, kd_images, tag):
    """Same student, labels only, same optimiser steps as KD (so fewer labels means more epochs)."""
    from pipeline.training import evaluate, train

    d = inputs.data
    n_lab = int(mask.sum())
    kd_steps = cfg.epochs * math.ceil(kd_images / cfg.batch_size)
    epochs = max(1, round(kd_steps / max(1, math.ceil(n_lab / cfg.batch_size))))
    student = make_model(inputs, "student")
    train(
        student, x[mask], y[mask], epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, seed=inputs.config.seed, val=(d.val_x, d.val_y),
        log=_every(inputs.log, epochs), tag=tag,
    )
    acc = evaluate(student, d.test_x, d.test_y)
    inputs.log(f"[{tag}] held-out accuracy {acc * 100:.2f}% ({n_lab} labeled images, {epochs} epochs)")
    return student, acc


def _every(log, epochs: int, lines: int = 4):
    """Log only a few epoch lines, so long runs stay readable."""
    step = max(1, epochs // lines)

    def inner(msg: str) -> None:
        try:
            ep = int(msg.split("epoch ")[1].split("/")[0])
        except (IndexError, ValueError):
            ep = 0
        if ep % step == 0 or ep == epochs:
            log(msg)

    return inner


def teacher_logits_for(inputs: StageInputs, x: np.ndarray) -> np.ndarray:
    """Teacher logits on every shifted copy of `x` (used by the prune stage's KD fine-tune)."""
    teacher = load_model(inputs, "teacher", inputs.artifact("train_teacher").path)
    return teacher_logits_per_shift(teacher, x)
