"""TrtRuntime: option validation, portability and failure messages here; real runs where TensorRT + a GPU exist."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.runtimes.base import Runtime, RuntimeFailure, RuntimeOptions, open_runtime
from pipeline.runtimes.trt import TrtRuntime, open_cuda

REPO = Path(__file__).resolve().parents[2]
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_is_a_runtime_and_opened_by_extension() -> None:
    r = open_runtime("model.engine")
    assert isinstance(r, TrtRuntime) and isinstance(r, Runtime) and r.runtime == "tensorrt"
    assert r.supports_trtexec is True


def test_transfers_and_dla_options_are_validated_and_described() -> None:
    with pytest.raises(RuntimeFailure, match="allowed: included, excluded"):
        RuntimeOptions(transfers="sometimes")
    d = TrtRuntime("m.engine", RuntimeOptions(transfers="excluded", dla_core=1)).describe()
    assert d["transfers"] == "excluded" and "enqueue only" in d["device_timing"] and d["dla_core"] == 1
    assert TrtRuntime("m.engine").describe()["transfers"] == "included"
    assert TrtRuntime("m.engine").describe()["dla_core"] is None


def test_missing_engine_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="engine file not found"), TrtRuntime(str(tmp_path / "absent.engine")):
        pass


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_open_says_so(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(RuntimeFailure, match="TensorRT is not importable"), TrtRuntime(str(engine)):
        pass


def test_infer_before_open_is_an_error() -> None:
    with pytest.raises(RuntimeFailure, match="open"):
        TrtRuntime("m.engine").infer({"input": np.zeros((1, 1, 4, 4), np.float32)})


def test_no_cuda_binding_names_every_probe() -> None:
    try:
        cuda = open_cuda()
    except RuntimeFailure as e:
        assert "cuda-python" in str(e) and "pycuda" in str(e)
    else:  # a GPU machine: the probe worked
        cuda.close()


def test_device_copies_import_without_the_pipeline_package(tmp_path: Path) -> None:
    # On the Jetson these files sit alone in the bundle, under the names the bundle gives them:
    # no `pipeline`, no pydantic.
    for rel, name in (("pipeline/runtimes/trt.py", "trt_runtime.py"), ("pipeline/build/trt_builder.py", None),
                      ("pipeline/build/trt_plan.py", None)):
        shutil.copy(REPO / rel, tmp_path / (name or Path(rel).name))
    code = (
        "import sys; sys.modules['pipeline'] = None; sys.modules['pydantic'] = None\n"
        "sys.path.insert(0, %r)\n"
        "import trt_runtime as t, trt_builder\n"
        "r = t.TrtRuntime('m.engine', t.RuntimeOptions(transfers='excluded', dla_core=0))\n"
        "print(r.describe()['transfers'], r.describe()['dla_core'], t.TensorSpec('x', (None, 3), 'float32').shape)\n"
        "for bad in (lambda: t.TrtRuntime('m.engine', t.RuntimeOptions(transfers='sometimes')),\n"
        "            lambda: t.TrtRuntime('absent.engine').open()):\n"
        "    try:\n"
        "        bad()\n"
        "    except t.RuntimeFailure as e:\n"
        "        print(e.exit_code)\n" % str(tmp_path)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["excluded", "0", "(None,", "3)", "2", "2"]
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
    # Outputs follow the dynamic batch; a shape outside the profile is a RuntimeFailure.
    with TrtRuntime(result["build"]["engine"]) as rt:
        assert rt.inputs()[0].shape[0] is None
        for n in (1, 5, 8):
            out = rt.infer({"input": np.zeros((n, 1, 16, 16), np.float32)})
            assert out[0].shape == (n, 10)
        with pytest.raises(RuntimeFailure, match="outside the engine's profile"):
            rt.infer({"input": np.zeros((9, 1, 16, 16), np.float32)})
        with pytest.raises(RuntimeFailure, match="missing inputs"):
            rt.infer({"other": np.zeros((1, 1, 16, 16), np.float32)})
    assert rt._cuda is None and rt._context is None
