"""Issue 11's 2:4 check at real size: `prune.sparsity: "2:4"` on the 224 px student for a Jetson Orin target.

The `prune` stage runs with no channel pruning (`ratio: 0`) and 2:4 masks (torch.ao.pruning's
WeightNormSparsifier), KD fine-tuned for `--epochs` with the masks fixed, then folded into the weights. The
run reports teacher agreement before and after (the run's 200 test crops and the 2,000 hold-out crops of
`prune_speedup.py`) against `prune.max_accuracy_drop`, and checks that the checkpoint and its ONNX export are
2:4 sparse along the input channels. There are no sparse kernels on this CPU, so no latency is claimed here.

    .venv/bin/python benchmarks/real_size_distill.py --prepare --pipeline   # once: data, teacher, student
    .venv/bin/python benchmarks/prune_sparsity.py                           # ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from prune_speedup import REPO, hits_on, holdout, prune_once, say, stage_inputs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Prune with 2:4 masks, fine-tune, check; exit 0 when the weights are 2:4 and the drop is in budget."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO / "runs" / "real_size", help="real_size_distill.py's --out")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "prune_sparsity")
    ap.add_argument("--target", default="jetson-orin-nano")
    ap.add_argument("--epochs", type=int, default=2, help="KD fine-tune epochs with the masks fixed")
    ap.add_argument("--max-drop", type=float, default=2.0, help="prune.max_accuracy_drop (points)")
    ap.add_argument("--holdout", type=int, default=2000)
    args = ap.parse_args(argv)
    from pipeline.pruning.latency import export_bytes
    from pipeline.pruning.sparsity import is_2_4_sparse
    from pipeline.stages.common import load_model

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = stage_inputs(args.root, args.out, args.target)
    from pipeline.errors import BudgetExceeded

    try:
        run = prune_once(inputs, "sparse_2_4", {"ratio": 0.0, "sparsity": "2:4", "finetune_epochs": args.epochs,
                                                "max_accuracy_drop": args.max_drop}, args.out)
    except BudgetExceeded as e:  # the stage's own max_accuracy_drop check
        print(json.dumps({"what": "prune.sparsity 2:4 (issue 11)", "budget_exceeded": str(e)}, indent=1))
        return 1
    model = load_model(inputs, "student", Path(run["path"]))
    files, labels = holdout(args.root, args.holdout)
    student = inputs.artifact("distill").path
    hold = {n: round(float(hits_on(inputs, p, files, labels).mean()), 4)
            for n, p in (("dense", student), ("sparse_2_4", Path(run["path"])))}
    m = run["metrics"]
    result = {
        "what": "prune.sparsity 2:4 on the 224 px student (issue 11)", "target": args.target,
        "finetune_epochs": args.epochs, "max_accuracy_drop": args.max_drop,
        "sparse_layers": m.get("sparse_layers"), "params": m["params"],
        "accuracy_before": m["accuracy_before"], "accuracy": m["accuracy"], "holdout_accuracy": hold,
        "holdout_images": len(files), "seconds": round(time.perf_counter() - t0, 1),
        "checks": {
            "checkpoint_2_4": bool(is_2_4_sparse(model.state_dict())),
            "onnx_2_4": bool(is_2_4_sparse(export_bytes(model, tuple(inputs.data.input_shape)))),
            "drop_within_budget": (m["accuracy_before"] - m["accuracy"]) * 100 <= args.max_drop,
        },
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    say(f"done in {result['seconds']} s")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
