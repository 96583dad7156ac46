#!/usr/bin/env python3
"""Check TensorRT end to end on a machine with an NVIDIA GPU: build, parity vs ONNX Runtime, benchmark.

    python tools/check_tensorrt_gpu.py [--onnx model.onnx] [--target x86-gpu] [--iters 200] [--out DIR]

Without --onnx it makes a tiny CNN ONNX itself (dynamic batch), so the check needs only TensorRT, a CUDA
binding (cuda-python or pycuda), onnx and onnxruntime. It builds the engine with our builder
(pipeline/build/trt_builder.py), compares the engine's outputs with ONNX Runtime's on the same random
inputs (max abs diff, top-1 agreement), benchmarks it with our runtime (pipeline/runtimes/trt.py) with host
transfers included and excluded, and prints one JSON document. Exit code 0 if parity holds, 1 if not,
2 if TensorRT or a GPU is missing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.build.parity import parity_vs_ort
from pipeline.build.trt_builder import BuildOptions, build_engine, cuda_device_info
from pipeline.runtimes.base import RuntimeOptions
from pipeline.runtimes.trt import TrtRuntime


def make_tiny_onnx(path: Path, channels: int = 8, classes: int = 10, seed: int = 0) -> Path:
    """Conv-BN-free tiny CNN (conv, depthwise conv, residual add, pool, gemm), input 'input' [N,1,16,16]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [w("w1", channels, 1, 3, 3), w("b1", channels), w("wd", channels, 1, 3, 3), w("bd", channels),
             w("wp", channels, channels, 1, 1), w("bp", channels), w("wf", classes, channels), w("bf", classes)]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], pads=[1, 1, 1, 1], group=channels),
        helper.make_node("Relu", ["cd"], ["rd"]),
        helper.make_node("Conv", ["rd", "wp", "bp"], ["cp"]),
        helper.make_node("Add", ["r1", "cp"], ["res"]),
        helper.make_node("Relu", ["res"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def benchmark(engine: Path, x: np.ndarray, transfers: str, iters: int, dla_core: int | None) -> dict:
    """Wall-clock and CUDA-event latency percentiles (ms) of TrtRuntime.infer on batch `x`."""
    with TrtRuntime(str(engine), RuntimeOptions(device="cuda", transfers=transfers, dla_core=dla_core)) as rt:
        name = rt.inputs()[0].name
        for _ in range(max(10, iters // 10)):
            rt.infer({name: x})
        wall, dev = [], []
        for _ in range(iters):
            t0 = time.perf_counter()
            rt.infer({name: x})
            wall.append((time.perf_counter() - t0) * 1e3)
            dev.append(rt.last_device_ms)
        return {"batch": int(x.shape[0]), "transfers": transfers, "iters": iters,
                "wall_ms": _percentiles(wall), "device_ms": _percentiles(dev), "runner": rt.describe()}


def _percentiles(values: list) -> dict:
    """p50/p90/p99 of `values`, rounded to 4 decimals."""
    return {f"p{q}": round(float(np.percentile(values, q)), 4) for q in (50, 90, 99)}


def run_check(onnx_path: Path | None, out_dir: Path, options: BuildOptions, iters: int = 200,
              samples: int = 32) -> dict:
    """Build, parity, benchmark; returns the JSON-able result (see module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = onnx_path or make_tiny_onnx(out_dir / "tiny.onnx")
    engine = out_dir / (Path(onnx_path).stem + ".engine")
    options.timing_cache = options.timing_cache or str(out_dir / "timing.cache")
    report = build_engine(str(onnx_path), str(engine), options)
    # A second build must hit the saved timing cache (the loaded size shows it was reused).
    rebuild = build_engine(str(onnx_path), str(out_dir / "rebuild.engine"), options)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape][1:]
    x = np.random.default_rng(1).random((samples, *shape), dtype=np.float32)
    with TrtRuntime(str(engine), RuntimeOptions(device="cuda", dla_core=options.dla_core)) as rt:
        name = rt.inputs()[0].name
        parity = parity_vs_ort(str(onnx_path), x, lambda b: rt.infer({name: b})[0], options.max_batch, name)
    bench = [benchmark(engine, x[:b], t, iters, options.dla_core)
             for b in sorted({options.min_batch, options.max_batch}) for t in ("included", "excluded")]
    return {"onnx": str(onnx_path), "build": report, "timing_cache_reloaded_bytes":
            (rebuild.get("timing_cache") or {}).get("loaded_bytes"), "parity": parity, "benchmark": bench}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", type=Path, default=None, help="model to check (default: a tiny CNN made here)")
    p.add_argument("--target", default=None, help="take batch/workspace/precision/DLA from this target")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--out", type=Path, default=None, help="folder for engines and caches (default: a temp dir)")
    p.add_argument("--max-abs-diff", type=float, default=0.05, help="parity tolerance on logits")
    args = p.parse_args(argv)
    try:
        importlib.import_module("tensorrt")
    except ImportError as e:
        print(json.dumps({"status": "skipped", "reason": f"TensorRT not importable: {e}"}))
        return 2
    device = cuda_device_info()
    if not device:
        print(json.dumps({"status": "skipped", "reason": "no CUDA GPU visible via cuda-python or pycuda"}))
        return 2
    options = BuildOptions(min_batch=1, opt_batch=4, max_batch=16, workspace_mib=1024)
    if args.target:
        from pipeline.build.recipe import build_options_for
        from pipeline.targets import load_target

        options = build_options_for(load_target(args.target), args.out or Path(tempfile.mkdtemp()))
    out = args.out or Path(tempfile.mkdtemp(prefix="edgepipe-trt-"))
    result = run_check(args.onnx, out, options, args.iters)
    ok = result["parity"]["max_abs_diff"] <= args.max_abs_diff and result["parity"]["top1_agreement"] >= 0.99
    result["status"] = "ok" if ok else "parity-failed"
    result["device"] = device
    print(json.dumps(result, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
