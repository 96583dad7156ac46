"""Interleaved measurement in a spawned process leaves this process's ONNX Runtime untouched."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from pipeline.bench.harness import BenchConfig
from pipeline.bench.isolated import measure_onnx_interleaved
from pipeline.onnx_utils import export_onnx
from pipeline.runtimes.base import RuntimeOptions


def test_isolated_interleaved_measures_and_keeps_parent_sessions_working(tmp_path):
    paths = {}
    for name, width in (("small", 4), ("big", 16)):
        model = torch.nn.Sequential(torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, 3))
        paths[name] = str(tmp_path / f"{name}.onnx")
        export_onnx(model.eval(), (1, 8, 8), tmp_path / f"{name}.onnx", opset=17, dynamo=False, simplify=False)
    x = np.zeros((2, 1, 8, 8), np.float32)
    out = measure_onnx_interleaved(paths, {n: {"input": x} for n in paths}, BenchConfig(warmup=2, iterations=20),
                                   RuntimeOptions(threads=1))
    assert out["thread_pool"] == "shared"
    assert set(out["stats"]) == {"small", "big"} and all(s["iterations"] == 20 for s in out["stats"].values())
    assert all(s["batch"] == 2 and s["p50"] > 0 for s in out["stats"].values())
    # ONNX Runtime forbids per-session pools once a global pool exists: the parent must be unaffected
    sess = ort.InferenceSession(paths["small"], ort.SessionOptions(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": x})[0].shape == (2, 3)
