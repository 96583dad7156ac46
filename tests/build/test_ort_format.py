"""ONNX Runtime Mobile output: the .ort and its operator config from ORT's converter, checked against the ONNX on
the CPU provider; ORT's mobile usability verdict parsed; the phone targets and their validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.backends import backend_for
from pipeline.build import ort_format, ort_usability
from pipeline.errors import BudgetExceeded, UserError
from pipeline.targets import load_target

SHAPE = (3, 16, 16)


def _net(seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()


def _export(path: Path, seed: int = 0) -> Path:
    import torch

    torch.onnx.export(_net(seed), torch.zeros(1, *SHAPE), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


def _int8(fp32: Path, out: Path, calib: np.ndarray, activation: str) -> Path:
    """Plain ORT static QDQ quantization, as the quantize stage makes it (U8S8 for android, S8S8 for ios)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    act = QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=act, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": activation == "int8"})
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ort_models")
    rng = np.random.default_rng(0)
    calib, held_out = (rng.standard_normal((n, *SHAPE)).astype(np.float32) for n in (32, 200))
    fp32 = _export(d / "fp32.onnx")
    return {"dir": d, "fp32": fp32, "x": held_out, "u8": _int8(fp32, d / "u8.onnx", calib, "uint8"),
            "s8": _int8(fp32, d / "s8.onnx", calib, "int8")}


@pytest.mark.parametrize("target_name, model", [("android-arm64", "fp32"), ("android-arm64", "u8"),
                                                 ("ios-arm64", "s8")])
def test_phone_build_writes_a_verified_ort(models, tmp_path, target_name, model):
    import onnxruntime as ort

    target = load_target(target_name)
    onnx_path = models[model]
    r = backend_for(target).build(onnx_path, target, tmp_path, models["x"])
    assert r.status == "done" and r.engine == tmp_path / "model.ort"
    # every held-out decision of the .ort agrees with its ONNX (acceptance: >= 99.5 %)
    assert r.parity["samples"] == 200 and r.parity["top1_agreement"] >= 0.995 and r.parity["inputs"] == "held-out"
    # the reference ONNX runs with the converter's ARM setting; this host's own defaults are recorded beside it
    assert r.parity["reference"].endswith("session.qdqisint8allowed=1") and "host_defaults" in r.parity
    fmt = r.ort["ort_format"]
    assert fmt["fixed_batch"] == 1 and fmt["target_platform"] == "arm" and fmt["optimization_style"] == "runtime"
    # the saved runtime optimizations are replayed only with this entry: the app is told to set it
    assert fmt["session"]["session_config_entries"][ort_format.REPLAY_RUNTIME_OPTS] == "1"
    # the file is a real ORT-format model (flatbuffer, identifier "ORTM"), loading on the CPU provider
    data = (tmp_path / "model.ort").read_bytes()
    assert data[4:8] == b"ORTM"
    so = ort.SessionOptions()
    so.add_session_config_entry(ort_format.REPLAY_RUNTIME_OPTS, "1")
    sess = ort.InferenceSession(str(tmp_path / "model.ort"), so, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == 1  # batch fixed for NNAPI/CoreML
    config = (tmp_path / "required_operators_and_types.config").read_text()
    assert "ai.onnx;" in config and str(tmp_path) not in config  # ops listed, no temp paths leaked
    if model != "fp32":
        assert "QLinearConv" in config or "QuantizeLinear" in config
    usability = r.ort["mobile_usability"]
    assert {"NNAPI", "CoreML MLProgram", "CoreML NeuralNetwork"} <= set(usability["eps"])
    nnapi = usability["eps"]["NNAPI"]
    assert nnapi["nodes"] > 0 and 0 <= nnapi["coverage"] <= 1 and nnapi["as_is"] in ("YES", "MAYBE", "NO")
    assert usability["recommendation"] and (tmp_path / ort_format.USABILITY_LOG).is_file()


def test_options_become_ort_provider_options():
    setup = ort_format.session_setup(load_target("android-arm64").onnxruntime)
    assert setup["execution_providers"][-1] == "CPUExecutionProvider"
    assert setup["provider_options"]["XnnpackExecutionProvider"] == {"intra_op_num_threads": "4"}
    assert setup["provider_options"]["NnapiExecutionProvider"] == {"flags": ["NNAPI_FLAG_CPU_DISABLED"]}
    assert setup["session_config_entries"] == {"session.intra_op.allow_spinning": "0"}
    coreml = ort_format.session_setup(load_target("ios-arm64").onnxruntime)["provider_options"]
    assert coreml["CoreMLExecutionProvider"]["ModelFormat"] == "MLProgram"
    assert coreml["CoreMLExecutionProvider"]["RequireStaticInputShapes"] == "1"


def test_a_diverging_ort_is_refused_with_the_numbers(models, tmp_path):
    other = _export(tmp_path / "other.onnx", seed=1)
    conv = ort_format.convert_to_ort(other, tmp_path / "o", arch="aarch64", check_usability=False)
    with pytest.raises(BudgetExceeded, match=r"agrees with its ONNX on \d+\.\d\d % of 200 held-out"):
        ort_format.verify_ort(models["fp32"], conv, models["x"], 0.995)
    with pytest.raises(BudgetExceeded, match=r"differs from its ONNX by up to .* > onnxruntime.ort_format.max_abs"):
        ort_format.verify_ort(models["fp32"], conv, models["x"], 0.0, max_abs_diff=1e-3)
    same = ort_format.convert_to_ort(models["fp32"], tmp_path / "s", arch="x86_64", check_usability=False)
    assert same.target_platform == "amd64" and same.fixed_batch is None and same.session_config == {}
    ok = ort_format.verify_ort(models["fp32"], same, models["x"], 0.995, max_abs_diff=1e-3)
    assert ok["top1_agreement"] == 1.0 and ok["max_abs_diff"] < 1e-3 and "host_defaults" not in ok


def test_cpu_targets_still_serve_the_onnx(tmp_path):
    for name in ("cpu", "arm64-cpu"):
        r = backend_for(load_target(name)).build(tmp_path / "absent.onnx", load_target(name), tmp_path)
        assert r.status == "skipped" and r.ort is None
        assert backend_for(load_target(name)).cache_environment(load_target(name)) == {}
    env = backend_for(load_target("ios-arm64")).cache_environment(load_target("ios-arm64"))
    assert set(env) == {"onnxruntime"}


def test_parse_usability_reads_the_as_is_analysis():
    lines = ["Checking /m.onnx for usability with ORT Mobile.", "Checking NNAPI",
             "0 partitions with a total of 0/7 nodes can be handled by the NNAPI EP.",
             "Model should perform well with NNAPI as is: NO", "--------",
             "Checking if model will perform better if the dynamic shapes are fixed...",
             "Partition information if the model was updated to make the shapes fixed:",
             "1 partitions with a total of 7/7 nodes can be handled by the NNAPI EP.",
             "\tUnsupported ops: ai.onnx:Flatten",
             "Model should perform well with NNAPI if modified to have fixed input shapes: YES",
             "Checking CoreML MLProgram",
             "2 partitions with a total of 6/7 nodes can be handled by the CoreML MLProgram EP.",
             "\tUnsupported ops: ai.onnx:Flatten,ai.onnx:Abs",
             "Model should perform well with CoreML MLProgram as is: MAYBE"]
    eps = ort_usability.parse_usability(lines)
    assert eps["NNAPI"] == {"partitions": 0, "supported_nodes": 0, "nodes": 7, "coverage": 0.0, "as_is": "NO",
                            "with_fixed_shapes": "YES", "unsupported_ops": []}
    assert eps["CoreML MLProgram"]["coverage"] == round(6 / 7, 4)
    assert eps["CoreML MLProgram"]["unsupported_ops"] == ["ai.onnx:Abs", "ai.onnx:Flatten"]
    assert set(eps) == {"NNAPI", "CoreML MLProgram"}


@pytest.mark.parametrize("body, message", [
    ("execution_providers: [CPUExecutionProvider]\n  xnnpack: {intra_op_num_threads: 2}",
     "XnnpackExecutionProvider is not in execution_providers"),
    ("execution_providers: [NnapiExecutionProvider]\n  nnapi: {cpu_only: true, cpu_disabled: true}",
     "cpu_disabled and cpu_only are both true"),
    ("model_format: tflite", "model_format"),
    ("ort_format: {min_top1_agreement: 1.5}", "min_top1_agreement"),
])
def test_phone_target_mistakes_are_named(tmp_path, body, message):
    p = tmp_path / "t.yaml"
    p.write_text(f"name: t\nruntime: onnxruntime\narch: aarch64\ndevice_kind: phone\nonnxruntime:\n  {body}\n")
    with pytest.raises(UserError, match=message):
        load_target(str(p))


def test_a_phone_is_served_by_onnxruntime(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: t\nruntime: tensorrt\narch: aarch64\ndevice_kind: phone\nquantization: {activation_type: "
                 "int8, symmetric_activations: true, quantize_bias: false}\ntensorrt: {gpu: x, "
                 "compute_capability: '8.7', tensorrt_version: '10.3'}\n")
    with pytest.raises(UserError, match="device_kind 'phone' needs runtime 'onnxruntime'"):
        load_target(str(p))


def test_phone_targets_run_on_the_cpu_provider_here():
    import onnxruntime as ort

    for name in ("android-arm64", "ios-arm64"):
        t = load_target(name)
        assert t.device_kind == "phone" and t.arch == "aarch64" and t.onnxruntime.model_format == "ort"
        assert not t.quantization.reduce_range  # dot-product ARM accumulates in int32
        opts = backend_for(t).host_runtime_options(t)
        assert set(opts.providers) <= set(ort.get_available_providers()) and "CPUExecutionProvider" in opts.providers


def test_runtime_style_failure_names_the_fix(models, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calib = models["x"][:8]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    float_bias = tmp_path / "fb.onnx"  # TensorRT's scheme: S8S8 with float biases
    quantize_static(str(models["fp32"]), str(float_bias), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "QuantizeBias": False})
    with pytest.raises(UserError, match="try onnxruntime.ort_format.optimization_style: fixed"):
        ort_format.convert_to_ort(float_bias, tmp_path / "r", arch="aarch64", optimization_style="runtime",
                                  check_usability=False)
    fixed = ort_format.convert_to_ort(float_bias, tmp_path / "f", arch="aarch64", check_usability=False)
    assert ort_format.verify_ort(float_bias, fixed, models["x"], 0.995)["top1_agreement"] >= 0.995
    assert not list((tmp_path / "r").glob("model.ort")), "a failed conversion leaves no model.ort"
