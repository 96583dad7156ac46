"""Per-layer sensitivity, measured by executing whole models, not estimated from tensor statistics.

For every weighted layer one model is built and scored on the search slice:

- "float_one": everything quantized except that layer (the gain of keeping it in float);
- "quant_one": only that layer quantized (the loss it causes on its own).

Models run as the target runs them (`RunSpec`): the target's ORT settings on CPU targets, fake-quant
(Q/DQ as float ops) as the TensorRT proxy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

GROUPS = 8  # probes in the first, grouped pass
GROUP_ABOVE = 16  # layer counts above this are probed in groups first


def rank_layers(nodes: Sequence[dict], base: dict, build_and_score: Callable[[list[str]], dict],
                fixed: Sequence[str], mode: str = "float_one", deadline: float | None = None,
                log: Callable[[str], None] = print) -> list[dict]:
    """Score fallback units (single layers, or runs of consecutive layers on big nets) and rank them.

    Why runs: ONNX Runtime's `WeightBiasQuantization` graph optimizer re-quantizes the weights of a float
    Conv/Gemm whose input comes from a DequantizeLinear and whose output leads to a QuantizeLinear, per
    tensor, symmetric int8 (onnxruntime/core/optimizer/qdq_transformer/weight_bias_quantization.cc). A lone
    float layer between quantized ones therefore runs with per-tensor weights, worse than the per-channel
    INT8 it replaced (EfficientNet-Lite0, block 0's depthwise conv alone in float: -29 points). Only the
    first and last layer of a float run meet that pattern, so runs keep their interior in real float.

    Args:
        nodes: `qdq.weighted_nodes` rows (name, op, params, macs), in graph order.
        base: the all-quantized candidate's record (score, snr_db).
        build_and_score: exclusions -> a candidate record with "score" and "snr_db".
        fixed: exclusions that always apply (e.g. a detector's heads).
        mode: "float_one" or "quant_one" (the latter scores single layers only).
        deadline: time.monotonic() after which nothing more is measured.
        log: progress lines.
    Returns:
        [{"name", "layers", "op", "macs", "gain_score", "gain_snr_db", "measured"}], best first: by score
        gain, then SNR gain, then fewer MACs.
    """
    todo = [n for n in nodes if n["name"] not in fixed]
    names = [n["name"] for n in nodes]

    def late() -> bool:
        return deadline is not None and time.monotonic() > deadline

    def unit(run: Sequence[dict]) -> dict | None:
        if late():
            return None
        layers = [n["name"] for n in run]
        if mode == "float_one":
            rec = build_and_score(sorted(set(fixed) | set(layers)))
            gain, snr = rec["score"] - base["score"], _d(rec.get("snr_db"), base.get("snr_db"))
        else:
            rec = build_and_score(sorted(set(fixed) | (set(names) - set(layers))))
            gain, snr = 1.0 - rec["score"], -_d(rec.get("snr_db"), 200.0)
        label = layers[0] if len(layers) == 1 else f"{layers[0]} .. {layers[-1]} ({len(layers)} layers)"
        log(f"[quantize]   sensitivity {label}: score {gain * 100:+.2f} points, SNR {snr:+.2f} dB")
        return {"name": label, "layers": layers, "op": run[0]["op"], "macs": sum(n["macs"] for n in run),
                "gain_score": round(gain, 5), "gain_snr_db": round(snr, 3), "measured": True}

    out: list[dict] = []
    if mode != "float_one" or len(todo) <= GROUP_ABOVE:
        out = [u for u in (unit([n]) for n in todo) if u is not None]
    else:
        # Group testing: one probe per run of consecutive layers; each helpful run is then split in
        # halves (a 50-layer net: 8 probes + 2 per helpful run instead of 50).
        size = -(-len(todo) // GROUPS)
        groups = [u for u in (unit(todo[i:i + size]) for i in range(0, len(todo), size)) if u is not None]
        out += groups
        by_name = {n["name"]: n for n in todo}
        for g in sorted(groups, key=lambda u: (-u["gain_score"], -u["gain_snr_db"])):
            if not _helps(g) or len(g["layers"]) < 2:
                continue
            half = len(g["layers"]) // 2
            for part in (g["layers"][:half], g["layers"][half:]):
                u = unit([by_name[x] for x in part])
                if u is not None:
                    out.append(u)
    return sorted(out, key=lambda r: (-r["gain_score"], -r["gain_snr_db"], r["macs"]))


def _helps(u: dict) -> bool:
    return u["measured"] and (u["gain_score"] > 0 or (u["gain_score"] == 0 and u["gain_snr_db"] > 0.05))


def _d(a: float | None, b: float | None) -> float:
    return 0.0 if a is None or b is None else float(a) - float(b)


def fallback_order(ranked: Sequence[dict]) -> list[list[str]]:
    """The units the greedy fallback adds, in order: helpful ones only (by score gain, then SNR gain, then
    fewer MACs), each a list of layer names. A unit whose float copy measured no gain is left out: in ORT's
    QDQ graphs a lone float layer can even lose accuracy (see `rank_layers`).

    Args:
        ranked: `rank_layers` output.
    Returns:
        [[layer names]] per unit.
    """
    return [list(r["layers"]) for r in ranked if _helps(r)]


def path_for(workdir: Path, label: str) -> Path:
    """A file name for a candidate model (labels may contain characters a file name cannot)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[:80]
    return workdir / f"cand_{safe}.onnx"
