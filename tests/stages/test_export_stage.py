"""Stage export's own run: student and teacher ONNX with a dynamic batch, equal to PyTorch within atol."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from pipeline.config import ExportConfig
from pipeline.errors import BudgetExceeded, UserError
from pipeline.onnx_utils import ort_logits, ort_outputs, spatial_range
from pipeline.stages import export
from pipeline.stages.metrics import ExportMetrics


def test_exports_both_models_within_tolerance(ctx, pruned, exported):
    m = exported.metrics
    assert isinstance(m, ExportMetrics)
    assert {p.name for p in exported.files.values()} == {"student_fp32.onnx", "teacher_fp32.onnx"}
    for role, path in (("student", exported.path), ("teacher", exported.files["teacher"])):
        info = getattr(m, role)
        assert info.parity_vs_torch["max_abs_diff"] <= ctx.cfg.export.atol
        assert info.parity_vs_torch["top1_agreement"] >= ctx.cfg.export.min_top1_agreement
        assert info.file_bytes == path.stat().st_size and info.opset == ctx.cfg.export.opset
        graph = onnx.load(str(path)).graph
        assert not graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")  # dynamic batch
    # the recorded accuracy is the ONNX's own on the held-out split, and matches the pruned PyTorch model
    x, y = ctx.data.sample("test", 512)
    got = ort_logits(exported.path, x)
    assert m.accuracy == m.student.accuracy == float((got.argmax(1) == y).mean())
    assert abs(m.accuracy - pruned.metrics.accuracy) <= 1 / len(y) + 1e-9


def test_parity_beyond_atol_fails_the_stage(ctx, teacher, pruned, exported):
    diff = max(exported.metrics.student.parity_vs_torch["max_abs_diff"],
               exported.metrics.teacher.parity_vs_torch["max_abs_diff"])
    if diff == 0:
        pytest.skip("ONNX Runtime matched PyTorch bit for bit here: no tolerance below the difference")
    cfg = ctx.cfg.export.model_copy(update={"atol": diff / 2})
    with pytest.raises(BudgetExceeded, match="export.atol"):
        export.run(ctx.inputs({"train_teacher": teacher, "prune": pruned}), cfg, ctx.workdir("export_tight"))
    assert dataclasses.asdict(exported.metrics) and np.isfinite(diff)


class _Multi(torch.nn.Module):
    """Two heads from one conv; `flat` adds a Linear over the flattened map (one input size only)."""

    def __init__(self, as_dict=False, flat=False):
        super().__init__()
        self.conv, self.as_dict = torch.nn.Conv2d(2, 4, 3, padding=1), as_dict
        self.fc = torch.nn.Linear(4 * 8 * 8, 3) if flat else None

    def forward(self, x):
        y = self.conv(x)
        a = self.fc(y.flatten(1)) if self.fc is not None else y.mean((2, 3))
        b = torch.sigmoid(y)
        return {"cls": a, "mask": b} if self.as_dict else (a, b)


@pytest.mark.parametrize("as_dict, flat, names, axes", [
    (False, False, ["output_0", "output_1"], ["batch", "height", "width"]),
    (True, False, ["cls", "mask"], ["batch", "height", "width"]),
    (False, True, ["output_0", "output_1"], ["batch"]),  # a Linear over the flattened map: one size only
])
def test_multi_output_export_names_every_output_and_checks_each(tmp_path, as_dict, flat, names, axes):
    torch.manual_seed(0)
    model = _Multi(as_dict, flat).eval()
    x = np.random.default_rng(0).standard_normal((9, 2, 8, 8)).astype(np.float32)
    path = tmp_path / "m.onnx"
    _, parity = export.export_checked(model, (2, 8, 8), path, ExportConfig(), x, log=lambda *a: None)
    assert parity["output_names"] == names and parity["dynamic_axes"] == axes
    assert set(parity["outputs"]) == set(names) and parity["outputs"][names[1]]["shape"] == [9, 4, 8, 8]
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == names
    assert all(not o.type.tensor_type.shape.dim[0].HasField("dim_value") for o in graph.output)  # dynamic batch
    hw = [d.HasField("dim_value") for d in graph.input[0].type.tensor_type.shape.dim[2:]]
    assert hw == ([False, False] if "height" in axes else [True, True])
    if "height" in axes:  # the recorded range was checked, and a size inside it runs and matches PyTorch
        assert spatial_range(path) == {"min": [8, 8], "opt": [8, 8], "max": [16, 16]}
        x2 = np.random.default_rng(1).standard_normal((2, 2, 12, 16)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x2))
        ref = list(ref.values()) if as_dict else list(ref)
        for r, o in zip(ref, ort_outputs(path, x2), strict=True):
            np.testing.assert_allclose(o, r.numpy(), atol=1e-4)
    else:
        assert spatial_range(path) is None


def test_parity_failure_names_the_output_that_differs(tmp_path):
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 2, 8, 8)).astype(np.float32)
    cfg = ExportConfig(atol=1e-12)
    with pytest.raises(BudgetExceeded, match="on output '(cls|mask)' \\(export.atol = 1e-12\\)"):
        export.export_checked(_Multi(True).eval(), (2, 8, 8), tmp_path / "m.onnx", cfg, x * 1e3, log=lambda *a: None)


def test_outputs_that_are_not_tensors_are_refused():
    class Bad(torch.nn.Module):
        def forward(self, x):
            return [x.mean(), "not a tensor"]

    with pytest.raises(UserError, match="allowed: a tensor, or a tuple/list/dict of tensors"):
        export.with_named_outputs(Bad(), np.zeros((1, 1, 4, 4), np.float32))
