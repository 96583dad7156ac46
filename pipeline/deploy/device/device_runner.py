#!/usr/bin/env python3
"""edgepipe device runner: verify a deploy bundle, build its engine (TensorRT), measure accuracy and latency.

Standalone on purpose: it needs only Python >= 3.8, numpy, and ONNX Runtime (CPU targets) or TensorRT with
cuda-python or pycuda (Jetson/GPU targets). Nothing from the edgepipe package is imported: the checks made
before anything runs (integrity, modules, the CPU's INT8 support) come from the bundle's `device_checks.py`,
shipped beside this file, and the model runs
through the bundle's copies of edgepipe's own runtimes, `ort_runtime.py` (pipeline/runtimes/ort.py) and
`trt_runtime.py` (pipeline/runtimes/trt.py), imported from the bundle folder once it is verified. A Python
that lacks a module the bundle needs is told so in one line, with what to install.

    python3 device_runner.py                      # bundle = the folder holding this file
    python3 device_runner.py --bundle DIR --out results.json --runs 500

Exit codes: 0 ok; 1 the latency budget in manifest.json was exceeded (results are still written);
2 usage error, a missing Python module, or a failure while building/running; 3 the bundle failed its
integrity check (a file's sha256 differs from manifest.json): nothing is built or run from such a bundle.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, List

sys.dont_write_bytecode = True  # keep the verified bundle folder free of files we did not ship

EXIT_BUDGET, EXIT_FAIL, EXIT_INTEGRITY = 1, 2, 3
MIN_RUNS = 200

if __package__:  # imported from the edgepipe package (tests, the host)
    from pipeline.deploy.device.device_checks import (
        REQUIREMENTS,
        IntegrityError,
        _has_module,
        check_requirements,
        full_range_refusal,
        load_and_verify,
        sha256_file,
    )
else:  # run as a script from a deploy bundle: the bundle's own device_checks.py, beside this file, loaded by
    # path (under `python -I` the script's folder is not on sys.path)
    _spec = importlib.util.spec_from_file_location("device_checks", str(Path(__file__).resolve().parent /
                                                                        "device_checks.py"))
    _checks = importlib.util.module_from_spec(_spec)
    sys.modules["device_checks"] = _checks
    _spec.loader.exec_module(_checks)
    REQUIREMENTS, IntegrityError, _has_module = _checks.REQUIREMENTS, _checks.IntegrityError, _checks._has_module
    check_requirements, full_range_refusal = _checks.check_requirements, _checks.full_range_refusal
    load_and_verify, sha256_file = _checks.load_and_verify, _checks.sha256_file

__all__ = ["REQUIREMENTS", "DeviceRunner", "IntegrityError", "check_requirements", "full_range_refusal",
           "load_and_verify", "main", "sha256_file"]

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
        raise RuntimeError(f"unknown build method {method!r} (allowed: auto, python, trtexec)")
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
        raise RuntimeError(f"engine build failed (exit {rc}); see {log_path}")
    info["engine_sha256"] = sha256_file(engine)
    report = bundle / build.get("report", "")
    if method == "python" and report.is_file():
        info["report"] = json.loads(report.read_text(encoding="utf-8"))
    return info


def measure_accuracy(infer: Callable[[Any], List[Any]], eval_path: Path, batch: int) -> dict:
    """Top-1 accuracy of `infer` (one input batch -> outputs) on the bundled eval.npz (x already
    preprocessed, y int labels)."""
    import numpy as np

    data = np.load(str(eval_path))
    x, y = data["x"], data["y"]
    correct = 0
    for i in range(0, len(x), batch):
        xb, n = x[i:i + batch], len(x[i:i + batch])
        if n < batch:  # pad the last batch: a static-shape (DLA) engine takes exactly `batch` rows
            xb = np.concatenate([xb, np.repeat(xb[-1:], batch - n, axis=0)])
        logits = np.asarray(infer(np.ascontiguousarray(xb))[0])[:n]
        correct += int((logits.argmax(axis=1) == y[i:i + n]).sum())
    return {"accuracy": correct / max(1, len(x)), "samples": int(len(x)), "batch": batch}


def is_classifier(manifest: dict) -> bool:
    """Whether the bundled model gives one (N, classes) logits output, the only kind top-1 accuracy applies to."""
    outputs = manifest.get("outputs")
    if not outputs:  # an older bundle: classification was all there was
        return True
    return len(outputs) == 1 and len(outputs[0].get("shape") or []) == 2


def describe_outputs(outs: List[Any], manifest: dict) -> List[dict]:
    """Name, shape and whether all values are finite, for each output of one inference."""
    import numpy as np

    names = [o.get("name") for o in manifest.get("outputs") or []]
    return [{"name": names[i] if i < len(names) else "output_%d" % i, "shape": list(np.shape(o)),
             "finite": bool(np.isfinite(np.asarray(o, dtype=np.float64)).all())} for i, o in enumerate(outs)]


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def classify_images(infer: Callable[[Any], List[Any]], bundle: Path, manifest: dict, folder: Path,
                    batch: int) -> List[dict]:
    """Run raw image files through the bundle's preprocess.py (the exact training recipe) and the model.

    Args:
        infer: one input batch -> outputs.
        bundle: the bundle folder (holds preprocess.py).
        manifest: the bundle manifest (preprocessing.recipe).
        folder: image files, searched recursively (sorted).
        batch: images per call (the last batch is padded for static-shape engines).
    Returns:
        One {"file", "class", "logit"} per image, in file order.
    Raises:
        ValueError: the bundle has no image recipe (array data), or the folder has no images.
    """
    import numpy as np

    recipe = (manifest.get("preprocessing") or {}).get("recipe")
    if not recipe:
        raise ValueError("--images: this model was trained on arrays, not image files: the bundle has no "
                         "preprocessing recipe to turn images into inputs")
    spec = importlib.util.spec_from_file_location("edgepipe_preprocess", str(bundle / "preprocess.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is created
    spec.loader.exec_module(mod)
    pre = mod.Preprocess.from_dict(recipe)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not p.name.startswith("."))
    if not files:
        raise ValueError("--images {}: no image files ({})".format(folder, ", ".join(IMAGE_EXTENSIONS)))
    out = []
    for i in range(0, len(files), batch):
        chunk = files[i:i + batch]
        xb = np.stack([pre.load(p) for p in chunk])
        n = len(xb)
        if n < batch:
            xb = np.concatenate([xb, np.repeat(xb[-1:], batch - n, axis=0)])
        logits = np.asarray(infer(np.ascontiguousarray(xb, dtype=np.float32))[0])[:n]
        for p, row in zip(chunk, logits):
            k = int(row.argmax())
            out.append({"file": str(p.relative_to(folder)), "class": k, "logit": float(row[k])})
    return out


def benchmark(infer: Callable[[Any], List[Any]], sample: Any, batch: int, warmup: int, runs: int) -> dict:
    """Warm up, then time `runs` single calls of `infer`; latency statistics in ms and throughput in items/s."""
    import numpy as np

    reps = -(-batch // len(sample))
    x = np.ascontiguousarray(np.concatenate([sample] * reps)[:batch])
    for _ in range(warmup):
        infer(x)
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        t0 = time.perf_counter()
        infer(x)
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


class DeviceRunner:
    """Runs a bundle on this device: verify it, check the Python modules it needs, build the engine
    (TensorRT), measure accuracy and latency through the bundled runtime, write results.json."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Args: the parsed command line (see `main`)."""
        self.args = args
        self.bundle = Path(args.bundle).resolve()
        self.out = Path(args.out) if args.out else self.bundle / "results.json"

    def run(self) -> int:
        """Verify, check modules, build, measure, write results.

        Returns:
            The exit code (0, EXIT_BUDGET, EXIT_FAIL or EXIT_INTEGRITY).
        """
        args, bundle, out = self.args, self.bundle, self.out
        started = time.time()
        if out.exists():
            out.unlink()  # a refused or failed run must not leave an older results file looking current
        try:
            manifest = load_and_verify(bundle, args.expect_manifest_sha256)
        except IntegrityError as e:
            print(f"device_runner: refusing this bundle: {e}", file=sys.stderr)
            return EXIT_INTEGRITY
        tensorrt = manifest["runtime"] == "tensorrt"
        if not check_requirements(["numpy"] if tensorrt else ["numpy", "onnxruntime"]):
            return EXIT_FAIL
        sys.path.insert(0, str(bundle))  # only now: the modules we import from the bundle are verified
        import device_facts

        results = {"format": "edgepipe-device-results/1", "verified": True, "target": manifest["target"]["name"],
                   "bundle_manifest_sha256": sha256_file(bundle / "manifest.json"),
                   "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                   "device": device_facts.collect(manifest["runtime"])}
        bench = manifest["benchmark"]
        if tensorrt:
            dla = args.dla_core if args.dla_core >= 0 else manifest["build"].get("dla_core", -1)
            if args.build != "none" or not (bundle / manifest["build"]["engine"]).is_file():
                results["build"] = build_engine(bundle, manifest, args.build if args.build != "none" else "auto",
                                                Path(args.build_log) if args.build_log else bundle / "build.log", dla)
            if not check_requirements(["tensorrt", "cuda"]):  # checked after the build: trtexec needs neither
                return EXIT_FAIL
            if dla >= 0:  # a DLA engine has one static batch size
                bench = dict(bench, batches=[manifest["build"]["dla_batch"]])
            self._measure_tensorrt(manifest, bench, dla, results)
        else:
            import platform

            cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
            refusal = full_range_refusal(manifest, cpuinfo, platform.machine())
            if refusal:
                print("device_runner: refusing to run: " + refusal, file=sys.stderr)
                return EXIT_FAIL
            self._measure_onnxruntime(manifest, bench, results)
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

    def _measure_tensorrt(self, manifest: dict, bench: dict, dla: int, results: dict) -> None:
        import trt_runtime  # the bundle's copy of pipeline/runtimes/trt.py

        options = trt_runtime.RuntimeOptions(device="cuda", dla_core=dla if dla >= 0 else None)
        with trt_runtime.TrtRuntime(str(self.bundle / manifest["build"]["engine"]), options) as rt:
            results["runtime"] = dict(rt.describe(), runtime="tensorrt")
            name = manifest["input"]["name"]
            self._measure(lambda x: rt.infer({name: x}), manifest, bench, results)

    def _measure_onnxruntime(self, manifest: dict, bench: dict, results: dict) -> None:
        import onnxruntime
        import ort_runtime  # the bundle's copy of pipeline/runtimes/ort.py

        spec = manifest["target"].get("onnxruntime") or {}  # the target's ORT settings
        threads = self.args.threads or spec.get("intra_op_threads") or 0
        available = onnxruntime.get_available_providers()
        providers = [p for p in spec.get("execution_providers") or ["CPUExecutionProvider"] if p in available]
        options = ort_runtime.RuntimeOptions(threads=int(threads) if threads else None,
                                             providers=tuple(providers or ["CPUExecutionProvider"]),
                                             graph_optimization_level=spec.get("graph_optimization_level") or "all")
        with ort_runtime.OrtRuntime(self.bundle / manifest["model"], options) as rt:
            info = rt.describe()
            results["runtime"] = {"runtime": "onnxruntime", "version": info["version"],
                                  "providers": info["providers"], "intra_op_threads": threads or "default"}
            name = rt.inputs()[0].name
            self._measure(lambda x: rt.infer({name: x}), manifest, bench, results)

    def _measure(self, infer: Callable[[Any], List[Any]], manifest: dict, bench: dict, results: dict) -> None:
        """Accuracy on eval.npz (unless --no-accuracy), then latency at each batch size, into `results`."""
        import numpy as np

        args, inp = self.args, manifest["input"]
        eval_path = self.bundle / manifest["eval"]["path"] if manifest.get("eval") else None
        classifier = is_classifier(manifest)
        if eval_path is not None and not args.no_accuracy and classifier:
            results["accuracy"] = measure_accuracy(infer, eval_path, max(bench["batches"]))
            results["accuracy"]["expected"] = manifest.get("expected", {}).get("accuracy")
        if eval_path is not None:
            sample = np.load(str(eval_path))["x"][:64].astype(inp["dtype"])
        else:  # no eval data shipped: random input of the declared shape
            sample = np.random.default_rng(0).standard_normal([1] + list(inp["shape"][1:])).astype(inp["dtype"])
        if not classifier:  # boxes, scores, masks: the user's metric runs on the host; here every output is checked
            results["outputs"] = describe_outputs(infer(np.ascontiguousarray(sample[:1])), manifest)
        results["latency_ms"] = {}
        for b in bench["batches"]:
            results["latency_ms"][f"batch_{b}"] = benchmark(infer, sample, b, args.warmup, args.runs)
        if getattr(args, "images", "") and classifier:
            results["predictions"] = classify_images(infer, self.bundle, manifest, Path(args.images),
                                                     max(bench["batches"]))


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
    ap.add_argument("--images", default="", help="also classify the raw image files in this folder (recursively) "
                    "through preprocess.py; predictions go into the results")
    args = ap.parse_args(argv)
    if args.runs < MIN_RUNS or args.warmup < 1:
        print(f"device_runner: --runs must be >= {MIN_RUNS} and --warmup >= 1", file=sys.stderr)
        return EXIT_FAIL
    try:
        return DeviceRunner(args).run()
    except Exception as e:  # one clear line for the person at the device (and for the host over SSH)
        print(f"device_runner: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
