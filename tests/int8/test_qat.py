"""QAT with KD (pipeline.int8.qat): a tiny conv net on sklearn's digits, fine-tuned with ModelOpt fake-quant,
exported to QDQ ONNX for the cpu scheme (U8S8, int32 biases, 7-bit weights) and a TensorRT scheme (S8S8,
float biases), run by ONNX Runtime and parsed/built by tensorrt-rtx."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("modelopt.torch.quantization", reason="QAT needs the qat extra (nvidia-modelopt)",
                    exc_type=ImportError)

from pipeline.errors import UserError  # noqa: E402
from pipeline.int8.qat import fold_batchnorm, qat_to_qdq  # noqa: E402
from pipeline.targets import QuantScheme, load_target  # noqa: E402

TRT_SCHEME = QuantScheme(activation_type="int8", weight_type="int8", per_channel=True, reduce_range=False,
                         symmetric_activations=True, symmetric_weights=True, quantize_bias=False)


class _OwnForwardConv(torch.nn.Conv2d):
    """A conv subclass with its own forward (like EfficientNet's "same"-padding conv): must be quantized too."""

    def forward(self, x):  # noqa: ANN001, ANN201
        return self._conv_forward(x, self.weight, self.bias)


class _Net(torch.nn.Module):
    """conv-BN-ReLU, depthwise conv-BN-ReLU, pointwise conv with a residual add, linear head."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
        self.pw = _OwnForwardConv(16, 16, 1)
        self.head = nn.Linear(16 * 4, 10)

    def forward(self, x):  # noqa: ANN001, ANN201
        y = self.stem(x)
        y = torch.relu(y + self.pw(self.dw(y)))
        return self.head(torch.nn.functional.adaptive_avg_pool2d(y, 2).flatten(1))


@pytest.fixture(scope="module")
def digits():
    """(x_train, y_train, x_eval) from sklearn's digits, normalised, NCHW."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = ((d.images.astype(np.float32) / 16.0 - 0.5) / 0.5)[:, None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    return x[idx[:1200]], y[idx[:1200]], x[idx[1200:]]


@pytest.fixture(scope="module")
def fp32(digits):
    """The FP32 net, trained for 4 epochs (about 95 % top-1 on the held-out digits in trial runs)."""
    from pipeline.training import train

    torch.manual_seed(0)
    net = _Net()
    x, y, _ = digits
    train(net, x, y, epochs=4, batch_size=64, lr=0.01, weight_decay=0.0, seed=0, device="cpu")
    return net.eval()


def _loader(digits):
    from pipeline.datasets import ArrayDataset, make_loader

    x, y, _ = digits
    return make_loader(ArrayDataset(x, y), 64, shuffle=True, seed=1)


@pytest.fixture(scope="module")
def exported(digits, fp32, tmp_path_factory):
    """scheme name -> (QDQ path, the trained fake-quant torch model)."""
    d = tmp_path_factory.mktemp("qat")
    out = {}
    for name, scheme in (("cpu", load_target("cpu").quantization), ("trt", TRT_SCHEME)):
        student = copy.deepcopy(fp32)
        path = qat_to_qdq(student, copy.deepcopy(fp32), _loader(digits), scheme, d / f"{name}.onnx", epochs=1,
                          lr=1e-4, device="cpu", example_shape=(1, 8, 8), opset=17, log=lambda s: None)
        out[name] = (path, student)
    return out


def _ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _qdq_types(path: Path) -> dict:
    """{"act_zp": dtypes of activation Q zero points, "w": weight DQ input dtypes, "bias": Conv/Gemm bias sources}."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    q = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    w = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    bias = [producer[n.input[2]].op_type if n.input[2] in producer else str(inits[n.input[2]].dtype)
            for n in g.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2]
    return {"act_zp": {str(inits[n.input[2]].dtype) for n in q}, "n_act": len(q),
            "w": {str(inits[n.input[0]].dtype) for n in w}, "bias": bias,
            "n_w": sum(inits[n.input[0]].ndim > 1 for n in w),
            "w_max": max(int(np.abs(inits[n.input[0]].astype(np.int32)).max())
                         for n in w if inits[n.input[0]].ndim > 1),
            "bn": sum(n.op_type == "BatchNormalization" for n in g.node)}


def test_cpu_scheme_is_u8s8_with_int32_biases_and_7bit_weights(exported) -> None:
    t = _qdq_types(exported["cpu"][0])
    assert t["n_act"] >= 4 and t["act_zp"] == {"uint8"}, t
    assert "int8" in t["w"] and "int32" in t["w"], t  # int8 weights, int32 biases
    assert t["bias"] and set(t["bias"]) == {"DequantizeLinear"}, t
    assert t["w_max"] <= 64, t  # reduce_range: the weights use 7 bits of the int8 grid
    assert t["bn"] == 0, t  # BatchNorm folded into the convs before quantizing
    assert t["n_w"] == 4, t  # stem, depthwise, the own-forward pointwise conv, head: all quantized


def test_trt_scheme_is_s8s8_symmetric_with_float_biases(exported) -> None:
    t = _qdq_types(exported["trt"][0])
    assert t["n_act"] >= 4 and t["act_zp"] == {"int8"}, t
    assert t["w"] == {"int8"}, t  # no int32 bias DequantizeLinear: TensorRT's parser rejects it
    assert t["bias"] and set(t["bias"]) == {"float32"}, t
    assert t["w_max"] > 64, t  # full 8-bit weights


@pytest.mark.parametrize("name", ["cpu", "trt"])
def test_onnx_runtime_agrees_with_the_fake_quant_model(exported, digits, fp32, name) -> None:
    path, student = exported[name]
    x = digits[2]
    got = _ort_logits(path, x).argmax(1)
    with torch.no_grad():
        fq = student(torch.from_numpy(x)).argmax(1).numpy()
        ref = fp32(torch.from_numpy(x)).argmax(1).numpy()
    assert (got == fq).mean() >= 0.97, (got == fq).mean()
    assert (got == ref).mean() >= 0.90, (got == ref).mean()


def test_trt_scheme_parses_and_builds_with_tensorrt_rtx(exported, tmp_path) -> None:
    trt_rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx not installed (tools/install_trt_check.sh)")
    from pipeline.build.trt_builder import BuildOptions, build_engine

    path = exported["trt"][0]
    opts = BuildOptions(min_batch=1, opt_batch=2, max_batch=8, workspace_mib=256)
    r = build_engine(str(path), str(tmp_path / "qat.engine"), opts, trt=trt_rtx, device={})
    assert r["explicit_int8_qdq"] is True
    assert Path(r["engine"]).stat().st_size > 0


def test_missing_modelopt_is_a_user_error(monkeypatch, fp32, digits, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "modelopt.torch.quantization", None)  # import now raises ImportError
    with pytest.raises(UserError, match=r"edgepipe\[qat\]"):
        qat_to_qdq(copy.deepcopy(fp32), fp32, _loader(digits), TRT_SCHEME, tmp_path / "m.onnx", epochs=1, lr=1e-4,
                   device="cpu", example_shape=(1, 8, 8), opset=17)
    assert not (tmp_path / "m.onnx").exists()


def test_uint8_weights_are_refused(fp32, digits, tmp_path) -> None:
    scheme = TRT_SCHEME.model_copy(update={"weight_type": "uint8"})
    with pytest.raises(UserError, match="weight_type"):
        qat_to_qdq(copy.deepcopy(fp32), fp32, _loader(digits), scheme, tmp_path / "m.onnx", epochs=1, lr=1e-4,
                   device="cpu", example_shape=(1, 8, 8), opset=17)


def test_fold_batchnorm_keeps_the_function(fp32, digits) -> None:
    net = copy.deepcopy(fp32)
    x = torch.from_numpy(digits[2][:16])
    with torch.no_grad():
        ref = net(x)
    assert fold_batchnorm(net, x) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    with torch.no_grad():
        assert torch.allclose(net(x), ref, atol=1e-4)


def test_fold_batchnorm_leaves_a_shared_conv_output_alone() -> None:
    class Branchy(torch.nn.Module):  # the conv output feeds the BatchNorm and the sum: folding would change it
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4)

        def forward(self, x):  # noqa: ANN001, ANN201
            y = self.conv(x)
            return self.bn(y) + y

    torch.manual_seed(0)
    net = Branchy()
    net.bn.running_mean.uniform_(-1, 1)
    net.bn.running_var.uniform_(0.5, 2)
    net.eval()
    assert fold_batchnorm(net, torch.randn(2, 1, 8, 8)) == 0
    assert isinstance(net.bn, torch.nn.BatchNorm2d)
