"""Stage train_teacher's own run: trains a teacher (or loads given weights), saves it, measures it."""

from __future__ import annotations

import torch

from pipeline.stages import train_teacher
from pipeline.stages.common import load_model
from pipeline.stages.metrics import TrainTeacherMetrics


def test_trains_saves_and_measures_the_teacher(ctx, teacher):
    m = teacher.metrics
    assert isinstance(m, TrainTeacherMetrics) and m.source == "trained here"
    assert teacher.path.name == "teacher.pt" and teacher.path.is_file()
    assert 0 < m.train["epochs"] <= 15  # what training recorded (it may stop early)
    assert m.accuracy > 0.6 and m.val_accuracy > 0.6  # three classes, bars that are easy to see: chance is 1/3
    assert m.params > 1000 and m.macs > m.params
    # the checkpoint rebuilds the model that was measured
    model = load_model(ctx.inputs(), "teacher", teacher.path).eval()
    with torch.no_grad():
        x, y = ctx.data.sample("test", ctx.data.count("test"))
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    assert (pred == y).mean() == m.accuracy


def test_given_weights_are_loaded_not_trained(ctx, teacher, tmp_path):
    state = torch.load(teacher.path, weights_only=True)["state_dict"]
    weights = tmp_path / "teacher_weights.pt"
    torch.save(state, weights)
    cfg = ctx.cfg.model_copy(update={"teacher": ctx.cfg.teacher.model_copy(update={"weights": str(weights)})})
    art = train_teacher.run(ctx.inputs(cfg=cfg), cfg.train_teacher, ctx.workdir("teacher_from_weights"))
    assert art.metrics.source == f"weights {weights}" and art.metrics.train is None
    assert "train" not in art.metrics.to_dict()
    assert art.metrics.accuracy == teacher.metrics.accuracy
