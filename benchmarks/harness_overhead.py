"""Is the harness's p50 the model's p50? Compare `measure()` with a bare `session.run` loop.

Both loops use the same onnxruntime session and the same feeds in the same process, alternating in
rounds (harness block, bare block, ...) so machine drift hits both alike; the per-iteration samples
of all rounds are pooled and their p50s compared. Exit 1 when the difference exceeds --max-overhead.

    python benchmarks/harness_overhead.py [--rounds 15] [--iterations 200] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import convnet

from pipeline.bench.harness import BenchConfig, make_feeds, measure
from pipeline.runtimes.base import RuntimeOptions
from pipeline.runtimes.ort import OrtRuntime


def bare_loop(session, feeds, n: int) -> list[float]:
    """The reference: nothing but session.run between two clock reads."""
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        session.run(None, feeds)
        out.append((clock() - t0) / 1e6)
    return out


def one_model(path: Path, rounds: int, iterations: int, threads: int) -> dict:
    import numpy as np

    with OrtRuntime(path, RuntimeOptions(threads=threads)) as rt:
        feeds = make_feeds(rt.inputs())
        sess = rt._sess()  # the very session the harness drives
        bare_loop(sess, feeds, 50)  # warm-up
        harness, bare = [], []
        for k in range(rounds):
            # alternate which loop goes first, so neither always follows the other
            if k % 2 == 0:
                harness += measure(rt, feeds, BenchConfig(warmup=5, iterations=iterations)).samples_ms
                bare += bare_loop(sess, feeds, iterations)
            else:
                bare += bare_loop(sess, feeds, iterations)
                harness += measure(rt, feeds, BenchConfig(warmup=5, iterations=iterations)).samples_ms
    h50, b50 = float(np.percentile(harness, 50)), float(np.percentile(bare, 50))
    return {
        "model": path.name,
        "samples_each": len(harness),
        "harness_p50_ms": h50,
        "bare_p50_ms": b50,
        "overhead_pct": (h50 / b50 - 1) * 100,
        "overhead_us": (h50 - b50) * 1000,
        "harness_p90_ms": float(np.percentile(harness, 90)),
        "bare_p90_ms": float(np.percentile(bare, 90)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-overhead", type=float, default=3.0, help="percent (default 3)")
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        models = {
            "convnet48x6@96 (~1 ms)": convnet(Path(d) / "convnet.onnx", 48, 6, 0, hw=96),
            "convnet32x3@32 (~35 us)": convnet(Path(d) / "tiny.onnx", 32, 3, 0, hw=32),
        }
        rows = [dict(one_model(p, a.rounds, a.iterations, a.threads), label=label) for label, p in models.items()]
    for r in rows:
        print(f"{r['label']:26s} harness p50 {r['harness_p50_ms']:.4f} ms  bare p50 {r['bare_p50_ms']:.4f} ms  "
              f"overhead {r['overhead_pct']:+.2f}% ({r['overhead_us']:+.2f} us)  n={r['samples_each']}")
    if a.json_out:
        from pipeline.fileio import write_json

        write_json(a.json_out, rows)
    main_row = rows[0]
    ok = abs(main_row["overhead_pct"]) <= a.max_overhead
    print(f"{'PASS' if ok else 'FAIL'}: |overhead| {abs(main_row['overhead_pct']):.2f}% "
          f"vs limit {a.max_overhead}% on {main_row['label']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
