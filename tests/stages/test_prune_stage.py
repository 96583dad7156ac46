"""Stage prune's own run: fewer parameters and MACs, a model that still works, and the switched-off case."""

from __future__ import annotations

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
