"""FP16 conversion with ONNX Runtime's converter: the model loads in ORT's CPU provider and stays close to FP32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.build.fp16 import initializer_dtypes, to_fp16
from pipeline.errors import UserError


def _export(path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5), torch.nn.Softmax(-1)).eval()
    torch.onnx.export(net, torch.zeros(1, 3, 16, 16), str(path), input_names=["input"], output_names=["probs"],
                      dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("fp16") / "m.onnx")


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_fp16_loads_and_matches_fp32(fp32, tmp_path):
    import onnx

    out = to_fp16(fp32, tmp_path / "h.onnx", block_ops=["Softmax"])
    assert out == tmp_path / "h.onnx"
    assert initializer_dtypes(out) == {"float16": 4} and initializer_dtypes(fp32) == {"float": 4}
    model = onnx.load(str(out))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    producers = {o: n for n in model.graph.node for o in n.output}
    assert producers[softmax.input[0]].op_type == "Cast", "a blocked op gets float32 through a Cast"
    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    ref, got = _run(fp32, x), _run(out, x)
    assert got.dtype == np.float32, "keep_io_types: the caller feeds and reads float32 as before"
    assert np.abs(ref - got).max() < 5e-3 and (ref.argmax(1) == got.argmax(1)).all()
    weight_bytes = [sum(len(t.raw_data) for t in onnx.load(str(p)).graph.initializer) for p in (fp32, out)]
    assert weight_bytes[1] * 2 == weight_bytes[0], "every weight is stored in half the bytes"


def test_fp16_io_types_can_be_half(fp32, tmp_path):
    out = to_fp16(fp32, tmp_path / "h.onnx", keep_io_types=False)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float16)
    assert _run(out, x).dtype == np.float16


def test_fp16_refusals(fp32, tmp_path):
    with pytest.raises(UserError, match="ONNX not found"):
        to_fp16(tmp_path / "absent.onnx", tmp_path / "h.onnx")
    with pytest.raises(UserError, match="must be a list of operator types"):
        to_fp16(fp32, tmp_path / "h.onnx", block_ops="Softmax")
    half = to_fp16(fp32, tmp_path / "h.onnx", keep_io_types=False)
    with pytest.raises(UserError, match="no float32 inputs or weights"):
        to_fp16(half, tmp_path / "hh.onnx")
    assert not (tmp_path / "hh.onnx").exists()
