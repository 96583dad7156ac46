"""edgepipe's own latency suite (`make bench`): benchmark fixed models, gate them against the
per-target baseline in benchmarks/baselines/<target>.json.

Every model is measured interleaved with a fixed reference model, and compared with the baseline
normalised by that reference per interleaving round (see benchmarks/README.md), so a busier or
slower machine moves model and reference alike. Baselines are still per target: re-record them on
the machine that runs the suite.

    python benchmarks/run_suite.py                  # compare with benchmarks/baselines/cpu.json; exit 1 on a regression
    python benchmarks/run_suite.py --update         # record / refresh the baseline
    python benchmarks/run_suite.py --target cpu --iterations 600 --max-regression 10% --gate p50,p90
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import convnet

from pipeline.bench.api import bench_model
from pipeline.bench.compare import compare_docs, parse_budget, verdict_lines
from pipeline.bench.harness import BenchConfig
from pipeline.errors import UserError
from pipeline.fileio import read_json, write_json

HERE = Path(__file__).resolve().parent
SUITE_SCHEMA = "edgepipe.suite/1"
# name -> convnet(width, depth, extra_layers, hw); deterministic weights, so sha256 is stable
MODELS = {
    "convnet_w32_d3_64px": (32, 3, 0, 64),
    "convnet_w48_d6_96px": (48, 6, 0, 96),
}
REFERENCE = (32, 4, 0, 96, 7)  # width, depth, extra, hw, seed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="cpu", help="baseline name: benchmarks/baselines/<target>.json")
    ap.add_argument("--update", action="store_true", help="record the baseline instead of comparing")
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-regression", default="10%")
    ap.add_argument("--gate", default="p50",
                    help="metrics that fail the suite (default p50; p90 is reported: against a stored baseline "
                         "it follows the machine's load, see benchmarks/README.md). E.g. --gate p50,p90 on a quiet box")
    ap.add_argument("--out", default=None, help="also write this run's results here")
    a = ap.parse_args(argv)
    baseline_path = HERE / "baselines" / f"{a.target}.json"
    cfg = BenchConfig(warmup=30, iterations=a.iterations, threads=a.threads)
    results = {}
    with tempfile.TemporaryDirectory() as d:
        w, dep, ex, hw, seed = REFERENCE
        ref = convnet(Path(d) / "reference.onnx", w, dep, ex, hw=hw, seed=seed)
        for name, (w, dep, ex, hw) in MODELS.items():
            path = convnet(Path(d) / f"{name}.onnx", w, dep, ex, hw=hw)
            doc = bench_model(str(path), threads=a.threads, cfg=cfg, reference=str(ref))
            doc["model"]["path"] = f"benchmarks/models.py:{name}"  # the temp path means nothing later
            doc["reference"]["model"] = "benchmarks/models.py:reference"
            results[name] = doc
            lat = doc["latency"]
            print(f"{name:24s} p50 {lat['p50']:.4f} ms  p90 {lat['p90']:.4f} ms  cv {lat['cv']:.1%}  "
                  f"(reference p50 {doc['reference']['latency']['p50']:.4f} ms)")
    suite = {"schema": SUITE_SCHEMA, "target": a.target, "results": results}
    if a.out:
        write_json(a.out, suite)
    if a.update:
        write_json(baseline_path, suite)
        print(f"baseline written: {baseline_path}")
        return 0
    try:
        base = read_json(baseline_path, "suite baseline")
    except UserError as e:
        print(f"edgepipe: error: {e}; record it with `python benchmarks/run_suite.py --update --target {a.target}`",
              file=sys.stderr)
        return 2
    budget = parse_budget(a.max_regression)
    failed = []
    for name, doc in results.items():
        if name not in base.get("results", {}):
            print(f"{name}: not in the baseline (run with --update to add it)")
            continue
        v = compare_docs(doc, base["results"][name], budget=budget, metrics=("p50", "p90"))
        gated = [m.strip() for m in a.gate.split(",") if m.strip()]
        print(f"--- {name} (gated: {', '.join(gated)})")
        for line in verdict_lines(v):
            print("   " + line)
        if any(v["metrics"].get(m, {}).get("regressed") for m in gated):
            failed.append(name)
    print("suite:", "REGRESSION in " + ", ".join(failed) if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
