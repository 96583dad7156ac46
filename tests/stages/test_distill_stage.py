"""Stage distill's own run: a KD student better than chance, the scratch baseline, and few-label runs."""

from __future__ import annotations

from pipeline.stages import distill
from pipeline.stages.metrics import DistillMetrics, LabelScarce


def test_distils_a_student_and_its_scratch_baseline(ctx, teacher, student):
    m = student.metrics
    assert isinstance(m, DistillMetrics)
    assert student.path.name == "student.pt" and student.files["scratch"].is_file()
    assert m.accuracy > 0.5 and m.scratch_accuracy > 0.5  # three classes: chance is 1/3
    assert m.kd_gain_pp == round((m.accuracy - m.scratch_accuracy) * 100, 2)
    assert m.images == m.labeled_images == len(ctx.data.train_x)
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
                                 "label_scarce"]
