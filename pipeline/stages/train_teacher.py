"""Stage `train_teacher`: load the user's trained teacher, or train one when none is given.

Either way the teacher is saved as a checkpoint in the run and its held-out accuracy is measured,
so every later comparison refers to the same, recorded teacher.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.common import macs_and_params, make_model
from pipeline.stages.metrics import TrainTeacherMetrics


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `teacher.pt`.

    Args:
        inputs: context (config.teacher says builtin/factory and optional weights).
        cfg: `TrainTeacherConfig` (used only when there are no weights).
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = teacher.pt; TrainTeacherMetrics (source, accuracy, params, MACs).
    """
    from pipeline.config import resolve
    from pipeline.models import load_weights
    from pipeline.models.checkpoint import save_checkpoint
    from pipeline.training import evaluate, train

    spec, d = inputs.config.teacher, inputs.data
    model = make_model(inputs, "teacher")
    hist = None
    if spec.weights:
        load_weights(model, resolve(inputs.config_dir, spec.weights), "teacher")
        source = f"weights {spec.weights}"
    else:
        inputs.log(f"[train_teacher] no teacher weights given: training the teacher for {cfg.epochs} epochs")
        hist = train(
            model, d.train_x, d.train_y, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            weight_decay=cfg.weight_decay, seed=inputs.config.seed, val=(d.val_x, d.val_y), log=inputs.log,
            tag="train_teacher",
        )
        source = "trained here"
    model.eval()
    macs, params = macs_and_params(model, d.input_shape)
    metrics = TrainTeacherMetrics(
        source=source, train=hist, accuracy=evaluate(model, d.test_x, d.test_y),
        val_accuracy=evaluate(model, d.val_x, d.val_y), params=params, macs=macs,
    )
    path = save_checkpoint(model, workdir / "teacher.pt", {"role": "teacher"})
    return Artifact({"model": path}, "model", metrics)
