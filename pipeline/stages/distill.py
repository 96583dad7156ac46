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

from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.common import accuracy_on, labeled_subset, load_model, macs_and_params, make_model
from pipeline.stages.fitting import check_features, seeded_model, train_model
from pipeline.stages.metrics import DistillMetrics, LabelScarce, TrainingRun


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `student.pt` (KD) and, when compared, `scratch.pt`.

    The teacher runs online on every augmented batch the student trains on (`pipeline.training.fit`).

    Args:
        inputs: needs the `train_teacher` artifact.
        cfg: `DistillConfig`.
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = student.pt; DistillMetrics: KD and scratch accuracies on the held-out split,
        and how the KD and scratch runs trained (device, precision, threads, images/s, epochs).
    Raises:
        UserError: `distill.features` names a layer the student or teacher does not have.
    """
    from pipeline.models.checkpoint import save_checkpoint

    d, seed = inputs.data, inputs.config.seed
    teacher = load_model(inputs, "teacher", inputs.artifact("train_teacher").path)
    check_features(cfg.features, make_model(inputs, "student"), teacher)
    y, has_label = d.student_labels()
    files = {}

    mask = labeled_subset(y, has_label, cfg.labeled_fraction, seed)
    student, kd_acc, kd_run = _kd(inputs, cfg, teacher, mask, "distill")
    files["model"] = save_checkpoint(student, workdir / "student.pt", {"role": "student"})
    macs, params = macs_and_params(student, d.input_shape)
    sc_acc = gain = scarce = sc_run = None
    if cfg.compare_scratch:
        scratch, sc_acc, sc_run = _scratch(inputs, cfg, mask, len(y), "distill/scratch")
        files["scratch"] = save_checkpoint(scratch, workdir / "scratch.pt", {"role": "student-scratch"})
        gain = round((kd_acc - sc_acc) * 100, 2)
    if cfg.label_scarce_fraction:
        f = cfg.label_scarce_fraction
        few = labeled_subset(y, has_label, f, seed)
        _, kd_few, _ = _kd(inputs, cfg, teacher, few, f"distill/{f:.0%}-labels")
        _, sc_few, _ = _scratch(inputs, cfg, few, len(y), f"distill/scratch-{f:.0%}-labels")
        scarce = LabelScarce(labeled_fraction=f, labeled_images=int(few.sum()), kd_accuracy=kd_few,
                             scratch_accuracy=sc_few, kd_gain_pp=round((kd_few - sc_few) * 100, 2))
    metrics = DistillMetrics(temperature=cfg.temperature, alpha=cfg.alpha, accuracy=kd_acc, params=params, macs=macs,
                             labeled_images=int(mask.sum()), images=len(y), scratch_accuracy=sc_acc,
                             kd_gain_pp=gain, label_scarce=scarce, training=kd_run, scratch_training=sc_run)
    return Artifact(files, "model", metrics)


def _kd(inputs, cfg, teacher, mask, tag):
    """The student trained by online KD from `teacher` (labels where `mask`), and its held-out accuracy."""
    student = seeded_model(inputs, "student")
    stats = train_model(inputs, "distill", tag, student, mask=mask, epochs=cfg.epochs,
                        batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=inputs.config.seed,
                        teacher=teacher, temperature=cfg.temperature, alpha=cfg.alpha, features=cfg.features,
                        patience=cfg.patience)
    acc = accuracy_on(inputs, student)
    inputs.log(f"[{tag}] held-out accuracy {acc * 100:.2f}% ({int(mask.sum())} labeled of {len(mask)} images)")
    return student, acc, TrainingRun.of(stats)


def _scratch(inputs, cfg, mask, kd_images, tag):
    """Same student, labels only, same optimiser steps as KD (so fewer labels means more epochs)."""
    n_lab = int(mask.sum())
    kd_steps = cfg.epochs * math.ceil(kd_images / cfg.batch_size)
    epochs = max(1, round(kd_steps / max(1, math.ceil(n_lab / cfg.batch_size))))
    student = seeded_model(inputs, "student")
    stats = train_model(inputs, "distill", tag, student, mask=mask, epochs=epochs,
                        batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=inputs.config.seed,
                        patience=cfg.patience)
    acc = accuracy_on(inputs, student)
    inputs.log(f"[{tag}] held-out accuracy {acc * 100:.2f}% ({n_lab} labeled images, {epochs} epochs)")
    return student, acc, TrainingRun.of(stats)
