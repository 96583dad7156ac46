"""Issue 11's acceptance run: `prune.target: {speedup: 2.0}` vs ratio-based pruning tuned to the same latency.

On the real-size student of `real_size_distill.py` (torchvision MobileNetV2 width 0.35, 224 px, KD-trained
from the pretrained MobileNetV2 teacher on crops of real photos; labels are the teacher's top-1, so accuracy
is agreement with the teacher), the `prune` stage runs three times on the `cpu` target:

- budget: `target: {speedup: 2.0}` with the defaults (`allocation: uniform`: one ratio, searched on
  measured speed-up; channel counts rounded to the target's multiple).
- sensitivity: the same target with `allocation: sensitivity` (per-group shares from the measured damage
  curves and ONNX Runtime's per-layer profile).
- ratio: plain `prune.ratio` (no target), tuned by hand the way a user would: a grid of ratios 0.20-0.60
  pruned and timed against the unpruned student, and the one whose measured speed-up is closest to the
  budget model's is fine-tuned: "ratio-based pruning tuned to the same measured latency".

All are KD fine-tuned for the same bounded number of epochs (`--epochs`, default 2, on the 600 labeled +
600 unlabeled crops). The final numbers are p50 latencies of the FP32 ONNX models at batch 1 on ONNX
Runtime's CPU provider with one intra-op thread, all models interleaved in one process (and their minima:
on a shared host preemption inflates the p50 of the longer model most; the search decides on minima), and
each model's agreement with the teacher on the run's 200 test crops and on `--holdout` more crops drawn
from their own random stream (default 2,000: 200 crops cannot tell 0.5 points apart), with paired counts
(images only one of two models gets right) and McNemar's exact two-sided p-value.

    .venv/bin/python benchmarks/real_size_distill.py --prepare --pipeline   # once: data, teacher, student
    .venv/bin/python benchmarks/prune_speedup.py                            # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))


def say(msg: str) -> None:
    """A progress line on stderr."""
    print(f"{time.strftime('%H:%M:%S')} [prune-speedup] {msg}", file=sys.stderr, flush=True)


def stage_inputs(root: Path, out: Path, target: str = "cpu") -> Any:
    """StageInputs for the prune stage from the real-size run (its config, data, teacher and student)."""
    from pipeline.config import load_config
    from pipeline.data import load_data
    from pipeline.stages.base import Artifact, StageInputs
    from pipeline.targets import load_target

    run = root / "runs" / "images"
    teacher, student = run / "train_teacher" / "teacher.pt", run / "distill" / "student.pt"
    if not (teacher.is_file() and student.is_file()):
        raise SystemExit(f"{student} not found: run `benchmarks/real_size_distill.py --prepare --pipeline` first")
    cfg, base = load_config(root / "config_images.yaml")
    arts = {"train_teacher": Artifact({"model": teacher}, "model"), "distill": Artifact({"model": student}, "model")}
    return StageInputs(arts, cfg, load_target(target), load_data(cfg.data, base, cfg=cfg), base, out,
                       lambda line: say(line))


def prune_once(inputs: Any, name: str, update: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run the prune stage with `update` applied to the config's prune section; its metrics and file."""
    from pipeline.stages import prune

    cfg = inputs.config.prune.model_copy(update=update)
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    art = prune.run(inputs, cfg, work)
    m = art.metrics.to_dict()
    say(f"{name}: speed-up p50 x{m.get('speedup')} min x{m.get('speedup_min')}, accuracy {m['accuracy']:.3f}, "
        f"params {m['params']}")
    return {"metrics": m, "path": str(art.path), "seconds": round(time.perf_counter() - t0, 1)}


def final_latency(inputs: Any, paths: dict[str, Path], iterations: int) -> dict[str, Any]:
    """Interleaved p50/p90 (ms) of the FP32 ONNX of each checkpoint, one thread, one process."""
    from pipeline.pruning.latency import export_bytes, measure_many
    from pipeline.stages.common import load_model

    shape = tuple(inputs.data.input_shape)
    models = {n: export_bytes(load_model(inputs, "student", p), shape) for n, p in paths.items()}
    stats = measure_many(models, shape, threads=1, iterations=iterations, rounds=20)
    return {n: {"p50_ms": round(s.p50, 3), "min_ms": round(s.min, 3), "p90_ms": round(s.p90, 3),
                "cv": round(s.cv or 0, 3)} for n, s in stats.items()}


def holdout(root: Path, count: int, seed: int = 0) -> tuple[list[Path], Any]:
    """`count` extra crops labelled by the teacher (classes the training crops have), made once and kept."""
    import csv

    import numpy as np

    sys.path.insert(0, str(HERE))
    import real_size_data as rsd

    folder, listing = root / "holdout", root / "holdout.csv"
    if listing.is_file():
        rows = list(csv.DictReader(listing.open(encoding="utf-8")))
        if len(rows) == count:
            return [root / r["path"] for r in rows], np.array([int(r["label"]) for r in rows], np.int64)
    say(f"drawing {count} hold-out crops, labelled by the teacher")
    size = json.loads((root / "prepared.json").read_text())["size"]
    allowed = {int(r["label"]) for r in csv.DictReader((root / "train.csv").open(encoding="utf-8"))}
    teacher = rsd.load_teacher(root / "weights" / rsd.WEIGHTS_FILE)
    if folder.exists():
        for f in folder.iterdir():
            f.unlink()
    split = rsd.labelled_split(folder, "holdout", count, rsd.load_photos(), seed,
                               rsd.CropSpec(short=rsd.short_side(size)), teacher, size, allowed)
    rsd.write_csv(listing, split["files"], split["labels"])
    return split["files"], split["labels"]


def hits_on(inputs: Any, path: Path, files: list[Path], labels: Any) -> Any:
    """Per-image correctness (bool array) of a checkpoint on the hold-out crops (the pipeline's eval view)."""
    import numpy as np
    import torch

    from pipeline.stages.common import load_model

    sys.path.insert(0, str(HERE))
    import real_size_data as rsd

    pre = rsd.eval_preprocess(inputs.data.input_shape[-1])
    model = load_model(inputs, "student", path).eval()
    pred = []
    with torch.no_grad():
        for i in range(0, len(files), 64):
            x = torch.from_numpy(np.stack([pre.load(f) for f in files[i:i + 64]]))
            pred.append(model(x).argmax(1).numpy())
    return np.concatenate(pred) == labels


def mcnemar(a: Any, b: Any) -> dict[str, Any]:
    """Paired comparison: images only `a` gets right, only `b`, and McNemar's exact two-sided p-value."""
    from math import comb

    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"only_first": only_a, "only_second": only_b, "p_value": round(p, 4)}


def tuned_ratio(inputs: Any, goal: float, multiple: int) -> dict[str, Any]:
    """The uniform `prune.ratio` (grid 0.20-0.60, step 0.02) whose pruned copy's measured speed-up (minima,
    interleaved with the unpruned student) is closest to `goal`, and every point measured."""
    import torch
    import torch_pruning as tp

    from pipeline.pruning import budget, latency
    from pipeline.stages.common import classifier_layers, load_model

    shape = tuple(inputs.data.input_shape)
    student = load_model(inputs, "student", inputs.artifact("distill").path).eval()
    example = torch.from_numpy(inputs.data.sample("train", 2)[0])
    reference = latency.export_bytes(student, shape)
    with torch.no_grad():
        n_out = int(student(example).shape[1])
    points = []
    for i in range(21):
        ratio = round(0.20 + 0.02 * i, 2)
        model, _ = budget.pruned_copy(student, example, lambda: tp.importance.GroupMagnitudeImportance(p=2),
                                      lambda m: classifier_layers(m, n_out), ratio, multiple)
        t = latency.measure_pair(reference, latency.export_bytes(model, shape), shape)
        points.append({"ratio": ratio, "speedup_min": round(t.speedup_min, 3), "speedup_p50": round(t.speedup, 3)})
    best = min(points, key=lambda p: abs(p["speedup_min"] - goal))
    say(f"ratio closest to x{goal:.3f}: {best['ratio']} (x{best['speedup_min']})")
    return {"ratio": best["ratio"], "grid": points}


def main(argv: list[str] | None = None) -> int:
    """Run A and B, measure, print and write the JSON summary; exit 0 when the acceptance holds."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO / "runs" / "real_size", help="real_size_distill.py's --out")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "prune_speedup")
    ap.add_argument("--speedup", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=2, help="KD fine-tune epochs (both runs)")
    ap.add_argument("--iterations", type=int, default=300, help="timed runs per model in the final measurement")
    ap.add_argument("--holdout", type=int, default=2000, help="extra teacher-labelled crops for the comparison")
    args = ap.parse_args(argv)
    from pipeline.config import PruneTarget

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = stage_inputs(args.root, args.out)
    common = {"finetune_epochs": args.epochs, "max_accuracy_drop": 100.0}  # measured here, not gated
    a = prune_once(inputs, "budget", dict(common, target=PruneTarget(speedup=args.speedup)), args.out)
    c = prune_once(inputs, "sensitivity", dict(common, target=PruneTarget(speedup=args.speedup),
                                               allocation="sensitivity"), args.out)
    tuning = tuned_ratio(inputs, a["metrics"]["speedup_min"], a["metrics"]["round_to"])
    b = prune_once(inputs, "ratio", dict(common, ratio=tuning["ratio"]), args.out)
    b["tuning"] = tuning
    student = inputs.artifact("distill").path
    paths = {"unpruned": student, "budget": Path(a["path"]), "sensitivity": Path(c["path"]),
             "ratio": Path(b["path"])}
    lat = final_latency(inputs, paths, args.iterations)
    base, base_min = lat["unpruned"]["p50_ms"], lat["unpruned"]["min_ms"]
    files, labels = holdout(args.root, args.holdout)
    hits = {n: hits_on(inputs, p, files, labels) for n, p in paths.items()}
    result = {
        "what": "prune.target speedup vs ratio-based pruning tuned to the same latency (issue 11)",
        "settings": {"speedup": args.speedup, "finetune_epochs": args.epochs, "threads": 1, "batch": 1,
                     "iterations": args.iterations, "target": "cpu", "round_to": a["metrics"].get("round_to")},
        "latency": lat,
        "speedup": {n: round(base / v["p50_ms"], 3) for n, v in lat.items()},
        "speedup_min": {n: round(base_min / v["min_ms"], 3) for n, v in lat.items()},
        "accuracy_before": a["metrics"]["accuracy_before"],
        "accuracy": {n: r["metrics"]["accuracy"] for n, r in (("budget", a), ("sensitivity", c), ("ratio", b))},
        "params": {n: r["metrics"]["params"] for n, r in (("budget", a), ("sensitivity", c), ("ratio", b))},
        "holdout_accuracy": {n: round(float(h.mean()), 4) for n, h in hits.items()},
        "holdout_images": len(files),
        "holdout_paired": {"budget_vs_ratio": mcnemar(hits["budget"], hits["ratio"]),
                           "sensitivity_vs_ratio": mcnemar(hits["sensitivity"], hits["ratio"])},
        "budget": a, "sensitivity": c, "ratio": b, "seconds": round(time.perf_counter() - t0, 1),
    }
    sp, sp_min = result["speedup"]["budget"], result["speedup_min"]["budget"]
    result["checks"] = {
        "speedup_p50_within_10pct": abs(sp - args.speedup) <= 0.1 * args.speedup,
        "speedup_min_within_10pct": abs(sp_min - args.speedup) <= 0.1 * args.speedup,
        "budget_accuracy_at_least_ratio": result["holdout_accuracy"]["budget"] >= result["holdout_accuracy"]["ratio"],
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    keys = ("latency", "speedup", "speedup_min", "accuracy_before", "accuracy", "params", "holdout_accuracy",
            "holdout_paired", "checks", "seconds")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
