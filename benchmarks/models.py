"""Benchmark models built in code with onnx.helper from seeded weights, so the bytes (and sha256)
are the same on every machine and no model file is committed.

`convnet(width, depth, extra_layers)` is a small NCHW conv stack (input "input" [N,3,32,32], output
"logits" [N,10]). A slower variant is the same net with more real work: `extra_layers` adds 3x3
conv+ReLU blocks at full width before the classifier.
"""

from __future__ import annotations

from pathlib import Path


def convnet(path: str | Path, width: int = 32, depth: int = 3, extra_layers: int = 0, seed: int = 0,
            hw: int = 32) -> Path:
    """Write the conv net to `path` and return it.

    Args:
        width: channels of every conv.
        depth: conv+ReLU blocks (the first two stride 2).
        extra_layers: additional full-width 3x3 conv+ReLU blocks (the "made slower" knob).
        seed: weight seed.
        hw: input height and width.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur, cin = "input", 3
    blocks = depth + extra_layers
    for i in range(blocks):
        w = (rng.standard_normal((width, cin, 3, 3)) * (2.0 / (9 * cin)) ** 0.5).astype(np.float32)
        b = np.zeros(width, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        stride = 2 if i < min(2, depth) else 1
        nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1],
                                      strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        cur, cin = f"r{i}", width
    nodes.append(helper.make_node("GlobalAveragePool", [cur], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    fc = (rng.standard_normal((width, 10)) / width ** 0.5).astype(np.float32)
    inits.append(numpy_helper.from_array(fc, "fc"))
    nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["logits"]))
    graph = helper.make_graph(
        nodes, "edgepipe_bench_convnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, hw, hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgepipe-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
