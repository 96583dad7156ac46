"""Empirical bias correction (Nagel et al., "Data-Free Quantization", section 4.2) on the FP32 ONNX graph.

Rounding a layer's weights shifts the mean of its output: E[(W_q - W) x] = (W_q - W) E[x]. The shift is
measured with the weights the quantizer actually produced (read back from the QDQ candidate's weight
DequantizeLinear) and the layer's input channel means over calibration images (the FP32 model run by
ONNX Runtime with those inputs exposed), and subtracted from the FP32 bias; the model is then quantized
again with the same activation ranges. Working on the ONNX graph keeps it usable when only an ONNX file
is given. Edge padding is ignored (interior positions dominate the mean).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _dequantized_weights(qdq_path: Path) -> dict[str, np.ndarray]:
    """Conv node name -> the float weight its QDQ DequantizeLinear produces."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(qdq_path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    out = {}
    for n in m.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        q = inits[dq.input[0]].astype(np.float32)
        scale = inits[dq.input[1]].astype(np.float32)
        zp = inits[dq.input[2]].astype(np.float32) if len(dq.input) > 2 and dq.input[2] in inits else 0.0
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if np.ndim(scale) == 1:
            shape[axis] = -1
        out[n.name] = (q - np.reshape(zp, shape if np.ndim(zp) == 1 else [])) * np.reshape(scale, shape)
    return out


def correct_biases(fp32_path: Path, qdq_path: Path, out: Path, calib_x: np.ndarray) -> tuple[Path | None, str]:
    """Write `out`: `fp32_path` with every quantized Conv's bias corrected for its weight rounding.

    Args:
        fp32_path: the (pre-processed) FP32 ONNX the QDQ model was made from.
        qdq_path: that QDQ candidate.
        out: destination.
        calib_x: calibration inputs (a few dozen images are plenty for channel means).
    Returns:
        (out, what was done), or (None, why nothing was) when no Conv could be corrected.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    wq = _dequantized_weights(qdq_path)
    m = onnx.load(str(fp32_path))
    inits = {i.name: i for i in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv" and n.name in wq and n.input[1] in inits]
    if not convs:
        return None, "no quantized Conv with a constant weight"
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    known = {o.name for o in probe.graph.output}
    for n in convs:
        if n.input[0] not in known:
            probe.graph.output.append(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
            known.add(n.input[0])
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feed_name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    sums: dict[str, np.ndarray] = {}
    count = 0
    for i in range(0, len(calib_x), 16):
        outs = dict(zip(names, sess.run(None, {feed_name: calib_x[i:i + 16]}), strict=True))
        for n in convs:
            x = outs[n.input[0]]
            sums[n.input[0]] = sums.get(n.input[0], 0) + x.reshape(x.shape[0], x.shape[1], -1).mean(2).sum(0)
        count += min(16, len(calib_x) - i)
    changed = 0
    for n in convs:
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        mean_x = sums[n.input[0]] / count  # per input channel
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        err = (wq[n.name] - w).sum(axis=(2, 3))  # [out, in/group]
        cout, cin_g = err.shape
        mx = mean_x.reshape(group, cin_g)  # the input channels each group reads
        shift = np.einsum("gok,gk->go", err.reshape(group, cout // group, cin_g), mx).reshape(cout)
        if len(n.input) > 2 and n.input[2] in inits:
            b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32) - shift
            inits[n.input[2]].CopyFrom(numpy_helper.from_array(b.astype(np.float32), n.input[2]))
        else:
            name = n.name + "_corrected_bias"
            m.graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
            while len(n.input) < 3:
                n.input.append("")
            n.input[2] = name
        changed += 1
    onnx.save(m, str(out))
    return out, f"corrected {changed} Conv biases from {count} images"


def restore_biases(corrected: Path, original: Path, nodes: list[str], out: Path) -> Path:
    """Write `out`: `corrected` with the original biases back on `nodes` (layers kept in float have no
    weight rounding to correct for).

    Args:
        corrected: the bias-corrected FP32 ONNX.
        original: the model before correction.
        nodes: Conv node names that stay in float.
        out: destination.
    Returns:
        out.
    """
    import onnx

    m, o = onnx.load(str(corrected)), onnx.load(str(original))
    orig_nodes = {n.name: n for n in o.graph.node}
    orig_inits = {i.name: i for i in o.graph.initializer}
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.name not in nodes or n.op_type != "Conv" or len(n.input) < 3 or n.input[2] not in inits:
            continue
        src = orig_nodes.get(n.name)
        if src is not None and len(src.input) > 2 and src.input[2] in orig_inits:
            inits[n.input[2]].CopyFrom(orig_inits[src.input[2]])
            n.input[2] = src.input[2]
        else:  # the correction added a bias the original did not have: a zero bias is the original's
            inits[n.input[2]].CopyFrom(onnx.numpy_helper.from_array(
                onnx.numpy_helper.to_array(inits[n.input[2]]) * 0, n.input[2]))
    onnx.save(m, str(out))
    return out
