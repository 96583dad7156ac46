"""Stage distill's own run: a KD student better than chance, the scratch baseline, and few-label runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.errors import UserError
from pipeline.stages import distill
from pipeline.stages.metrics import DistillMetrics, LabelScarce


def test_distils_a_student_and_its_scratch_baseline(ctx, teacher, student):
    m = student.metrics
    assert isinstance(m, DistillMetrics)
    assert student.path.name == "student.pt" and student.files["scratch"].is_file()
    assert m.accuracy > 0.5 and m.scratch_accuracy > 0.5  # three classes: chance is 1/3
    assert m.kd_gain_pp == round((m.accuracy - m.scratch_accuracy) * 100, 2)
    assert m.images == m.labeled_images == ctx.data.count("train")
    assert (m.temperature, m.alpha) == (ctx.cfg.distill.temperature, ctx.cfg.distill.alpha)
    assert 0 < m.params < teacher.metrics.params  # the student is the smaller model
    assert m.label_scarce is None and "label_scarce" not in m.to_dict()


def test_label_scarce_comparison_and_no_scratch(ctx, teacher):
    cfg = ctx.cfg.distill.model_copy(update={"epochs": 2, "compare_scratch": False, "label_scarce_fraction": 0.1})
    art = distill.run(ctx.inputs({"train_teacher": teacher}), cfg, ctx.workdir("distill_scarce"))
    m = art.metrics
    assert set(art.files) == {"model"} and m.scratch_accuracy is None and m.kd_gain_pp is None
    assert isinstance(m.label_scarce, LabelScarce) and m.label_scarce.labeled_fraction == 0.1
    assert 3 <= m.label_scarce.labeled_images <= 0.15 * m.images  # stratified: at least one per class
    assert list(m.to_dict()) == ["temperature", "alpha", "accuracy", "params", "macs", "labeled_images", "images",
                                 "label_scarce", "training"]
    t = m.training
    assert (t.device, t.precision, t.epochs, t.epochs_planned) == ("cpu", "fp32", 2, 2) and t.images_per_s > 0


def _cfg(ctx, **update):
    return ctx.cfg.distill.model_copy(update={"epochs": 2, "compare_scratch": False, **update})


def test_interrupted_distill_resumes_at_epoch_2_and_matches_an_uninterrupted_run(ctx, teacher, monkeypatch,
                                                                                tmp_path):
    import pipeline.training as training

    cfg = _cfg(ctx)
    lines: list[str] = []
    inputs = dataclasses.replace(ctx.inputs({"train_teacher": teacher}), cache_key="k1", out_dir=tmp_path / "run",
                                 log=lines.append)
    real_fit = training.fit

    def interrupted_fit(*a, **k):
        def stop(epoch, _record):
            if epoch == 1:
                raise KeyboardInterrupt
        return real_fit(*a, **k, on_epoch_end=stop)

    monkeypatch.setattr(training, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        distill.run(inputs, cfg, ctx.workdir("distill_cut"))
    assert (tmp_path / "run" / ".resume" / "distill" / "distill.pt").is_file()
    monkeypatch.setattr(training, "fit", real_fit)
    resumed = distill.run(inputs, cfg, ctx.workdir("distill_resumed"))
    assert any(ln.startswith("resuming distill at epoch 2/2") for ln in lines), lines
    assert resumed.metrics.training.resumed_at_epoch == 2
    whole = distill.run(dataclasses.replace(inputs, out_dir=tmp_path / "other"), cfg, ctx.workdir("distill_whole"))
    a, b = torch.load(resumed.path, weights_only=True), torch.load(whole.path, weights_only=True)
    sa, sb = a.get("state_dict", a), b.get("state_dict", b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert resumed.metrics.accuracy == whole.metrics.accuracy


def test_the_teacher_only_sees_the_students_batches(ctx, teacher, monkeypatch):
    """Online KD: no per-shift precompute; every teacher forward is one training (or probe) batch."""
    from pipeline.stages import common

    sizes: list[int] = []
    real_load = common.load_model

    def spy_load(inputs, role, path):
        model = real_load(inputs, role, path)
        if role == "teacher":
            model.register_forward_hook(lambda _m, args, _out: sizes.append(len(args[0])))
        return model

    monkeypatch.setattr(distill, "load_model", spy_load)
    cfg = _cfg(ctx, epochs=1, batch_size=32)
    distill.run(ctx.inputs({"train_teacher": teacher}), cfg, ctx.workdir("distill_spy"))
    assert sizes and max(sizes) <= 32
    assert sum(sizes) <= ctx.data.count("train") + 32  # one pass over the images, not one per shift


def test_feature_pairs_name_real_layers(ctx, teacher):
    from pipeline.config import FeatureHint

    bad = _cfg(ctx, features=[FeatureHint(student="nope", teacher="layer1")])
    with pytest.raises(UserError, match=r"distill.features\[0\].student = 'nope': no such layer in the student"):
        distill.run(ctx.inputs({"train_teacher": teacher}), bad, ctx.workdir("distill_badfeat"))


def test_feature_distillation_trains_with_hint_pairs(ctx, teacher, monkeypatch):
    import torch.nn as nn

    import pipeline.training as training
    from pipeline.config import FeatureHint
    from pipeline.stages.common import load_model, make_model

    def first_conv(model):
        return next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))

    t_model = load_model(ctx.inputs(), "teacher", teacher.path)
    pair = FeatureHint(student=first_conv(make_model(ctx.inputs(), "student")), teacher=first_conv(t_model), weight=0.5)
    seen = []
    real_fit = training.fit

    def spy(*a, **k):
        seen.append(k["features"])
        return real_fit(*a, **k)

    monkeypatch.setattr(training, "fit", spy)
    cfg = _cfg(ctx, epochs=1, features=[pair])
    art = distill.run(ctx.inputs({"train_teacher": teacher}), cfg, ctx.workdir("distill_hints"))
    assert seen == [[(pair.student, pair.teacher, 0.5)]] and art.metrics.accuracy > 0
