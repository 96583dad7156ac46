"""Stage prune's own run: fewer parameters and MACs, a model that still works, and the switched-off case."""

from __future__ import annotations

import dataclasses
import platform

import pytest
import torch

from pipeline.stages import prune
from pipeline.stages.common import load_model
from pipeline.stages.metrics import PruneMetrics


def test_prunes_channels_and_fine_tunes(ctx, student, pruned):
    m = pruned.metrics
    assert isinstance(m, PruneMetrics) and m.pruned
    assert m.params < m.params_before and m.macs < m.macs_before
    assert m.params_before == student.metrics.params and m.accuracy_before == student.metrics.accuracy
    assert m.params_reduction == round(m.params_before / m.params, 2) > 1
    assert m.accuracy > 0.4  # still better than chance (1/3) after losing 40 % of its channels
    model = load_model(ctx.inputs(), "student", pruned.path).eval()
    assert sum(p.numel() for p in model.parameters()) == m.params
    with torch.no_grad():
        assert model(torch.from_numpy(ctx.data.sample("test", 4)[0])).shape == (4, ctx.data.num_classes)


def test_disabled_pruning_keeps_the_student(ctx, teacher, student):
    cfg = ctx.cfg.prune.model_copy(update={"enabled": False})
    art = prune.run(ctx.inputs({"train_teacher": teacher, "distill": student}), cfg, ctx.workdir("prune_off"))
    m = art.metrics
    assert not m.pruned and m.params == m.params_before and m.accuracy == m.accuracy_before
    assert m.params_reduction is None and "params_reduction" not in m.to_dict()


def _run(ctx, teacher, student, name, device="cpu", **update):
    cfg = ctx.cfg.prune.model_copy(update=update)
    return prune.run(ctx.inputs({"train_teacher": teacher, "distill": student}, target=device), cfg,
                     ctx.workdir(name))


def test_macs_target_is_met_and_recorded(ctx, teacher, student):
    from pipeline.config import PruneTarget

    goal = int(student.metrics.macs * 0.8)  # 16-channel groups stay whole at the cpu multiple (16)
    art = _run(ctx, teacher, student, "prune_macs", target=PruneTarget(macs=goal), finetune_epochs=1)
    m = art.metrics
    assert m.pruned and m.macs <= goal and m.target == {"kind": "macs", "value": goal}
    assert m.search and any(step["holds"] for step in m.search) and m.latency_before_ms > 0 and m.latency_ms > 0
    assert m.round_to == ctx.inputs().target.channel_multiple
    # the default allocation: groups chosen by damage per MAC saved, their ratios recorded by module name
    assert m.allocation == "uniform" and m.group_ratios and max(m.group_ratios.values()) > 0
    again = PruneMetrics.from_dict(m.to_dict())  # the cached record reads back
    assert again == m


def test_sensitivity_allocation_prunes_groups_unevenly_to_the_target(ctx, teacher, student):
    from pipeline.config import PruneTarget

    goal = int(student.metrics.macs * 0.8)
    m = _run(ctx, teacher, student, "prune_sens", target=PruneTarget(macs=goal), finetune_epochs=0,
             allocation="sensitivity", round_to=1).metrics
    assert m.pruned and m.macs <= goal and m.allocation == "sensitivity"
    assert len(set(m.group_ratios.values())) > 1  # each group its own share, not one ratio


def test_a_latency_target_for_a_gpu_target_says_it_is_measured_on_this_host(ctx, teacher, student):
    from pipeline.config import PruneTarget

    lines = []
    inputs = ctx.inputs({"train_teacher": teacher, "distill": student}, target="jetson-orin-nano")
    inputs = dataclasses.replace(inputs, log=lines.append)
    cfg = ctx.cfg.prune.model_copy(update={"target": PruneTarget(latency_ms=1000.0), "finetune_epochs": 0,
                                           "search_steps": 2})
    m = prune.run(inputs, cfg, ctx.workdir("prune_orin_ms")).metrics
    assert "not on the target (jetson-orin-nano: tensorrt, aarch64)" in m.measured_on
    assert any("warning" in ln and "milliseconds do not" in ln for ln in lines)
    cpu = _run(ctx, teacher, student, "prune_cpu_ms", target=PruneTarget(latency_ms=1000.0), finetune_epochs=0,
               search_steps=2).metrics
    assert cpu.measured_on.startswith("ONNX Runtime on this host's")
    if platform.machine().lower() in ("x86_64", "amd64"):  # the cpu target is x86_64: this host is the target
        assert "not on the target" not in cpu.measured_on


def test_target_accuracy_miss_is_budget_exceeded_with_numbers(ctx, teacher, student, monkeypatch):
    from pipeline.config import PruneTarget
    from pipeline.errors import BudgetExceeded

    scores = iter([0.9, 0.5])  # held-out accuracy before, then after the fine-tune: a 40-point drop
    monkeypatch.setattr(prune, "accuracy_on", lambda inputs, model: next(scores))
    with pytest.raises(BudgetExceeded, match=r"accuracy fell 40.00 points \(90.00% -> 50.00%\), more than "
                                             r"prune.max_accuracy_drop = 2.0; relax prune.target"):
        _run(ctx, teacher, student, "prune_drop", target=PruneTarget(macs=int(student.metrics.macs * 0.8)),
             finetune_epochs=0, max_accuracy_drop=2.0)


def test_unreachable_speedup_is_budget_exceeded(ctx, teacher, student):
    from pipeline.config import PruneTarget
    from pipeline.errors import BudgetExceeded

    # a 2x8x8 model sits at ONNX Runtime's per-call floor: no pruning makes it 50x faster
    with pytest.raises(BudgetExceeded, match=r"target speedup = 50 not reached"):
        _run(ctx, teacher, student, "prune_fast", target=PruneTarget(speedup=50.0), search_steps=3)


def test_2_4_sparsity_is_refused_without_sparse_tensor_cores(ctx, teacher, student):
    from pipeline.errors import UserError

    for device in ("cpu", "jetson-xavier-nx"):
        with pytest.raises(UserError, match="needs sparse tensor cores"):
            _run(ctx, teacher, student, f"prune_24_{device}", device=device, sparsity="2:4")


def test_2_4_sparsity_on_orin_exports_2_4_weights(ctx, teacher, student):
    from pipeline.pruning.latency import export_bytes
    from pipeline.pruning.sparsity import is_2_4_sparse

    art = _run(ctx, teacher, student, "prune_24", device="jetson-orin-nano", ratio=0.0, sparsity="2:4",
               finetune_epochs=3, max_accuracy_drop=10.0)
    m = art.metrics
    assert m.sparsity == "2:4" and m.sparse_layers > 0 and m.params == m.params_before
    assert m.accuracy_before - m.accuracy <= 0.10  # within the configured budget (10 points)
    model = load_model(ctx.inputs(), "student", art.path)
    assert is_2_4_sparse(model.state_dict())
    assert is_2_4_sparse(export_bytes(model, ctx.data.input_shape))
