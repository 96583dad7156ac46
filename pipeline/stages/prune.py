"""Stage `prune`: dependency-aware structured channel pruning with Torch-Pruning, then KD fine-tune.

Torch-Pruning's dependency graph keeps coupled layers consistent: channels removed from a conv are
removed from the BatchNorm after it, the depthwise conv that consumes it, every branch of a residual
add, and the squeeze-excite layers that scale it. The classifier's outputs are never pruned.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import BudgetExceeded, UserError
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.common import accuracy_on, classifier_layers, labeled_subset, load_model, macs_and_params
from pipeline.stages.metrics import PruneMetrics


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `pruned.pt`.

    Args:
        inputs: needs `distill` (the student) and `train_teacher` (for the KD fine-tune).
        cfg: `PruneConfig`.
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = pruned.pt; PruneMetrics: params/MACs/accuracy before and after.
    Raises:
        BudgetExceeded: the fine-tuned pruned student lost more than `max_accuracy_drop` points.
    """
    import torch
    import torch_pruning as tp

    from pipeline.models.checkpoint import save_checkpoint
    from pipeline.stages.fitting import train_model
    from pipeline.stages.metrics import TrainingRun

    d, seed = inputs.data, inputs.config.seed
    student = load_model(inputs, "student", inputs.artifact("distill").path)
    macs0, params0 = macs_and_params(student, d.input_shape)
    acc0 = accuracy_on(inputs, student)
    before = dict(ratio=cfg.ratio, params_before=params0, macs_before=macs0, accuracy_before=acc0)
    if not cfg.enabled or cfg.ratio == 0:
        metrics = PruneMetrics(**before, params=params0, macs=macs0, accuracy=acc0, pruned=False)
        path = save_checkpoint(student, workdir / "pruned.pt", {"role": "student", "pruned": False})
        return Artifact({"model": path}, "model", metrics)

    torch.manual_seed(seed)
    example = torch.from_numpy(d.sample("train", 2)[0])
    importance = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "random": lambda: tp.importance.RandomImportance(),
    }[cfg.importance]()
    student.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            student, example, importance=importance, pruning_ratio=cfg.ratio, global_pruning=cfg.global_pruning,
            iterative_steps=cfg.iterative_steps, ignored_layers=classifier_layers(student, d.num_classes),
            round_to=cfg.round_to,
        )
    except Exception as e:  # Torch-Pruning cannot trace the model's dependency graph
        raise UserError(_cannot_prune(e)) from None
    y, has_label = d.student_labels()
    teacher = load_model(inputs, "teacher", inputs.artifact("train_teacher").path)
    mask = labeled_subset(y, has_label, inputs.config.distill.labeled_fraction, seed)
    dcfg = inputs.config.distill
    steps, run = cfg.iterative_steps, None
    for step in range(steps):
        try:
            pruner.step()
        except Exception as e:
            raise UserError(_cannot_prune(e)) from None
        macs, params = macs_and_params(student, d.input_shape)
        inputs.log(f"[prune] step {step + 1}/{steps}: params {params0} -> {params}, MACs {macs0} -> {macs}")
        epochs = max(0, round(cfg.finetune_epochs / steps))
        if epochs:
            tag = "prune" if steps == 1 else f"prune/step{step + 1}"
            stats = train_model(inputs, "prune", tag, student, mask=mask, epochs=epochs,
                                batch_size=dcfg.batch_size, lr=cfg.lr, weight_decay=dcfg.weight_decay,
                                seed=seed + step, teacher=teacher, temperature=dcfg.temperature, alpha=dcfg.alpha,
                                log_lines=2)
            run = TrainingRun.of(stats)
    student.eval()
    macs, params = macs_and_params(student, d.input_shape)
    acc = accuracy_on(inputs, student)
    inputs.log(f"[prune] fine-tuned: held-out accuracy {acc0 * 100:.2f}% -> {acc * 100:.2f}%")
    metrics = PruneMetrics(**before, params=params, macs=macs, accuracy=acc, pruned=True,
                           params_reduction=round(params0 / max(1, params), 2),
                           macs_reduction=round(macs0 / max(1, macs), 2), training=run)
    drop = (acc0 - acc) * 100
    if drop > cfg.max_accuracy_drop:
        raise BudgetExceeded(
            f"prune: accuracy fell {drop:.2f} points ({acc0 * 100:.2f}% -> {acc * 100:.2f}%), more than "
            f"prune.max_accuracy_drop = {cfg.max_accuracy_drop}; lower prune.ratio or raise prune.finetune_epochs"
        )
    path = save_checkpoint(student, workdir / "pruned.pt", {"role": "student", "pruned": True})
    return Artifact({"model": path}, "model", metrics)


def _cannot_prune(e: Exception) -> str:
    return (f"prune: Torch-Pruning could not prune the student ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "set prune.enabled: false to skip pruning, or use a student built from standard layers")
