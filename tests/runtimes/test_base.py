"""The runtime registry: name aliases, typed options, one error type, and a missing model per runtime."""

import pytest

from pipeline.errors import UserError
from pipeline.runtimes.base import (
    RUNTIMES,
    RuntimeFailure,
    RuntimeOptions,
    canonical_runtime,
    open_runtime,
    runtime_for_path,
)
from pipeline.runtimes.ort import OrtRuntime
from pipeline.runtimes.pyt import TorchRuntime
from pipeline.runtimes.trt import TrtRuntime


@pytest.mark.parametrize("name, canonical", [
    ("ort", "onnxruntime"), ("onnxrt", "onnxruntime"), ("onnx", "onnxruntime"), ("ONNXRuntime", "onnxruntime"),
    ("trt", "tensorrt"), ("TensorRT", "tensorrt"), (" TRT ", "tensorrt"),
    ("torch", "pytorch"), ("pt", "pytorch"), ("PyTorch", "pytorch"),
])
def test_aliases(name, canonical):
    assert canonical_runtime(name) == canonical


def test_every_canonical_name_is_its_own_alias():
    assert [canonical_runtime(r) for r in RUNTIMES] == list(RUNTIMES)


def test_unknown_runtime_lists_the_allowed_names():
    with pytest.raises(RuntimeFailure) as e:
        canonical_runtime("tflite", "--runtime")
    msg = str(e.value)
    assert msg.startswith("--runtime 'tflite' is not a runtime")
    for name in ("onnxruntime", "ort", "onnxrt", "onnx", "tensorrt", "trt", "pytorch", "torch", "pt"):
        assert name in msg
    with pytest.raises(RuntimeFailure, match="runtime = 'x'"):
        open_runtime("m.onnx", "x")


@pytest.mark.parametrize("runtime, cls", [("ort", OrtRuntime), ("trt", TrtRuntime), ("torch", TorchRuntime)])
def test_open_runtime_by_alias(runtime, cls):
    rt = open_runtime("m.bin", runtime)
    assert isinstance(rt, cls) and rt.runtime == canonical_runtime(runtime)
    assert rt.supports_trtexec is (cls is TrtRuntime)


def test_runtime_for_path():
    assert runtime_for_path("a.onnx") == "onnxruntime" and runtime_for_path("a.plan") == "tensorrt"
    assert runtime_for_path("a.pt2") == "pytorch" and runtime_for_path("pkg.mod:make") == "pytorch"
    with pytest.raises(RuntimeFailure, match="cannot tell the runtime"):
        runtime_for_path("a.tflite")


@pytest.mark.parametrize("path", ["absent.onnx", "absent.engine", "absent.pt2"])
def test_missing_model_is_a_runtime_failure_from_each_runtime(tmp_path, path):
    with pytest.raises(RuntimeFailure, match="not found") as e, open_runtime(str(tmp_path / path)):
        pass
    assert isinstance(e.value, UserError) and e.value.exit_code == 2
    assert str(tmp_path / path) in str(e.value)


def test_options_defaults_and_normalisation():
    o = RuntimeOptions()
    assert (o.threads, o.providers, o.device, o.graph_optimization_level, o.shared_thread_pool, o.transfers,
            o.dla_core, o.weights, o.input_shape) == (None, None, "cpu", "all", False, "included", None, None, None)
    o = RuntimeOptions(providers=["CPUExecutionProvider"], input_shape=[1, 4], device="cuda:1", dla_core=0)
    assert o.providers == ("CPUExecutionProvider",) and o.input_shape == (1, 4) and o.dla_core == 0
    with pytest.raises(AttributeError):
        o.threads = 3  # frozen: options are values
    assert not hasattr(o, "extra")


@pytest.mark.parametrize("kwargs, needle", [
    ({"threads": 0}, "threads = 0: must be an integer >= 1"),
    ({"threads": True}, "threads = True"),
    ({"threads": "2"}, "threads = '2'"),
    ({"providers": "CPUExecutionProvider"}, "providers = 'CPUExecutionProvider': must be a list"),
    ({"providers": ["CPUExecutionProvider", ""]}, "providers = "),
    ({"device": "tpu"}, "device = 'tpu' (allowed: cpu, cuda, cuda:N)"),
    ({"device": "cuda:x"}, "device = 'cuda:x'"),
    ({"graph_optimization_level": "max"}, "graph_optimization_level = 'max' (allowed: disable, basic, extended, all)"),
    ({"shared_thread_pool": "yes"}, "shared_thread_pool = 'yes' (allowed: true, false)"),
    ({"transfers": "sometimes"}, "transfers = 'sometimes' (allowed: included, excluded)"),
    ({"dla_core": -1}, "dla_core = -1: must be an integer >= 0"),
    ({"weights": 3}, "weights = 3: must be a file path"),
    ({"input_shape": (1, 0)}, "input_shape = (1, 0): must be dimensions >= 1"),
    ({"input_shape": "1x4"}, "input_shape = '1x4'"),
])
def test_options_are_validated(kwargs, needle):
    with pytest.raises(RuntimeFailure) as e:
        RuntimeOptions(**kwargs)
    assert needle in str(e.value)


def test_options_have_no_free_form_dict():
    with pytest.raises(TypeError):
        RuntimeOptions(extra={"transfers": "excluded"})
