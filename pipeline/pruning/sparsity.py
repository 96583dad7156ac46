"""2:4 semi-structured sparsity: in every group of 4 consecutive input channels, at most 2 weights are non-zero.

That is the pattern NVIDIA's sparse tensor cores (Ampere and newer, every Jetson Orin) run at up to twice the
math rate, and TensorRT looks for it along the INPUT-channel axis: for a conv weight [K, C, R, S], the groups
are 4 consecutive C for each (k, r, s); for a linear weight [N, C], 4 consecutive C per row. The masks come
from torch.ao.pruning's WeightNormSparsifier (keep the 2 largest |w| of each block), computed on a [K*R*S, C]
view of each weight so its (1, 4) blocks run along C. The masks stay fixed during the KD fine-tune
(torch parametrizations) and are then folded into plain weights, so the exported ONNX keeps the zeros.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

N, M = 2, 4  # at most N non-zeros in every M consecutive input channels


def eligible_layers(model: Any) -> list[tuple[str, Any]]:
    """Conv2d (groups = 1) and Linear layers whose input channels split into groups of 4.

    Depthwise and grouped convs have no input-channel reduction to sparsify; TensorRT runs them dense.
    """
    import torch.nn as nn

    out = []
    for name, mod in model.named_modules():
        conv = isinstance(mod, nn.Conv2d) and mod.groups == 1 and mod.in_channels % M == 0
        if conv or (isinstance(mod, nn.Linear) and mod.in_features % M == 0):
            out.append((name, mod))
    return out


def _as_rows(w: Any) -> Any:
    """[K, C, R, S] -> [K*R*S, C] (input channels last, contiguous); [N, C] unchanged."""
    return w.permute(0, 2, 3, 1).reshape(-1, w.shape[1]) if w.dim() == 4 else w


def mask_2_4(weight: Any) -> Any:
    """torch.ao.pruning's 2:4 magnitude mask for one weight, along its input-channel axis.

    Args:
        weight: a conv [K, C, R, S] or linear [N, C] weight, C a multiple of 4.
    Returns:
        A 0/1 float mask of the weight's shape.
    """
    import torch
    import torch.nn as nn
    from torch.ao.pruning import WeightNormSparsifier

    rows = _as_rows(weight.detach().float())
    holder = nn.Sequential(nn.Linear(rows.shape[1], rows.shape[0], bias=False))
    with torch.no_grad():
        holder[0].weight.copy_(rows)
    # sparsity_level 1.0: every (1, 4) block is sparsified, keeping its 2 largest magnitudes
    sp = WeightNormSparsifier(sparsity_level=1.0, sparse_block_shape=(1, M), zeros_per_block=M - N)
    sp.prepare(holder, [{"tensor_fqn": "0.weight"}])
    sp.step()
    mask = holder[0].parametrizations.weight[0].mask.detach().clone()
    if weight.dim() == 4:
        k, c, r, s = weight.shape
        mask = mask.reshape(k, r, s, c).permute(0, 3, 1, 2).contiguous()
    return mask.to(weight.dtype)


def apply_2_4(model: Any) -> list[str]:
    """Attach a fixed 2:4 mask (torch.ao's FakeSparsity parametrization) to every eligible layer.

    Args:
        model: the nn.Module (changed in place; training then updates only the kept weights' values).
    Returns:
        The names of the masked layers.
    """
    from torch.ao.pruning.sparsifier.utils import FakeSparsity
    from torch.nn.utils import parametrize

    names = []
    for name, mod in eligible_layers(model):
        parametrize.register_parametrization(mod, "weight", FakeSparsity(mask_2_4(mod.weight)))
        names.append(name)
    return names


def squash(model: Any) -> None:
    """Fold the masks into plain weights (zeros kept) and drop the parametrizations, so checkpoints and
    ONNX export see ordinary layers."""
    from torch.nn.utils import parametrize

    for mod in model.modules():
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)


def _rows_are_2_4(rows: Any) -> bool:
    import numpy as np

    rows = np.asarray(rows)
    if rows.shape[-1] % M:
        return False
    blocks = rows.reshape(rows.shape[0], -1, M)
    return bool((np.count_nonzero(blocks, axis=-1) <= N).all())


def _onnx_weights(model: Any) -> list[Any]:
    """Input-channel-last 2-D views of the ONNX model's Conv (group 1) and Gemm/MatMul weights."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    # QDQ models: weight <- DequantizeLinear <- int8 initializer (or <- QuantizeLinear <- float initializer)
    dq = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type in ("DequantizeLinear", "QuantizeLinear")}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}

    def tensor(name: str) -> Any:
        while name in dq:  # quantized zeros stay 0 (symmetric weights), so int8 weights keep the pattern
            name = dq[name]
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t)
        return None

    out = []
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Conv" and (attrs["group"].i if "group" in attrs else 1) == 1:
            w = tensor(node.input[1])
            if w is not None and w.ndim == 4 and w.shape[1] % M == 0:
                out.append(np.transpose(w, (0, 2, 3, 1)).reshape(-1, w.shape[1]))
        elif node.op_type in ("Gemm", "MatMul"):
            w = tensor(node.input[1])
            if w is None or w.ndim != 2:
                continue
            trans_b = node.op_type == "Gemm" and "transB" in attrs and attrs["transB"].i == 1
            w = w if trans_b else w.T  # input axis last
            if w.shape[1] % M == 0:
                out.append(w)
    return out


def is_2_4_sparse(model: Any) -> bool:
    """Whether every eligible weight is 2:4 sparse along its input-channel axis.

    Args:
        model: an ONNX file path or bytes or `onnx.ModelProto` (Conv with group 1, Gemm, MatMul weights; in a
            QDQ model, the quantized weights), or a torch state_dict (4-D conv and 2-D linear weights).
    Returns:
        True when there is at least one eligible weight and all of them are 2:4.
    """
    import numpy as np

    if isinstance(model, dict):
        views = []
        for key, t in model.items():
            if not key.endswith("weight") or getattr(t, "dim", lambda: 0)() not in (2, 4):
                continue
            w = t.detach().cpu().numpy()
            if w.shape[1] % M == 0 and w.shape[1] > 1:
                views.append(np.transpose(w, (0, 2, 3, 1)).reshape(-1, w.shape[1]) if w.ndim == 4 else w)
    else:
        import onnx

        if isinstance(model, (str, Path)):
            model = onnx.load(str(model))
        elif isinstance(model, bytes):
            model = onnx.load_from_string(model)
        views = _onnx_weights(model)
    return bool(views) and all(_rows_are_2_4(v) for v in views)
