"""tools/check_gpu_training.py runs end to end at tiny sizes (--smoke) on any machine and prints its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "check_gpu_training.py"


@pytest.mark.slow  # builds ResNet-50 and MobileNetV2 and runs them: ~10 s on 2 CPU cores, more with CUDA
def test_smoke_run_prints_the_measurements(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--budget-s", "120", "--out", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result == json.loads(out.read_text())
    cpu = result["cpu"]
    assert cpu["images_per_s"] > 0 and cpu["precision"] == "fp32" and cpu["threads"] >= 1
    assert cpu["measured_steps"] == 1 and result["config"]["image_size"] == 32
    assert "cuda_ep_available" in result["onnxruntime"] and result["elapsed_s"] < 120
    if result["cuda_available"]:
        assert result["cuda_amp"]["images_per_s"] > 0 and result["cuda_amp"]["channels_last"]
        assert result["precision_chosen"] in ("bf16", "fp16") and result["cuda_fp32"]["precision"] == "fp32"
    else:
        assert result["cuda_amp"] == {"skipped": "no CUDA GPU"} and result["speedup_cuda_amp_over_cpu"] is None
