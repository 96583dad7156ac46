#!/usr/bin/env python3
"""edgepipe device runner: verify a deploy bundle, build its engine (TensorRT), measure accuracy and latency.

Standalone on purpose: it needs only Python >= 3.8, numpy, and ONNX Runtime (CPU targets) or TensorRT
(Jetson/GPU targets, through the bundled `trt_runner.py`). Nothing from the edgepipe package is imported.

    python3 device_runner.py                      # bundle = the folder holding this file
    python3 device_runner.py --bundle DIR --out results.json --runs 500

Exit codes: 0 ok; 1 the latency budget in manifest.json was exceeded (results are still written);
2 usage error or a failure while building/running; 3 the bundle failed its integrity check (a file's sha256
differs from manifest.json): nothing is built or run from such a bundle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep the verified bundle folder free of files we did not ship

EXIT_BUDGET, EXIT_FAIL, EXIT_INTEGRITY = 1, 2, 3
MIN_RUNS = 200


class IntegrityError(Exception):
    """The bundle on the device is not the bundle that was made: refuse to run it."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(str(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_and_verify(bundle: Path, expect_manifest_sha256: str = "") -> dict:
    """Check manifest.json (against the host's hash when given) and every file it lists.

    Args:
        bundle: the bundle folder on this device.
        expect_manifest_sha256: sha256 of manifest.json as the host made it ("" to skip that check).
    Returns:
        The manifest dict.
    Raises:
        IntegrityError: naming the file, the expected and the actual hash.
    """
    mpath = bundle / "manifest.json"
    if not mpath.is_file():
        raise IntegrityError("manifest.json is missing from the bundle at {} on the device".format(bundle))
    got = sha256_file(mpath)
    if expect_manifest_sha256 and got != expect_manifest_sha256:
        raise IntegrityError(
            "sha256 mismatch for manifest.json on the device: expected {} got {}".format(expect_manifest_sha256, got)
        )
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    for rel, info in sorted(manifest.get("files", {}).items()):
        # The manifest names files inside the bundle only: refuse paths that climb out of it.
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise IntegrityError("manifest.json lists a path outside the bundle: {!r}".format(rel))
        p = bundle / rel
        if not p.is_file():
            raise IntegrityError("{} is missing from the bundle on the device ({})".format(rel, p))
        actual = sha256_file(p)
        if actual != info["sha256"]:
            raise IntegrityError(
                "sha256 mismatch for {} on the device: expected {} got {}".format(rel, info["sha256"], actual)
            )
    return manifest


def build_engine(bundle: Path, manifest: dict, method: str, log_path: Path, dla_core: int = -1) -> dict:
    """Build the TensorRT engine on this device (engines only run on the GPU/TensorRT they were built with).

    Args:
        bundle: bundle folder; the engine is written next to the ONNX.
        manifest: the verified bundle manifest (its `build` section says how).
        method: "python" (bundled trt_builder.py), "trtexec" (build_trtexec.sh) or "auto" (python when
            TensorRT's Python bindings import, else trtexec).
        log_path: where the builder's output goes.
        dla_core: DLA core to build for (-1: what the target says).
    Returns:
        {"method", "engine", "seconds", "log", "returncode"}.
    """
    import subprocess

    build = manifest["build"]
    if method == "auto":
        method = "python" if _has_module("tensorrt") else "trtexec"
    env = dict(os.environ)
    if method == "python":
        if dla_core >= 0 and build.get("python_args_dla"):
            args = build["python_args_dla"] + ["--dla-core", str(dla_core)]
        else:
            args = build["python_args"]
        # A child process, so a crash inside TensorRT is logged and reported, not fatal to the runner.
        argv = [sys.executable, str(bundle / build["python_builder"])] + list(args)
    elif method == "trtexec":
        if dla_core >= 0:
            env["DLA_CORE"] = str(dla_core)
        argv = ["sh", str(bundle / build["trtexec_script"])]
    else:
        raise RuntimeError("unknown build method {!r} (allowed: auto, python, trtexec)".format(method))
    engine = bundle / build["engine"]
    if engine.exists():
        engine.unlink()  # so a failed build cannot leave an older engine to be benchmarked
    t0 = time.perf_counter()
    with open(str(log_path), "wb") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        rc = subprocess.call(argv, cwd=str(bundle), stdout=log, stderr=subprocess.STDOUT, env=env)
    info = {"method": method, "engine": build["engine"], "seconds": round(time.perf_counter() - t0, 3),
            "log": log_path.name, "returncode": rc}
    if rc != 0 or not engine.is_file():
        raise RuntimeError("engine build failed (exit {}); see {}".format(rc, log_path))
    info["engine_sha256"] = sha256_file(engine)
    report = bundle / build.get("report", "")
    if method == "python" and report.is_file():
        info["report"] = json.loads(report.read_text(encoding="utf-8"))
    return info


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def measure_accuracy(session, eval_path: Path, batch: int) -> dict:
    """Top-1 accuracy of the model on the bundled eval.npz (x already preprocessed, y int labels)."""
    import numpy as np

    data = np.load(str(eval_path))
    x, y = data["x"], data["y"]
    correct = 0
    for i in range(0, len(x), batch):
        xb, n = x[i:i + batch], len(x[i:i + batch])
        if n < batch:  # pad the last batch: a static-shape (DLA) engine takes exactly `batch` rows
            xb = np.concatenate([xb, np.repeat(xb[-1:], batch - n, axis=0)])
        logits = np.asarray(session.infer(np.ascontiguousarray(xb))[0])[:n]
        correct += int((logits.argmax(axis=1) == y[i:i + n]).sum())
    return {"accuracy": correct / max(1, len(x)), "samples": int(len(x)), "batch": batch}


def benchmark(session, sample, batch: int, warmup: int, runs: int) -> dict:
    """Warm up, then time `runs` single inferences; latency statistics in ms and throughput in items/s."""
    import numpy as np

    reps = -(-batch // len(sample))
    x = np.ascontiguousarray(np.concatenate([sample] * reps)[:batch])
    for _ in range(warmup):
        session.infer(x)
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        t0 = time.perf_counter()
        session.infer(x)
        times[i] = (time.perf_counter() - t0) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
    mean = float(times.mean())
    return {"batch": batch, "warmup": warmup, "runs": runs, "p50": p50, "p90": p90, "p99": p99, "mean": mean,
            "min": float(times.min()), "max": float(times.max()), "std": float(times.std()),
            "throughput_items_per_s": batch * 1e3 / mean}


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(str(tmp), str(path))


def run(args) -> int:
    """Verify, build, measure, write results; returns the exit code."""
    bundle = Path(args.bundle).resolve()
    out = Path(args.out) if args.out else bundle / "results.json"
    started = time.time()
    if out.exists():
        out.unlink()  # a refused or failed run must not leave an older results file looking current
    try:
        manifest = load_and_verify(bundle, args.expect_manifest_sha256)
    except IntegrityError as e:
        print("device_runner: refusing this bundle: {}".format(e), file=sys.stderr)
        return EXIT_INTEGRITY
    sys.path.insert(0, str(bundle))  # only now: the modules we import from the bundle are verified
    import device_facts
    import device_sessions

    results = {"format": "edgepipe-device-results/1", "verified": True, "target": manifest["target"]["name"],
               "bundle_manifest_sha256": sha256_file(bundle / "manifest.json"),
               "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
               "device": device_facts.collect(manifest["runtime"])}
    inp = manifest["input"]
    bench = manifest["benchmark"]
    if manifest["runtime"] == "tensorrt":
        dla = args.dla_core if args.dla_core >= 0 else manifest["build"].get("dla_core", -1)
        if args.build != "none" or not (bundle / manifest["build"]["engine"]).is_file():
            results["build"] = build_engine(bundle, manifest, args.build if args.build != "none" else "auto",
                                            Path(args.build_log) if args.build_log else bundle / "build.log", dla)
        session = device_sessions.TrtSession(bundle / manifest["build"]["engine"], inp["name"], dla)
        if dla >= 0:  # a DLA engine has one static batch size
            bench = dict(bench, batches=[manifest["build"]["dla_batch"]])
    else:
        ort_spec = manifest["target"].get("onnxruntime") or {}
        session = device_sessions.OrtSession(bundle / manifest["model"], ort_spec, args.threads)
    results["runtime"] = session.info
    try:
        import numpy as np

        eval_path = bundle / manifest["eval"]["path"] if manifest.get("eval") else None
        if eval_path is not None and not args.no_accuracy:
            results["accuracy"] = measure_accuracy(session, eval_path, max(bench["batches"]))
            results["accuracy"]["expected"] = manifest.get("expected", {}).get("accuracy")
        if eval_path is not None:
            sample = np.load(str(eval_path))["x"][:64].astype(inp["dtype"])
        else:  # no eval data shipped: random input of the declared shape
            sample = np.random.default_rng(0).standard_normal([1] + list(inp["shape"][1:])).astype(inp["dtype"])
        results["latency_ms"] = {}
        for b in bench["batches"]:
            results["latency_ms"]["batch_{}".format(b)] = benchmark(session, sample, b, args.warmup, args.runs)
    finally:
        session.close()
    budget = manifest.get("latency_budget") or {}
    if budget.get("ms") and "batch_{}".format(budget["batch"]) in results["latency_ms"]:
        measured = results["latency_ms"]["batch_{}".format(budget["batch"])][budget["percentile"]]
        results["budget"] = dict(budget, measured_ms=measured, exceeded=measured > budget["ms"])
    results["seconds"] = round(time.time() - started, 3)
    _write_json(out, results)
    b1 = results["latency_ms"]["batch_{}".format(bench["batches"][0])]
    print("device_runner: {} on {} ({}): p50 {:.3f} ms, p99 {:.3f} ms{}; results in {}".format(
        manifest["target"]["name"], results["device"].get("model") or results["device"]["machine"],
        results["runtime"]["runtime"], b1["p50"], b1["p99"],
        ", accuracy {:.4f}".format(results["accuracy"]["accuracy"]) if "accuracy" in results else "", out))
    if results.get("budget", {}).get("exceeded"):
        print("device_runner: latency budget exceeded: {} {:.3f} ms > {} ms".format(
            budget["percentile"], results["budget"]["measured_ms"], budget["ms"]), file=sys.stderr)
        return EXIT_BUDGET
    return 0


def main(argv=None) -> int:
    """Parse arguments and run; errors other than integrity ones exit 2 with a one-line message."""
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description="Verify, build and benchmark an edgepipe deploy bundle on this device.")
    ap.add_argument("--bundle", default=str(here), help="bundle folder (default: the folder of this script)")
    ap.add_argument("--out", default="", help="results JSON (default: BUNDLE/results.json)")
    ap.add_argument("--expect-manifest-sha256", default="", help="sha256 the host computed for manifest.json")
    ap.add_argument("--build", default="auto", choices=["auto", "python", "trtexec", "none"],
                    help="TensorRT only: how to build the engine (none: reuse an engine already built here)")
    ap.add_argument("--build-log", default="", help="TensorRT build log (default: BUNDLE/build.log)")
    ap.add_argument("--dla-core", type=int, default=-1, help="TensorRT only: build/run on this DLA core")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=MIN_RUNS, help="timed runs per batch size (at least 200)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: target/default)")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the accuracy pass over eval.npz")
    args = ap.parse_args(argv)
    if args.runs < MIN_RUNS or args.warmup < 1:
        print("device_runner: --runs must be >= {} and --warmup >= 1".format(MIN_RUNS), file=sys.stderr)
        return EXIT_FAIL
    try:
        return run(args)
    except Exception as e:  # one clear line for the person at the device (and for the host over SSH)
        print("device_runner: error: {}: {}".format(type(e).__name__, e), file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
