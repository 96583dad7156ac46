"""Latency vs channel multiple for one pruned 224 px model on this CPU (issue 11: "channel counts the hardware
likes").

The model: torchvision-layout MobileNetV2 at width 0.5 (`pipeline.models.tv_mobilenet`, 1000 classes, random
weights: latency does not depend on the values), pruned by the same ratio with Torch-Pruning (L2 group
magnitude, classifier outputs kept) and its channel counts rounded to a multiple of 1 (no rounding), 8, 16
and 32, two ways:

- `tp`: Torch-Pruning's own `round_to` (every group's width rounded down to the multiple);
- `stage`: the prune stage's rule (`pipeline.pruning.budget.group_ratios`): a group whose width is a multiple
  stays one, at least one multiple; other widths get the plain ratio.

Each is exported to ONNX (batch 1) and timed on ONNX Runtime's CPU provider with one intra-op thread, all
models interleaved in one process (p50 and minimum; on a loaded, shared host the minimum is the stabler one).

    .venv/bin/python benchmarks/prune_channel_multiple.py [--ratio 0.3] [--json runs/prune_channel_multiple.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPE = (3, 224, 224)
MULTIPLES = (1, 8, 16, 32)


def pruned(model, ratio: float, multiple: int, how: str):
    """A pruned copy of `model` with widths rounded to `multiple` (`how`: "tp" or "stage")."""
    import torch
    import torch_pruning as tp

    from pipeline.pruning import budget
    from pipeline.stages.common import classifier_layers

    m = copy.deepcopy(model).eval()
    x = torch.randn(1, *SHAPE)
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    ignored = classifier_layers(m, 1000)
    if how == "tp":
        budget.make_pruner(m, x, imp, ignored, None, round_to=multiple if multiple > 1 else None, ratio=ratio).step()
    else:
        probe = budget.make_pruner(m, x, imp, ignored, None)
        ratios = budget.group_ratios(budget.groups_of(probe), ratio, multiple)
        budget.make_pruner(m, x, tp.importance.GroupMagnitudeImportance(p=2), ignored, ratios).step()
    return m.eval()


def main(argv: list[str] | None = None) -> int:
    """Build, time and print the table (and write it as JSON)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--json", type=Path, default=REPO / "runs" / "prune_channel_multiple.json")
    args = ap.parse_args(argv)
    import torch

    from pipeline.models.tv_mobilenet import mobilenet_v2
    from pipeline.pruning.latency import export_bytes, measure_many
    from pipeline.stages.common import macs_and_params

    torch.manual_seed(0)
    base = mobilenet_v2(1000, 3, args.width).eval()
    models = {"unpruned": base}
    for how in ("tp", "stage"):
        for k in MULTIPLES if how == "tp" else MULTIPLES[1:]:
            models[f"{how}/x{k}"] = pruned(base, args.ratio, k, how)
    t0 = time.perf_counter()
    stats = measure_many({n: export_bytes(m, SHAPE) for n, m in models.items()}, SHAPE, threads=1,
                         iterations=args.iterations, rounds=20)
    ref, ref_min = stats["unpruned"].p50, stats["unpruned"].min
    rows = []
    for name, m in models.items():
        macs, params = macs_and_params(m, SHAPE)
        widths = sorted({c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)})
        s = stats[name]
        rows.append({"model": name, "macs_m": round(macs / 1e6, 1), "params_k": round(params / 1e3, 1),
                     "p50_ms": round(s.p50, 3), "min_ms": round(s.min, 3), "speedup_p50": round(ref / s.p50, 2),
                     "speedup_min": round(ref_min / s.min, 2), "odd_widths": [w for w in widths if w % 8]})
    print(f"{'model':12s} {'MMACs':>7s} {'params k':>9s} {'p50 ms':>8s} {'min ms':>8s} {'x p50':>6s} {'x min':>6s}"
          "  widths not a multiple of 8")
    for r in rows:
        print(f"{r['model']:12s} {r['macs_m']:7.1f} {r['params_k']:9.1f} {r['p50_ms']:8.3f} {r['min_ms']:8.3f} "
              f"{r['speedup_p50']:6.2f} {r['speedup_min']:6.2f}  {r['odd_widths'][:8]}")
    out = {"what": "latency vs channel multiple (issue 11)", "model": f"mobilenet_v2 width {args.width}, 224 px",
           "ratio": args.ratio, "threads": 1, "batch": 1, "iterations": args.iterations,
           "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
