"""The TensorRT-target output of `quantize_file` (S8S8 symmetric, float biases, some layers in float, bias
corrected) still parses and builds with tensorrt-rtx, which builds engines on a CPU-only machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx not installed (tools/install_trt_check.sh)")

from pipeline.build.trt_builder import BuildOptions, build_engine  # noqa: E402
from pipeline.config import QuantizeConfig  # noqa: E402
from pipeline.int8.evaluate import ClassificationEvaluator  # noqa: E402
from pipeline.int8.qdq import weighted_nodes  # noqa: E402
from pipeline.stages.quantize import quantize_file  # noqa: E402
from pipeline.targets import load_target  # noqa: E402


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6())
        self.pw = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        y = self.stem(x)
        return self.head((y + self.pw(self.dw(y))).mean((2, 3)))


def test_searched_tensorrt_qdq_with_a_float_layer_builds(tmp_path):
    torch.manual_seed(0)
    fp32 = tmp_path / "fp32.onnx"
    torch.onnx.export(_Net().eval(), torch.randn(2, 1, 16, 16), str(fp32), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}},
                      opset_version=17, dynamo=False)
    x = np.random.default_rng(0).random((48, 1, 16, 16), dtype=np.float32)
    first = weighted_nodes(fp32)[0]["name"]
    cfg = QuantizeConfig(calibration_samples=16, max_accuracy_drop=100, min_top1_agreement=0.0)
    art = quantize_file(fp32, x[:16], ClassificationEvaluator(x[16:]), load_target("x86-gpu"), cfg, tmp_path / "q",
                        log=lambda s: None, fixed_exclusions=[first])
    assert art.metrics.fake_quant and first in art.metrics.excluded_nodes
    g = onnx.load(str(art.path)).graph
    inits = {i.name: i for i in g.initializer}
    dq_types = {inits[n.input[0]].data_type for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    assert dq_types == {onnx.TensorProto.INT8}  # S8S8, float biases (no int32 DequantizeLinear)
    r = build_engine(str(art.path), str(tmp_path / "m.engine"), BuildOptions(min_batch=1, opt_batch=1, max_batch=4,
                     workspace_mib=128), trt=trt_rtx, device={})
    assert r["explicit_int8_qdq"] is True and Path(r["engine"]).stat().st_size > 0
