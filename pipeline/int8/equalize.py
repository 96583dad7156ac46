"""Cross-layer equalization (Nagel et al., "Data-Free Quantization", section 4.1) on the FP32 ONNX graph.

For Conv1 -> ReLU-like -> Conv2 (Conv2 regular or depthwise), output channel i of Conv1 is divided by
s_i and input channel i of Conv2 multiplied by it, with s_i = sqrt(r1_i / r2_i) (r = the channel's
largest |weight|), so both weights get the same per-channel range: exact because ReLU(x / s) = ReLU(x) / s
for s > 0. ReLU6 (Clip 0..6) is not scale-invariant: clip(a / s, 0, 6) * s = clip(a, 0, 6 s), which equals
clip(a, 0, 6) only where a never exceeds 6 min(1, s). A ReLU6 pair is therefore scaled only when Conv1's
calibrated maximum stays below 6 (the clip never fires on the calibration data), and then every s_i is
raised to at least that maximum / 6; pairs whose clip fires are left alone and counted in the message.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _const(inits: dict, name: str):
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name]) if name in inits else None


def equalize(model: Path, out: Path, stats) -> tuple[Path | None, str]:
    """Write `out`: `model` with every eligible Conv -> act -> Conv pair equalized.

    Args:
        model: the (pre-processed, BN-folded) FP32 ONNX.
        out: destination.
        stats: `calibrate.ActivationStats` of `model` (the Conv outputs' calibrated maxima, for ReLU6).
    Returns:
        (out, what was done), or (None, why not) when no pair qualified.
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    hist = stats.snapshots[stats.sample_counts[-1]].histogram_dict
    outputs = {o.name for o in g.output}
    done, clipped = 0, 0
    for c1 in list(g.node):
        if c1.op_type != "Conv" or c1.input[1] not in inits or c1.output[0] in outputs:
            continue
        act = consumers.get(c1.output[0], [])
        if len(act) != 1 or act[0].op_type not in ("Relu", "Clip") or act[0].output[0] in outputs:
            continue
        act = act[0]
        c2 = consumers.get(act.output[0], [])
        if len(c2) != 1 or c2[0].op_type != "Conv" or c2[0].input[0] != act.output[0] or c2[0].input[1] not in inits:
            continue
        c2 = c2[0]
        w1, w2 = _const(inits, c1.input[1]), _const(inits, c2.input[1])
        g1 = next((a.i for a in c1.attribute if a.name == "group"), 1)
        g2 = next((a.i for a in c2.attribute if a.name == "group"), 1)
        ch = w1.shape[0]
        depthwise2 = g2 == ch and w2.shape[1] == 1
        if not (g2 == 1 or depthwise2) or (g2 == 1 and w2.shape[1] != ch):
            continue
        r1 = np.abs(w1).reshape(ch, -1).max(1)
        w2_in = w2 if depthwise2 else w2.transpose(1, 0, 2, 3)  # Conv2's input channels first
        r2 = np.abs(w2_in).reshape(ch, -1).max(1)
        s = np.sqrt(np.maximum(r1, 1e-12) / np.maximum(r2, 1e-12))
        if act.op_type == "Clip":
            lo = _const(inits, act.input[1]) if len(act.input) > 1 and act.input[1] else None
            hi = _const(inits, act.input[2]) if len(act.input) > 2 and act.input[2] else None
            if lo is not None and float(lo) != 0.0:
                continue
            if hi is not None:
                a_max = float(hist[c1.output[0]][3]) if c1.output[0] in hist else np.inf
                if not a_max < float(hi):  # the clip fires on calibration data: scaling would change outputs
                    clipped += 1
                    continue
                s = np.minimum(np.maximum(s, a_max / float(hi)), 1.0) if a_max > 0 else np.minimum(s, 1.0)
        s = s.astype(np.float32)
        w1 = w1 / s.reshape(-1, 1, 1, 1)
        w2 = w2 * (s.reshape(-1, 1, 1, 1) if depthwise2 else s.reshape(1, -1, 1, 1))
        inits[c1.input[1]].CopyFrom(numpy_helper.from_array(w1.astype(np.float32), c1.input[1]))
        inits[c2.input[1]].CopyFrom(numpy_helper.from_array(w2.astype(np.float32), c2.input[1]))
        if len(c1.input) > 2 and c1.input[2] in inits:
            b1 = _const(inits, c1.input[2]) / s
            inits[c1.input[2]].CopyFrom(numpy_helper.from_array(b1.astype(np.float32), c1.input[2]))
        done += 1
        del g1  # groups of Conv1 do not matter: its output channels are what is scaled
    skipped = f"; {clipped} ReLU6 pair(s) left alone (their clip fires on calibration data)" if clipped else ""
    if not done:
        return None, "no Conv -> ReLU -> Conv pair could be equalized exactly" + skipped
    onnx.save(m, str(out))
    return out, f"equalized {done} Conv pair(s){skipped}"
