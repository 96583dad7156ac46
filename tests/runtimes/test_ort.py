"""OrtRunner on a tiny ONNX model built in code."""

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.runtimes.base import RunnerOptions, open_runner
from pipeline.runtimes.ort import OrtRunner


def test_open_infer_describe(tmp_path, make_tiny_onnx):
    r = open_runner(str(make_tiny_onnx(tmp_path / "t.onnx")), options=RunnerOptions(threads=1))
    assert isinstance(r, OrtRunner)
    r.open()
    (spec,) = r.inputs()
    assert spec.name == "input" and spec.shape == (None, 4) and spec.dtype == "float32"
    x = np.ones((2, 4), np.float32)
    (y,) = r.infer({"input": x})
    np.testing.assert_allclose(y, x @ np.arange(12, dtype=np.float32).reshape(4, 3))
    d = r.describe()
    assert d["providers"] == ["CPUExecutionProvider"] and d["threads"] == 1 and d["transfers"] == "n/a"
    r.close()


def test_static_batch_shape(tmp_path, make_tiny_onnx):
    r = OrtRunner(make_tiny_onnx(tmp_path / "s.onnx", batch_dim=2))
    r.open()
    assert r.inputs()[0].shape == (2, 4)


def test_providers_asked_and_present(tmp_path, make_tiny_onnx):
    import onnxruntime as ort

    p = make_tiny_onnx(tmp_path / "t.onnx")
    r = OrtRunner(p, RunnerOptions(providers=["NoSuchExecutionProvider", "CPUExecutionProvider"]))
    r.open()
    assert r.describe()["providers"] == ["CPUExecutionProvider"]
    assert r.describe()["providers_missing"] == ["NoSuchExecutionProvider"]
    with pytest.raises(UserError, match="none is available"):
        OrtRunner(p, RunnerOptions(providers=["NoSuchExecutionProvider"])).open()
    # default: every local provider, never Azure / TensorRT EP
    d = OrtRunner(p)
    d.open()
    assert "AzureExecutionProvider" not in d.describe()["providers"]
    assert set(d.describe()["providers"]) <= set(ort.get_available_providers())


def test_bad_model_and_options(tmp_path, make_tiny_onnx):
    with pytest.raises(UserError, match="not found"):
        OrtRunner(tmp_path / "missing.onnx").open()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(UserError, match="could not load"):
        OrtRunner(junk).open()
    p = make_tiny_onnx(tmp_path / "t.onnx")
    with pytest.raises(UserError, match="graph_optimization_level"):
        OrtRunner(p, RunnerOptions(extra={"graph_optimization_level": "max"})).open()
    with pytest.raises(UserError, match="threads"):
        OrtRunner(p, RunnerOptions(threads=0)).open()
