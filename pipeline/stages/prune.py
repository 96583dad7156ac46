"""Stage `prune`: dependency-aware structured channel pruning with Torch-Pruning, then KD fine-tune.

Torch-Pruning's dependency graph keeps coupled layers consistent: channels removed from a conv are
removed from the BatchNorm after it, the depthwise conv that consumes it, every branch of a residual
add, and the squeeze-excite layers that scale it. The classifier's outputs are never pruned.

How much goes where (`pipeline.pruning`): a fixed `ratio`, or a `target` budget (latency_ms, speedup,
macs, params) reached by a bisection over pruned copies, measured on ONNX Runtime's CPU provider on
this host (one thread, interleaved with the unpruned student; a device reachable over SSH is not
measured: host only). With a target, `allocation: uniform` (the default, the more accurate one measured)
prunes every group by the same searched ratio; `sensitivity` gives each group its share, those whose pruning
hurts the outputs least per millisecond (ONNX Runtime's per-layer profile), MAC or parameter saved first
(`pipeline.pruning.sensitivity`).
Widths are rounded to `round_to` (default: the target's `channel_multiple`). `sparsity: "2:4"` adds
2:4 masks (torch.ao.pruning) for sparse tensor cores, fixed through the fine-tune and folded in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import BudgetExceeded, UserError
from pipeline.pruning.budget import TIMED
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.common import accuracy_on, classifier_layers, labeled_subset, load_model, macs_and_params
from pipeline.stages.metrics import PruneMetrics


def run(inputs: StageInputs, cfg: Any, workdir: Path) -> Artifact:
    """Produce `pruned.pt`.

    Args:
        inputs: needs `distill` (the student) and `train_teacher` (for the KD fine-tune); the target gives
            the channel multiple and whether 2:4 sparsity is allowed.
        cfg: `PruneConfig`.
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = pruned.pt; PruneMetrics: params/MACs/accuracy before and after, and with a
        `target` the measured latency before/after and the search steps.
    Raises:
        BudgetExceeded: the target cannot be reached, or the fine-tuned student lost more than
            `max_accuracy_drop` points.
        UserError: Torch-Pruning cannot trace the model; 2:4 sparsity on a target without sparse tensor cores.
    """
    import torch

    from pipeline.models.checkpoint import save_checkpoint
    from pipeline.pruning import sparsity

    d, seed = inputs.data, inputs.config.seed
    sparse = cfg.sparsity == "2:4"
    if cfg.enabled and sparse:
        _check_sparse_target(inputs.target)
    student = load_model(inputs, "student", inputs.artifact("distill").path)
    macs0, params0 = macs_and_params(student, d.input_shape)
    acc0 = accuracy_on(inputs, student)
    before = dict(ratio=cfg.ratio, params_before=params0, macs_before=macs0, accuracy_before=acc0)
    if not cfg.enabled or (cfg.ratio == 0 and cfg.target is None and not sparse):
        metrics = PruneMetrics(**before, params=params0, macs=macs0, accuracy=acc0, pruned=False)
        path = save_checkpoint(student, workdir / "pruned.pt", {"role": "student", "pruned": False})
        return Artifact({"model": path}, "model", metrics)

    torch.manual_seed(seed)
    multiple = cfg.round_to or inputs.target.channel_multiple
    extra: dict[str, Any] = {"round_to": multiple}
    if cfg.target is not None:
        student, extra = _to_target(inputs, cfg, student, multiple, extra)
        before["ratio"] = extra.pop("strength")  # the searched base ratio (per-group ratios in `search`)
        steps = 1
    else:
        steps = cfg.iterative_steps if cfg.ratio > 0 else 1
    run_ = _prune_and_finetune(inputs, cfg, student, steps, multiple, sparse)
    if sparse:
        sparsity.squash(student)  # masks folded into plain weights: checkpoints and ONNX keep the zeros
        extra.update(sparsity="2:4", sparse_layers=len(sparsity.eligible_layers(student)))
    student.eval()
    macs, params = macs_and_params(student, d.input_shape)
    acc = accuracy_on(inputs, student)
    inputs.log(f"[prune] fine-tuned: held-out accuracy {acc0 * 100:.2f}% -> {acc * 100:.2f}%")
    metrics = PruneMetrics(**before, params=params, macs=macs, accuracy=acc, pruned=True,
                           params_reduction=round(params0 / max(1, params), 2),
                           macs_reduction=round(macs0 / max(1, macs), 2), training=run_, **extra)
    drop = (acc0 - acc) * 100
    if drop > cfg.max_accuracy_drop:
        how = "relax prune.target" if cfg.target is not None else "lower prune.ratio"
        raise BudgetExceeded(
            f"prune: accuracy fell {drop:.2f} points ({acc0 * 100:.2f}% -> {acc * 100:.2f}%), more than "
            f"prune.max_accuracy_drop = {cfg.max_accuracy_drop}; {how} or raise prune.finetune_epochs"
        )
    path = save_checkpoint(student, workdir / "pruned.pt", {"role": "student", "pruned": True,
                                                             "sparsity": cfg.sparsity})
    return Artifact({"model": path}, "model", metrics)


def _importance(cfg: Any) -> Any:
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "random": lambda: tp.importance.RandomImportance(),
    }[cfg.importance]


def _prune_and_finetune(inputs: StageInputs, cfg: Any, student: Any, steps: int, multiple: int,
                        sparse: bool) -> Any:
    """Ratio pruning in `steps` (none when a target already pruned the student or ratio is 0), 2:4 masks
    before the last fine-tune, KD fine-tune after each step. Returns the last TrainingRun (or None)."""
    import torch

    from pipeline.pruning import budget, sparsity
    from pipeline.stages.fitting import train_model
    from pipeline.stages.metrics import TrainingRun

    d, seed, dcfg = inputs.data, inputs.config.seed, inputs.config.distill
    ratio_pruning = cfg.target is None and cfg.ratio > 0
    pruner = None
    if ratio_pruning:
        example = torch.from_numpy(d.sample("train", 2)[0])
        student.eval()
        ignored = classifier_layers(student, _outputs(student, example))
        try:
            if cfg.global_pruning:  # one ranking over all groups: Torch-Pruning's own rounding
                pruner = budget.make_pruner(student, example, _importance(cfg)(), ignored, None, steps,
                                            round_to=cfg.round_to, ratio=cfg.ratio, global_pruning=True)
            else:
                probe = budget.make_pruner(student, example, _importance(cfg)(), ignored, None)
                ratios = budget.group_ratios(budget.groups_of(probe), cfg.ratio, multiple)
                pruner = budget.make_pruner(student, example, _importance(cfg)(), ignored, ratios, steps)
        except Exception as e:  # Torch-Pruning cannot trace the model's dependency graph
            raise UserError(_cannot_prune(e)) from None
    teacher = load_model(inputs, "teacher", inputs.artifact("train_teacher").path)
    y, has_label = d.student_labels()
    mask = labeled_subset(y, has_label, dcfg.labeled_fraction, seed)
    macs0, params0 = macs_and_params(student, d.input_shape)
    run_ = None
    for step in range(steps):
        if pruner is not None:
            try:
                pruner.step()
            except Exception as e:
                raise UserError(_cannot_prune(e)) from None
            macs, params = macs_and_params(student, d.input_shape)
            inputs.log(f"[prune] step {step + 1}/{steps}: params {params0} -> {params}, MACs {macs0} -> {macs}")
        if sparse and step == steps - 1:
            names = sparsity.apply_2_4(student)
            inputs.log(f"[prune] 2:4 masks on {len(names)} conv/linear layers (fixed during the fine-tune)")
        epochs = max(0, round(cfg.finetune_epochs / steps))
        if epochs:
            tag = "prune" if steps == 1 else f"prune/step{step + 1}"
            stats = train_model(inputs, "prune", tag, student, mask=mask, epochs=epochs,
                                batch_size=dcfg.batch_size, lr=cfg.lr, weight_decay=dcfg.weight_decay,
                                seed=seed + step, teacher=teacher, temperature=dcfg.temperature, alpha=dcfg.alpha,
                                log_lines=2)
            run_ = TrainingRun.of(stats)
    return run_


def _to_target(inputs: StageInputs, cfg: Any, student: Any, multiple: int,
               extra: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Search the pruned copy that meets `cfg.target`; measure its latency against the unpruned student."""
    import torch

    from pipeline.pruning import budget, latency

    d, kind = inputs.data, cfg.target.kind
    shape = tuple(d.input_shape)
    example = torch.from_numpy(d.sample("train", 2)[0])
    student.eval()
    reference = latency.export_bytes(student, shape)

    def measure(model: Any) -> dict[str, float]:
        macs, params = macs_and_params(model, shape)
        got = {"macs": float(macs), "params": float(params)}
        if kind in TIMED:
            t = latency.measure_pair(reference, latency.export_bytes(model, shape), shape)
            # decided on minima (see latency.Timing: robust on a shared host); p50s recorded beside them
            got.update(latency_ms=t.candidate_min_ms, speedup=t.speedup_min, p50_ms=t.candidate_ms,
                       reference_p50_ms=t.reference_ms, speedup_p50=t.speedup)
        return got

    measured_on = None
    if kind in TIMED:
        measured_on, on_target = _measured_on(inputs.target)
        if not on_target:
            inputs.log(f"[prune] warning: {measured_on}; a speed-up carries over roughly, milliseconds do not")
    try:
        n_out = _outputs(student, example)

        def ignored(m: Any) -> list:
            return classifier_layers(m, n_out)

        allocation = None
        if cfg.allocation == "sensitivity":
            allocation = _allocation(inputs, cfg, student, example, ignored, multiple,
                                     reference if kind in TIMED else None)
        found = budget.search(student, example, budget.Budget(kind, cfg.target.value, cfg.target_tolerance),
                              measure, _importance(cfg), ignored, allocation, multiple,
                              max_steps=cfg.search_steps, log=inputs.log)
    except BudgetExceeded:
        raise
    except Exception as e:  # Torch-Pruning cannot trace the model's dependency graph
        raise UserError(_cannot_prune(e)) from None
    final = latency.measure_pair(reference, latency.export_bytes(found.model, shape), shape, iterations=200,
                                 rounds=20)
    inputs.log(f"[prune] target {kind} {cfg.target.value:g}: p50 {final.reference_ms:.3f} -> "
               f"{final.candidate_ms:.3f} ms (x{final.speedup:.2f}), min {final.reference_min_ms:.3f} -> "
               f"{final.candidate_min_ms:.3f} ms (x{final.speedup_min:.2f}) after {len(found.steps)} candidates")
    extra = dict(extra, strength=round(found.strength, 4), target={"kind": kind, "value": cfg.target.value},
                 search=found.steps, latency_before_ms=round(final.reference_ms, 4),
                 latency_ms=round(final.candidate_ms, 4), speedup=round(final.speedup, 3),
                 latency_min_before_ms=round(final.reference_min_ms, 4),
                 latency_min_ms=round(final.candidate_min_ms, 4), speedup_min=round(final.speedup_min, 3),
                 allocation=cfg.allocation, group_ratios=found.ratios, measured_on=measured_on)
    return found.model, extra


def _allocation(inputs: StageInputs, cfg: Any, student: Any, example: Any, ignored: Any, multiple: int,
                reference: bytes | None) -> Any:
    """`sensitivity.allocate` over this student's measured curves: strength -> group name -> ratio."""
    import torch

    from pipeline.pruning import budget, profile, sensitivity

    shape = tuple(inputs.data.input_shape)
    images = torch.from_numpy(inputs.data.sample("train", sensitivity.IMAGES, seed=inputs.config.seed)[0])
    curves = sensitivity.curves(student, example, images, _importance(cfg), ignored, multiple, log=inputs.log)
    times = None
    if reference is not None:
        probe = budget.make_pruner(student, example, _importance(cfg)(), ignored(student), None)
        names = probe.DG._module2name
        per_group = profile.group_times(profile.group_modules(probe), profile.ort_layer_times(reference, shape))
        times = {names[root]: t for root, t in per_group.items()}
    table, steps = sensitivity.savings(curves, cfg.target.kind, times), sensitivity.quanta(curves)
    return lambda strength: sensitivity.allocate(table, strength, steps)


def _measured_on(target: Any) -> tuple[str, bool]:
    """Where a latency / speed-up target is measured, and whether that is the target's own runtime: ONNX
    Runtime on this host's CPU is, only for an ONNX Runtime target of this host's architecture."""
    from pipeline.isa import host_arch

    host = host_arch()
    where = f"ONNX Runtime on this host's {host} CPU"
    if target.runtime == "onnxruntime" and target.arch == host:
        return where, True
    return f"{where}, not on the target ({target.name}: {target.runtime}, {target.arch})", False


def _outputs(model: Any, example: Any) -> int:
    """The model's logit count: the label space the data reports can be smaller (classes never seen in the
    data), and the classifier must keep every output the checkpoint has."""
    import torch

    with torch.no_grad():
        return int(model.eval()(example).shape[1])


def _check_sparse_target(target: Any) -> None:
    spec = getattr(target, "tensorrt", None)
    if spec is None or not spec.sparsity_2_4:
        what = f"GPU {spec.gpu} (compute {spec.compute_capability})" if spec else f"runtime {target.runtime}"
        raise UserError(
            f"prune.sparsity = '2:4' needs sparse tensor cores (Ampere or newer GPUs, Jetson Orin), but target "
            f"{target.name!r} ({what}) has none, so 2:4 weights would only cost accuracy there; allowed: "
            "prune.sparsity: none, or a target with tensorrt.sparsity_2_4: true (x86-gpu, jetson-orin-*)")


def _cannot_prune(e: Exception) -> str:
    return (f"prune: Torch-Pruning could not prune the student ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "set prune.enabled: false to skip pruning, or use a student built from standard layers")


def target_facts(target, cfg) -> dict:
    """What of the target the pruned model depends on, for the stage's cache key.

    Args:
        target: the run's Target.
        cfg: `PruneConfig`.
    Returns:
        The channel multiple when `round_to` comes from the target, and whether the GPU has 2:4 sparse tensor cores
        when 2:4 sparsity is asked for (it is refused otherwise): targets that agree share the stage's result.
    """
    facts = {}
    if cfg is not None and cfg.round_to is None:
        facts["channel_multiple"] = target.channel_multiple
    if cfg is not None and cfg.sparsity == "2:4":
        facts["sparsity_2_4"] = bool(target.tensorrt and target.tensorrt.sparsity_2_4)
    return facts
