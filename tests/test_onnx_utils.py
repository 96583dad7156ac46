"""Export: dynamic batch, checked graph, and a clear error for what the exporter cannot express."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.onnx_utils import compare_logits, export_onnx, model_input_spec, ort_logits


class Eig(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.eigvals(x[:, 0]).real  # no ONNX symbolic for linalg_eigvals


def test_export_has_dynamic_batch_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    info = export_onnx(model, (1, 8, 8), tmp_path / "m.onnx", opset=17, dynamo=False, simplify=True)
    assert info["nodes_after"] <= info["nodes_before"]
    spec = model_input_spec(tmp_path / "m.onnx")
    assert spec["name"] == "input" and isinstance(spec["shape"][0], str) and spec["shape"][1:] == [1, 8, 8]
    x = np.random.default_rng(0).normal(size=(5, 1, 8, 8)).astype(np.float32)
    cmp = compare_logits(model(torch.from_numpy(x)).detach().numpy(), ort_logits(tmp_path / "m.onnx", x))
    assert cmp["max_abs_diff"] < 1e-4 and cmp["top1_agreement"] == 1.0


def test_unsupported_operator_is_a_clear_user_error(tmp_path):
    with pytest.raises(UserError, match="export: torch.onnx.export failed for Eig at opset 17.*linalg_eigvals"):
        export_onnx(Eig().eval(), (1, 4, 4), tmp_path / "e.onnx", opset=17, dynamo=False, simplify=False)
    assert not (tmp_path / "e.onnx").exists()
