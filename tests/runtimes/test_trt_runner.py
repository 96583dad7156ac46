"""TrtRunner: option validation, portability and failure messages here; real runs where TensorRT + a GPU exist."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.runtimes.base import Runner, RunnerOptions, open_runner
from pipeline.runtimes.trt import TrtRunner, TrtRunnerError, open_cuda

REPO = Path(__file__).resolve().parents[2]
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_is_a_runner_and_opened_by_extension() -> None:
    r = open_runner("model.engine")
    assert isinstance(r, TrtRunner) and isinstance(r, Runner) and r.runtime == "tensorrt"


def test_transfers_option_is_validated_and_described() -> None:
    with pytest.raises(ValueError, match="allowed: included, excluded"):
        TrtRunner("m.engine", RunnerOptions(extra={"transfers": "sometimes"}))
    d = TrtRunner("m.engine", RunnerOptions(extra={"transfers": "excluded"})).describe()
    assert d["transfers"] == "excluded" and "enqueue only" in d["device_timing"]
    assert TrtRunner("m.engine").describe()["transfers"] == "included"


def test_missing_engine_file(tmp_path: Path) -> None:
    with pytest.raises(TrtRunnerError, match="engine file not found"):
        TrtRunner(str(tmp_path / "absent.engine")).open()


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_open_says_so(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(TrtRunnerError, match="TensorRT is not importable"):
        TrtRunner(str(engine)).open()


def test_infer_before_open_is_an_error() -> None:
    with pytest.raises(TrtRunnerError, match="open"):
        TrtRunner("m.engine").infer({"input": np.zeros((1, 1, 4, 4), np.float32)})


def test_no_cuda_binding_names_every_probe() -> None:
    try:
        cuda = open_cuda()
    except TrtRunnerError as e:
        assert "cuda-python" in str(e) and "pycuda" in str(e)
    else:  # a GPU machine: the probe worked
        cuda.close()


def test_device_copies_import_without_the_pipeline_package(tmp_path: Path) -> None:
    # On the Jetson these files sit alone in the bundle: no `pipeline`, no pydantic.
    for rel in ("pipeline/runtimes/trt.py", "pipeline/build/trt_builder.py", "pipeline/build/trt_plan.py"):
        shutil.copy(REPO / rel, tmp_path)
    code = (
        "import sys; sys.modules['pipeline'] = None; sys.modules['pydantic'] = None\n"
        "sys.path.insert(0, %r)\n"
        "import trt, trt_builder\n"
        "r = trt.TrtRunner('m.engine', trt.RunnerOptions(extra={'transfers': 'excluded'}))\n"
        "print(r.describe()['transfers'], trt.TensorSpec('x', (None, 3), 'float32').shape)\n" % str(tmp_path)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["excluded", "(None,", "3)"]
    cli = subprocess.run([sys.executable, str(tmp_path / "trt_builder.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 0 and "--dla-core" in cli.stdout and "--timing-cache" in cli.stdout


def _gpu_or_skip() -> None:
    if not HAS_TRT:
        pytest.skip("TensorRT is not installed")
    from pipeline.build.trt_builder import cuda_device_info

    if not cuda_device_info():
        pytest.skip("no CUDA GPU visible through cuda-python or pycuda")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_run_and_parity_on_gpu(tmp_path: Path) -> None:
    _gpu_or_skip()
    sys.path.insert(0, str(REPO / "tools"))
    import check_tensorrt_gpu as chk
    from pipeline.build.trt_builder import BuildOptions

    result = chk.run_check(None, tmp_path, BuildOptions(min_batch=1, opt_batch=4, max_batch=8), iters=20)
    assert result["parity"]["top1_agreement"] == 1.0
    assert result["parity"]["max_abs_diff"] < 1e-2, json.dumps(result["parity"])
    assert result["timing_cache_reloaded_bytes"] > 0
    for b in result["benchmark"]:
        assert b["device_ms"]["p50"] > 0 and b["runner"]["transfers"] == b["transfers"]
    # Outputs follow the dynamic batch.
    runner = TrtRunner(result["build"]["engine"])
    runner.open()
    try:
        assert runner.inputs()[0].shape[0] is None
        for n in (1, 5, 8):
            out = runner.infer({"input": np.zeros((n, 1, 16, 16), np.float32)})
            assert out[0].shape == (n, 10)
    finally:
        runner.close()
