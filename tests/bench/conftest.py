"""Shared fixtures for the benchmark tests: a tiny ONNX model built in code."""

import numpy as np
import pytest


def write_tiny_onnx(path, batch_dim="N"):
    """input [N, 4] float32 -> logits [N, 3] (one MatMul)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch_dim, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch_dim, 3])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture
def tiny_model(tmp_path):
    return write_tiny_onnx(tmp_path / "m.onnx")
