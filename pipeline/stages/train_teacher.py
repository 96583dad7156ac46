"""Stage `train_teacher`: load the user's trained teacher, or train one when none is given.

Either way the teacher is saved as a checkpoint in the run and its held-out accuracy is measured,
so every later comparison refers to the same, recorded teacher.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.common import accuracy_on, macs_and_params
from pipeline.stages.metrics import TrainingRun, TrainTeacherMetrics


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `teacher.pt`.

    Args:
        inputs: context (config.teacher says builtin/factory and optional weights).
        cfg: `TrainTeacherConfig` (used only when there are no weights).
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = teacher.pt; TrainTeacherMetrics (source, accuracy, params, MACs, how it trained).
    """
    from pipeline.config import resolve
    from pipeline.models import load_weights
    from pipeline.models.checkpoint import save_checkpoint
    from pipeline.stages.fitting import seeded_model, train_model

    spec, d = inputs.config.teacher, inputs.data
    model = seeded_model(inputs, "teacher")
    hist = run = None
    if spec.weights:
        load_weights(model, resolve(inputs.config_dir, spec.weights), "teacher")
        # a `model:` config: this is the trained model itself, the FP32 reference every later stage compares with
        source = f"{'model: ' if getattr(inputs.config, 'model', None) is not None else ''}weights {spec.weights}"
    else:
        inputs.log(f"[train_teacher] no teacher weights given: training the teacher for {cfg.epochs} epochs")
        stats = train_model(inputs, "train_teacher", "train_teacher", model,
                            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            seed=inputs.config.seed, patience=cfg.patience, log_lines=None)
        hist = {k: stats[k] for k in ("epochs", "final_loss", "val_accuracy")}
        run = TrainingRun.of(stats)
        source = "trained here"
    model.eval()
    macs, params = macs_and_params(model, d.input_shape)
    metrics = TrainTeacherMetrics(
        source=source, train=hist, accuracy=accuracy_on(inputs, model),
        val_accuracy=accuracy_on(inputs, model, "val"), params=params, macs=macs, training=run,
    )
    path = save_checkpoint(model, workdir / "teacher.pt", {"role": "teacher"})
    return Artifact({"model": path}, "model", metrics)
