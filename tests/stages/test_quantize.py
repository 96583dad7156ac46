"""INT8 QDQ follows the target's scheme, and accuracy is checked against the FP32 model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from pipeline.onnx_utils import compare_logits, export_onnx, ort_logits
from pipeline.stages.quantize import quantize_to_qdq, sensitive_nodes
from pipeline.targets import load_target


@pytest.fixture()
def fp32_onnx(tmp_path, external_models):
    torch.manual_seed(0)
    model = external_models.make_student(3, 2).eval()
    path = tmp_path / "fp32.onnx"
    export_onnx(model, (2, 8, 8), path, opset=17, dynamo=False, simplify=True)
    return path


def qdq_types(path):
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    zp_types, bias_dq = set(), False
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits:
            zp_types.add(str(inits[n.input[2]].dtype))
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int32:
            bias_dq = True
    return zp_types, bias_dq, inits, m


def test_cpu_scheme_is_u8s8_with_quantized_bias(fp32_onnx, tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 2, 8, 8)).astype(np.float32)
    out = quantize_to_qdq(fp32_onnx, tmp_path / "q.onnx", x, load_target("cpu").quantization, calib_samples=32)
    zp, bias_dq, _, _ = qdq_types(out)
    assert zp == {"uint8"} and bias_dq
    cmp = compare_logits(ort_logits(fp32_onnx, x), ort_logits(out, x))
    assert cmp["top1_agreement"] > 0.8


def test_tensorrt_scheme_is_symmetric_s8s8_with_float_bias(fp32_onnx, tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 2, 8, 8)).astype(np.float32)
    scheme = load_target("jetson-orin-nano").quantization
    out = quantize_to_qdq(fp32_onnx, tmp_path / "q.onnx", x, scheme, calib_samples=32)
    zp, bias_dq, inits, m = qdq_types(out)
    assert zp == {"int8"} and not bias_dq
    # symmetric: every activation zero point is 0
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits:
            assert not inits[n.input[2]].any()


def test_excluded_nodes_stay_float(fp32_onnx, tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 2, 8, 8)).astype(np.float32)
    first = sensitive_nodes(fp32_onnx)[0]
    out = quantize_to_qdq(fp32_onnx, tmp_path / "q.onnx", x, load_target("cpu").quantization, nodes_to_exclude=first)
    m = onnx.load(str(out))
    producers = {o: n for n in m.graph.node for o in n.output}
    conv = next(n for n in m.graph.node if n.name == first[0])
    weight_src = producers.get(conv.input[1])
    assert weight_src is None or weight_src.op_type != "DequantizeLinear"
