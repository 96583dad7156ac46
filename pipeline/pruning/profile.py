"""Where the time goes: per-layer latency from ONNX Runtime's profiler (or a trtexec --dumpProfile table),
mapped back to torch modules and summed per channel group: what pruning each group can save.

The TorchScript exporter names each ONNX node after its module scope (`/features/features.1/conv/conv.1/Conv`
is module `features.1.conv.1`). ONNX Runtime's optimizer fuses the activation (and a residual Add) into the
Conv and renames it after the fused output tensor (`<tensor>_nchwc`); both names are traced back to the Conv
through the original graph.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

# Nodes ONNX Runtime folds into the Conv before them: their output still "belongs" to that Conv.
_FUSED_INTO_CONV = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Mul", "Add",
                    "BatchNormalization", "Identity"}
_WEIGHTED = {"Conv", "Gemm", "MatMul"}


def module_of_node(node_name: str) -> str | None:
    """`/features/features.1/conv/conv.1/Conv` -> `features.1.conv.1` (None without a scope).

    Args:
        node_name: an ONNX node name from torch's TorchScript exporter.
    Returns:
        The dotted module path.
    """
    segs = [s for s in node_name.split("/") if s][:-1]
    path: list[str] = []
    for seg in segs:
        # a Sequential/ModuleList child is named after its parent ("features" -> "features.1")
        if path and seg.startswith(path[-1] + "."):
            path[-1] = seg
        else:
            path.append(seg)
    return ".".join(path) or None


def _producers(model: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(tensor -> weighted node name that made it, node name -> weighted node name) over the ONNX graph."""
    made_by: dict[str, str] = {}
    node_owner: dict[str, str] = {}
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    for node in model.graph.node:
        owner = None
        if node.op_type in _WEIGHTED:
            owner = node.name
        elif node.op_type in _FUSED_INTO_CONV:
            # a residual Add has two Conv-made inputs: ONNX Runtime fuses it into the later one
            cands = [made_by[i] for i in node.input if i in made_by]
            owner = max(cands, key=lambda n: order.get(n, -1)) if cands else None
        if owner is not None:
            node_owner[node.name] = owner
            for out in node.output:
                made_by[out] = owner
    return made_by, node_owner


def ort_layer_times(onnx_bytes: bytes, input_shape: tuple[int, ...], runs: int = 30,
                    threads: int = 1) -> dict[str, float]:
    """Per-module median kernel time (ms per inference) from ONNX Runtime's profiler on the CPU provider.

    Args:
        onnx_bytes: the model (from `latency.export_bytes`).
        input_shape: (C, H, W).
        runs: profiled inferences (after 5 unprofiled-in-effect warm-ups, which are dropped).
        threads: intra-op threads.
    Returns:
        module path -> median ms per inference; time of nodes that map to no module is under "" (other).
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(onnx_bytes)
    made_by, node_owner = _producers(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="edgepipe-profile-") as tmp:
        so.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
        warm = 5
        for _ in range(warm + runs):
            sess.run(None, {name: x})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    per_node: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_node.setdefault(e["name"][: -len("_kernel_time")], []).append(e["dur"] / 1000.0)
    times: dict[str, float] = {}
    for node, durs in per_node.items():
        kept = durs[warm:] if len(durs) > warm else durs
        owner = node_owner.get(node) or made_by.get(re.sub(r"_nchwc$", "", node))
        mod = module_of_node(owner) if owner else None
        key = mod or ""
        # the median: a preempted run on a shared host adds milliseconds to one sample, not to the median
        times[key] = times.get(key, 0.0) + float(np.median(kept))
    return times


def trtexec_layer_times(profile: dict[str, Any]) -> dict[str, float]:
    """The same table from a trtexec `--dumpProfile` table (as `pipeline.bench.trtexec_parse.parse_profile`
    returns it). TensorRT names a fused layer after its ONNX nodes joined with " + "; the time goes to the
    first weighted node's module.

    Args:
        profile: {"layers": [{"name", "avg_ms", ...}], ...}.
    Returns:
        module path -> ms per inference ("" for layers with no module scope, e.g. reformatters).
    """
    times: dict[str, float] = {}
    for layer in profile.get("layers") or []:
        parts = [p.strip() for p in str(layer.get("name", "")).split(" + ")]
        # a node name is a scope path ("/a/b/Conv"); reformat layers ("Reformatting CopyNode for ...") are not
        conv = next((p for p in parts if p.startswith("/") and p.rsplit("/", 1)[-1].split("_")[0] in _WEIGHTED),
                    None)
        mod = module_of_node(conv) if conv else None
        key = mod or ""
        times[key] = times.get(key, 0.0) + float(layer.get("avg_ms") or 0.0)
    return times


def group_modules(pruner: Any) -> list[tuple[Any, list[str]]]:
    """Each prunable group's root module and the names of the Conv/Linear layers it resizes.

    Args:
        pruner: a Torch-Pruning pruner (its dependency graph and ignored layers).
    Returns:
        [(root module, [module names])].
    """
    import torch.nn as nn

    dg = pruner.DG
    out = []
    for group in dg.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
        root = group[0].dep.target.module
        names = []
        for dep, _ in group:
            for mod in (dep.source.module, dep.target.module):
                if isinstance(mod, (nn.Conv2d, nn.Linear)):
                    name = dg._module2name.get(mod)
                    if name is not None and name not in names:
                        names.append(name)
        out.append((root, names))
    return out


def group_times(groups: list[tuple[Any, list[str]]], layer_times: dict[str, float]) -> dict[Any, float]:
    """The time of the layers each group resizes (pruning a fraction r of its channels saves about r of it).

    Args:
        groups: from `group_modules`.
        layer_times: module path -> ms (from `ort_layer_times` or `trtexec_layer_times`).
    Returns:
        root module -> ms per inference (0.0 for a group none of whose layers has a measured time).
    """
    return {root: sum(layer_times.get(n, 0.0) for n in names) for root, names in groups}
