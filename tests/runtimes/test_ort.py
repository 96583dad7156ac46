"""OrtRuntime on a tiny ONNX model built in code; standalone on the device as ort_runtime.py."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.runtimes.base import Runtime, RuntimeFailure, RuntimeOptions, open_runtime
from pipeline.runtimes.ort import OrtRuntime

REPO = Path(__file__).resolve().parents[2]


def test_open_infer_describe(tmp_path, make_tiny_onnx):
    rt = open_runtime(str(make_tiny_onnx(tmp_path / "t.onnx")), options=RuntimeOptions(threads=1))
    assert isinstance(rt, OrtRuntime) and isinstance(rt, Runtime) and rt.supports_trtexec is False
    with rt as entered:
        assert entered is rt
        (spec,) = rt.inputs()
        assert spec.name == "input" and spec.shape == (None, 4) and spec.dtype == "float32"
        x = np.ones((2, 4), np.float32)
        (y,) = rt.infer({"input": x})
        np.testing.assert_allclose(y, x @ np.arange(12, dtype=np.float32).reshape(4, 3))
        d = rt.describe()
        assert d["providers"] == ["CPUExecutionProvider"] and d["threads"] == 1 and d["transfers"] == "n/a"
        assert d["graph_optimization_level"] == "all" and d["thread_pool"] == "per-session"
    with pytest.raises(RuntimeFailure, match="before open"):  # closed on leaving the block
        rt.infer({"input": x})


def test_context_manager_closes_on_error(tmp_path, make_tiny_onnx):
    rt = OrtRuntime(make_tiny_onnx(tmp_path / "t.onnx"))
    with pytest.raises(KeyError), rt:
        assert rt.inputs()
        raise KeyError("boom")
    assert rt._session is None


def test_static_batch_shape(tmp_path, make_tiny_onnx):
    with OrtRuntime(make_tiny_onnx(tmp_path / "s.onnx", batch_dim=2)) as rt:
        assert rt.inputs()[0].shape == (2, 4)


def test_providers_asked_and_present(tmp_path, make_tiny_onnx):
    import onnxruntime as ort

    p = make_tiny_onnx(tmp_path / "t.onnx")
    with OrtRuntime(p, RuntimeOptions(providers=["NoSuchExecutionProvider", "CPUExecutionProvider"])) as rt:
        assert rt.describe()["providers"] == ["CPUExecutionProvider"]
        assert rt.describe()["providers_missing"] == ["NoSuchExecutionProvider"]
    with pytest.raises(RuntimeFailure, match="none is available"):
        OrtRuntime(p, RuntimeOptions(providers=["NoSuchExecutionProvider"])).open()
    # default: every local provider, never Azure / TensorRT EP
    with OrtRuntime(p) as rt:
        assert "AzureExecutionProvider" not in rt.describe()["providers"]
        assert set(rt.describe()["providers"]) <= set(ort.get_available_providers())


def test_graph_optimization_level_is_used(tmp_path, make_tiny_onnx):
    opts = RuntimeOptions(graph_optimization_level="disable")
    with OrtRuntime(make_tiny_onnx(tmp_path / "t.onnx"), opts) as rt:
        assert rt.describe()["graph_optimization_level"] == "disable"
        assert rt.infer({"input": np.ones((1, 4), np.float32)})[0].shape == (1, 3)


def test_bad_model_is_a_runtime_failure(tmp_path):
    with pytest.raises(RuntimeFailure, match="ONNX model not found"), open_runtime(str(tmp_path / "missing.onnx")):
        pass
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(RuntimeFailure, match="could not load"):
        OrtRuntime(junk).open()
    assert issubclass(RuntimeFailure, UserError) and RuntimeFailure.exit_code == 2


def test_standalone_copy_runs_without_the_pipeline_package(tmp_path, make_tiny_onnx):
    """The bundle ships this file as ort_runtime.py: it must work with no `pipeline` importable."""
    shutil.copy(REPO / "pipeline/runtimes/ort.py", tmp_path / "ort_runtime.py")
    model = make_tiny_onnx(tmp_path / "t.onnx")
    code = (
        "import sys; sys.modules['pipeline'] = None\n"
        "sys.path.insert(0, %r)\n"
        "import numpy as np, ort_runtime as o\n"
        "opts = o.RuntimeOptions(threads=1, providers=('CPUExecutionProvider',), graph_optimization_level='basic')\n"
        "with o.OrtRuntime(%r, opts) as rt:\n"
        "    print(rt.infer({'input': np.ones((1, 4), np.float32)})[0].shape, rt.describe()['threads'])\n"
        "try:\n"
        "    o.OrtRuntime('absent.onnx').open()\n"
        "except o.RuntimeFailure as e:\n"
        "    print(type(e).__module__, e.exit_code)\n" % (str(tmp_path), str(model))
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(1,", "3)", "1", "ort_runtime", "2"]


def test_python38_syntax():
    tree = ast.parse((REPO / "pipeline/runtimes/ort.py").read_text(), feature_version=(3, 8))
    assert not any(isinstance(n, ast.NamedExpr) for n in ast.walk(tree))
