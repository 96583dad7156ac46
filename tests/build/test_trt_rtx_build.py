"""NVIDIA's ONNX parser and builder accept the ONNX we make for TensorRT targets (FP32 and S8S8 QDQ).

Uses tensorrt-rtx (TensorRT for RTX, installed by tools/install_trt_check.sh), which parses and builds
engines on a CPU-only machine; it cannot run them. Driven through our own builder (build_engine with
trt=tensorrt_rtx), so the profile/workspace/timing-cache/flag code paths run for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trt_rtx = pytest.importorskip(
    "tensorrt_rtx", reason="tensorrt-rtx not installed (tools/install_trt_check.sh VENV installs it)"
)

from pipeline.build import trt_builder  # noqa: E402
from pipeline.build.trt_builder import BuildError, BuildOptions, build_engine  # noqa: E402


class _Net(torch.nn.Module):
    """Tiny CNN with a depthwise conv and a residual add, like the pipeline's students."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.pw = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):  # noqa: ANN001, ANN201
        y = self.stem(x)
        y = torch.relu(y + self.pw(self.dw(y)))
        return self.head(y.mean((2, 3)))


def _quantize(fp32: Path, out: Path, calib: np.ndarray, quantize_bias: bool) -> Path:
    try:
        from pipeline.stages.quantize import quantize_to_qdq
        from pipeline.targets import QuantScheme
    except ImportError:
        quantize_to_qdq = None
    scheme_kw = dict(activation_type="int8", weight_type="int8", per_channel=True, reduce_range=False,
                     symmetric_activations=True, symmetric_weights=True, quantize_bias=quantize_bias)
    if quantize_to_qdq is not None:
        return Path(quantize_to_qdq(fp32, out, calib, QuantScheme(**scheme_kw)))
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):  # noqa: ANN201
            return next(self._it, None)

    quantize_static(
        str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8, per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": quantize_bias},
    )
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rtx")
    torch.manual_seed(0)
    net = _Net().eval()
    fp32 = d / "fp32.onnx"
    torch.onnx.export(
        net, torch.randn(2, 1, 16, 16), str(fp32), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
    )
    calib = np.random.default_rng(0).random((16, 1, 16, 16), dtype=np.float32)
    return {
        "fp32": fp32,
        "qdq": _quantize(fp32, d / "qdq.onnx", calib, quantize_bias=False),
        "qdq_int32_bias": _quantize(fp32, d / "qdq_bias.onnx", calib, quantize_bias=True),
    }


def _build(path: Path, tmp_path: Path, **kw) -> dict:
    opts = BuildOptions(min_batch=1, opt_batch=2, max_batch=8, workspace_mib=256, **kw)
    return build_engine(str(path), str(tmp_path / (path.stem + ".engine")), opts, trt=trt_rtx, device={})


def test_qdq_graph_is_s8s8_with_float_biases(models: dict[str, Path]) -> None:
    import onnx
    from onnx import TensorProto

    g = onnx.load(str(models["qdq"])).graph
    inits = {i.name: i for i in g.initializer}
    dq = [n for n in g.node if n.op_type == "DequantizeLinear"]
    assert dq, "no DequantizeLinear: the model was not quantized"
    types = {inits[n.input[0]].data_type for n in dq if n.input[0] in inits}
    assert TensorProto.INT32 not in types, types  # biases stay float: no int32 bias DequantizeLinear
    assert TensorProto.UINT8 not in types, types  # signed (S8S8), as TensorRT requires
    zps = [inits[n.input[2]] for n in dq if len(n.input) > 2 and n.input[2] in inits]
    assert zps and all(not onnx.numpy_helper.to_array(z).any() for z in zps)  # symmetric: zero points 0


def test_fp32_onnx_parses_and_builds(models: dict[str, Path], tmp_path: Path) -> None:
    r = _build(models["fp32"], tmp_path)
    assert Path(r["engine"]).stat().st_size == r["engine_bytes"] > 0
    assert r["explicit_int8_qdq"] is False
    assert r["shapes"]["input"] == {"min": [1, 1, 16, 16], "opt": [2, 1, 16, 16], "max": [8, 1, 16, 16]}
    print("fp32 build_seconds", r["build_seconds"])


def test_qdq_onnx_parses_and_builds(models: dict[str, Path], tmp_path: Path) -> None:
    r = _build(models["qdq"], tmp_path, timing_cache=str(tmp_path / "timing.cache"))
    assert r["explicit_int8_qdq"] is True and r["strongly_typed"] is True
    assert Path(r["engine"]).stat().st_size > 0
    assert r["timing_cache"]["saved_bytes"] > 0 and (tmp_path / "timing.cache").is_file()
    print("qdq build_seconds", r["build_seconds"])


def test_int32_bias_qdq_is_rejected_by_the_parser(models: dict[str, Path], tmp_path: Path) -> None:
    # Why TensorRT targets set quantize_bias: false. Also proves this check can fail.
    with pytest.raises(BuildError, match="parser rejected"):
        _build(models["qdq_int32_bias"], tmp_path)


def test_dla_request_without_dla_cores_fails_clearly(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="DLA cores"):
        _build(models["qdq"], tmp_path, dla_core=0)


def test_cli_builds_and_writes_report(models: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trt_builder, "import_tensorrt", lambda: trt_rtx)
    monkeypatch.setattr(trt_builder, "cuda_device_info", lambda: {})
    report = tmp_path / "build.json"
    rc = trt_builder.main(["--onnx", str(models["qdq"]), "--engine", str(tmp_path / "m.engine"),
                           "--min-batch", "1", "--opt-batch", "1", "--max-batch", "4",
                           "--workspace-mib", "128", "--opt-level", "2", "--report", str(report)])
    assert rc == 0
    data = json.loads(report.read_text())
    assert data["shapes"]["input"]["max"] == [4, 1, 16, 16] and data["builder_optimization_level"] == 2
    assert (tmp_path / "m.engine").stat().st_size > 0
