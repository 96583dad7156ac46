"""QAT with KD, the INT8 stage's last rung: fine-tune with fake-quantization, the FP32 model as teacher.

Backend: NVIDIA ModelOpt's torch quantization (`nvidia-modelopt`, the `qat` extra), chosen over the other two
well-kept flows after trying all three here (torch 2.13 CPU, onnxruntime 1.32):

- ModelOpt: `mtq.quantize` swaps Conv/Linear for quantized subclasses of themselves, so the result is a plain
  nn.Module that `pipeline.training.fit` trains as is (online KD, AMP, DDP, resume). On CPU its fake-quant is
  pure PyTorch (the CUDA kernels are only built on a GPU), and the TorchScript exporter writes standard
  QuantizeLinear/DequantizeLinear pairs (checked here: ONNX Runtime vs the torch model within 3e-8). The graph is
  what TensorRT wants: symmetric S8 per-tensor activations, S8 per-channel weights, biases in float, Q/DQ on the
  inputs of Conv/Gemm. Limits: symmetric only (unsigned only with a zero point of 0) and Q/DQ only around
  Conv/Linear (a functional residual `+` stays float); its registry skips a Conv/Linear subclass with its own
  forward (EfficientNet's "same"-padding conv) unless registered, which `_register_subclasses` does.
  Install: 17 MB, with PuLP 36 MB; 0.47.0 imports `requests` and `huggingface_hub` without declaring them, so the
  extra lists them.
- NNCF (torch): asymmetric U8 activations natively, but its fake-quant compiles a C++ extension on first use
  (about 40 s here, a 60 s timeout, and a stale lock file that hung the next run), and its default ONNX export
  is OpenVINO's custom FakeQuantize op, which ONNX Runtime cannot load.
- torchao PT2E: the trained model is a torch.export GraphModule (BatchNorm needs torchao's own train/eval
  switches, so `fit` cannot train it unchanged), and exporting the converted graph to ONNX needs the dynamo
  exporter and onnxscript. The torch.ao eager/FX flow is deprecated.

What the export is made into, per scheme (all exact or ONNX Runtime's own rounding): BatchNorm is folded into
the conv before quantizing (a Q/DQ'd weight blocks the fold at export, leaving a float BatchNormalization);
ONNX Runtime's basic graph optimization folds the weight Q into int8 initializers; for `activation_type: uint8`
every activation Q/DQ pair moves from int8 with zero point 0 to uint8 with zero point 128 (the same grid, so
ONNX Runtime's faster u8s8 kernels run it); for `quantize_bias: true` each Conv/Gemm bias becomes an int32
DequantizeLinear with scale s_x * s_w, as ONNX Runtime's quantizer writes it (its QDQ fusion skips a Conv with
a float bias). `reduce_range` trains 7-bit weights and exports them on the 8-bit grid with values in [-63, 63].
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

INSTALL_HINT = "pip install 'edgepipe[qat]' (nvidia-modelopt==0.47.0, requests, huggingface_hub)"


def qat_to_qdq(model: Any, teacher: Any, train_loader: Any, scheme: Any, out_path: Path, *, epochs: int, lr: float,
               device: str, example_shape: tuple[int, ...], opset: int, log: Callable[[str], None] = print,
               calib_batches: int = 8, temperature: float = 4.0, alpha: float = 0.0) -> Path:
    """Fine-tune `model` with fake-quantization and online KD from `teacher`, then export a QDQ ONNX for `scheme`.

    Args:
        model: the student nn.Module (a copy the caller does not need: it is changed in place).
        teacher: the FP32 nn.Module; run in eval mode on every augmented batch (`fit`'s online KD).
        train_loader: batches as `pipeline.training.fit` takes them; the first `calib_batches` also calibrate.
        scheme: `pipeline.targets.QuantScheme`.
        out_path: the QDQ ONNX to write (atomically).
        epochs, lr: the fine-tuning budget (AdamW, one-cycle; a small lr, e.g. 1e-4, suits QAT).
        device: "auto", "cpu", "cuda", ...
        example_shape: one input's (C, H, W) (a leading batch axis is ignored), for the export.
        opset: ONNX opset (>= 13: per-channel QuantizeLinear).
        log: progress callback.
        calib_batches: batches of `train_loader` that set the initial ranges (ModelOpt's max calibration).
        temperature, alpha: KD temperature and label-loss weight; alpha 0 trains toward the teacher alone,
            which is what agreement with the FP32 model measures.
    Returns:
        out_path. `model` itself is left as the trained fake-quant model (ModelOpt converts in place), on CPU.
    Raises:
        UserError: ModelOpt is not installed, or the scheme asks for what this export cannot write.
    """
    import torch

    from pipeline.fileio import atomic_path
    from pipeline.training import fit
    from pipeline.training.batches import unpack_batch

    mtq = _modelopt()
    _check(scheme, opset, epochs, lr)
    shape = tuple(example_shape[-3:]) if len(example_shape) >= 3 else tuple(example_shape)
    model.eval()
    calib = [unpack_batch(b)[0] for _, b in zip(range(calib_batches), train_loader, strict=False)]
    if not calib:
        raise UserError("QAT: train_loader yielded no batches; QAT needs the training data")
    folded = fold_batchnorm(model, calib[0][:8].float().to(next(model.parameters()).device))
    log(f"[qat] folded {folded} BatchNorm layers into their convs")

    def forward_loop(m: Any) -> None:
        dev = next(m.parameters()).device
        with torch.no_grad():
            for x in calib:
                m(x.float().to(dev))

    registered = _register_subclasses(mtq, model)
    if registered:
        log(f"[qat] registered with ModelOpt: {', '.join(registered)}")
    with contextlib.redirect_stdout(io.StringIO()) as said:  # ModelOpt prints its progress
        model = mtq.quantize(model, _config(mtq, scheme), forward_loop)
    n_q = sum(1 for _, q in _quantizers(model) if q.is_enabled)
    said_first = (said.getvalue().strip().splitlines() or [""])[0]
    log(f"[qat] ModelOpt: {n_q} quantizers enabled ({said_first})")
    stats = fit(model, train_loader, epochs=epochs, lr=lr, teacher=teacher, temperature=temperature, alpha=alpha,
                device=device, log=log, tag="qat", quiet=True)
    log(f"[qat] {stats['epochs']} epochs, final loss {stats['final_loss']}, {stats['seconds']} s")
    model.cpu().eval()
    if scheme.reduce_range:
        _widen_7bit_weights(model)
    x = torch.zeros(2, *shape)
    with atomic_path(out_path) as tmp:
        _export(model, x, tmp, opset)
        _for_scheme(tmp, scheme)
    return Path(out_path)


def _modelopt() -> Any:
    """`modelopt.torch.quantization`, or a UserError that says how to install it."""
    try:
        import modelopt.torch.quantization as mtq
    except ImportError as e:
        raise UserError(f"QAT needs NVIDIA ModelOpt's torch quantization, which cannot be imported here "
                        f"({type(e).__name__}: {e}); install it with {INSTALL_HINT}, or meet the INT8 budget "
                        "with post-training quantization (more layers in float, another calibration)") from None
    return mtq


def _check(scheme: Any, opset: int, epochs: int, lr: float) -> None:
    if scheme.weight_type != "int8":
        raise UserError(f"quantization.weight_type {scheme.weight_type!r}: QAT exports int8 weights only "
                        "(set weight_type: int8)")
    if opset < 13:
        raise UserError(f"export.opset {opset}: QAT's per-channel QuantizeLinear needs opset >= 13")
    if not isinstance(epochs, int) or epochs < 1:
        raise UserError(f"QAT epochs {epochs!r}: must be an integer >= 1")
    if not lr > 0:
        raise UserError(f"QAT lr {lr!r}: must be > 0")


def _config(mtq: Any, scheme: Any) -> dict:
    """ModelOpt's INT8 preset (max calibration, per-tensor activations) with the scheme's weight settings."""
    import copy

    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    for entry in cfg["quant_cfg"]:
        if entry.get("quantizer_name") == "*weight_quantizer" and "cfg" in entry:
            # 7 bits while training; exported on the 8-bit grid (see _widen_7bit_weights)
            entry["cfg"] = {**entry["cfg"], "num_bits": 7 if scheme.reduce_range else 8,
                            "axis": 0 if scheme.per_channel else None}
    return cfg


def _register_subclasses(mtq: Any, model: Any) -> list[str]:
    """Register the model's Conv/Linear subclasses that override forward (e.g. EfficientNet's "same"-padding
    conv) with ModelOpt's conv/linear quantization: its registry only matches a subclass whose forward is the
    base class's, so without this those layers silently stay float."""
    from modelopt.torch.quantization.nn import QuantLinearConvBase, QuantModuleRegistry
    from torch import nn

    done = []
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: c.__qualname__):
        if not issubclass(cls, (nn.modules.conv._ConvNd, nn.Linear)) or QuantModuleRegistry.get(cls) is not None:
            continue
        # QuantLinearConvBase quantizes the input, and the weight wherever forward reads `self.weight`
        mtq.register(original_cls=cls, quantized_cls=type(f"_Quant{cls.__name__}", (QuantLinearConvBase,), {}))
        done.append(cls.__qualname__)
    return done


def _quantizers(model: Any) -> list[tuple[str, Any]]:
    from modelopt.torch.quantization.nn import TensorQuantizer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, TensorQuantizer)]


def _widen_7bit_weights(model: Any) -> None:
    """7-bit weight quantizers -> 8-bit ones on the same grid (ONNX QuantizeLinear is 8-bit): scale amax/63."""
    import torch

    for name, q in _quantizers(model):
        if name.endswith("weight_quantizer") and q.is_enabled and q.num_bits == 7:
            with torch.no_grad():
                q.amax = q.amax * (127.0 / 63.0)
            q.num_bits = 8


def fold_batchnorm(model: Any, x: Any) -> int:
    """Fold every BatchNorm that directly follows a Conv (seen by running `x`) into that conv, in place.

    A pair is folded only when the conv's output tensor is the BatchNorm's input and each module runs once;
    the model's output on `x` is compared before and after, and the model is left unchanged if they differ.

    Args:
        model: nn.Module in eval mode.
        x: an input batch.
    Returns:
        The number of BatchNorm layers folded.
    """
    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    names = {m: n for n, m in model.named_modules()}
    calls: dict[str, int] = {}
    last: dict[str, tuple[str, Any]] = {}
    pairs: list[tuple[str, str]] = []

    def conv_hook(m, _inp, out):  # noqa: ANN001, ANN202
        calls[names[m]] = calls.get(names[m], 0) + 1
        last["conv"] = (names[m], out)

    def bn_hook(m, inp):  # noqa: ANN001, ANN202
        calls[names[m]] = calls.get(names[m], 0) + 1
        conv = last.get("conv")
        if conv is not None and conv[1] is inp[0] and m.track_running_stats:
            pairs.append((conv[0], names[m]))

    hooks = [m.register_forward_hook(conv_hook) for m in names if isinstance(m, nn.modules.conv._ConvNd)]
    hooks += [m.register_forward_pre_hook(bn_hook) for m in names if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        with torch.no_grad():
            ref = model(x)
    finally:
        for h in hooks:
            h.remove()
    pairs = [(c, b) for c, b in pairs if calls[c] == 1 and calls[b] == 1]
    if not pairs:
        return 0
    originals = {}
    for c, b in pairs:
        conv, bn = model.get_submodule(c), model.get_submodule(b)
        originals[c], originals[b] = conv, bn
        model.set_submodule(c, fuse_conv_bn_eval(conv, bn))
        model.set_submodule(b, nn.Identity())
    with torch.no_grad():
        got = model(x)
    if not torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * max(1.0, float(ref.abs().max()))):
        for name, mod in originals.items():  # a conv output used elsewhere too: folding changed the model
            model.set_submodule(name, mod)  # fuse_conv_bn_eval copied them: the originals are untouched
        return 0
    return len(pairs)


def _export(model: Any, x: Any, path: Path, opset: int) -> None:
    """TorchScript export (ModelOpt's Q/DQ symbolics), then ONNX Runtime's basic (portable) graph optimization,
    as `quant_pre_process` runs it: constant folding turns each weight's QuantizeLinear into an int8 initializer.
    Its WeightBiasQuantization pass is off (it gave one conv of three an int32 bias, which TensorRT's parser
    rejects; biases follow the scheme in `_for_scheme`), and so is ConstantSharing (zero points stay per pair)."""
    import warnings

    import onnxruntime as ort
    import torch

    from pipeline.onnx_utils import INPUT_NAME, OUTPUT_NAME

    raw = path.with_name(path.name + ".raw.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings from the quantizers' amax checks
            torch.onnx.export(model, (x,), str(raw), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(path)
        ort.InferenceSession(str(raw), so, providers=["CPUExecutionProvider"],
                             disabled_optimizers=["WeightBiasQuantization", "ConstantSharing"])
    finally:
        raw.unlink(missing_ok=True)


def _for_scheme(path: Path, scheme: Any) -> None:
    """Rewrite the exported S8S8 float-bias QDQ in place to what `scheme` asks (see the module docstring)."""
    import onnx

    m = onnx.load(str(path))
    if scheme.activation_type == "uint8":
        _activations_to_uint8(m.graph)
    if scheme.quantize_bias:
        _quantize_biases(m.graph)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def _activations_to_uint8(g: Any) -> None:
    """int8 (zero point z) -> uint8 (zero point z + 128) for every Q/DQ pair on an activation: the same grid."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for n in list(g.node):
        if n.op_type != "QuantizeLinear" or n.input[0] in inits or len(n.input) < 3 or n.input[2] not in inits:
            continue
        zp = numpy_helper.to_array(inits[n.input[2]])
        if zp.dtype != np.int8:
            continue
        # a new initializer per pair: the zero point may be shared with a weight's (ConstantSharing, if on)
        name = f"{n.output[0]}_zero_point_u8"
        g.initializer.append(numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), name))
        n.input[2] = name
        for dq in consumers.get(n.output[0], []):
            if dq.op_type == "DequantizeLinear":
                dq.input[2] = name


def _quantize_biases(g: Any) -> None:
    """Float Conv/Gemm biases -> int32 DequantizeLinear(bias / (s_x * s_w)), as ONNX Runtime's quantizer does."""
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    new_nodes = []
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3 or n.input[2] not in inits:
            continue
        dq_x, dq_w = producer.get(n.input[0]), producer.get(n.input[1])
        if not (dq_x and dq_w and dq_x.op_type == dq_w.op_type == "DequantizeLinear"):
            continue
        if dq_x.input[1] not in inits or dq_w.input[1] not in inits:
            continue
        bias = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
        s = (numpy_helper.to_array(inits[dq_x.input[1]]).astype(np.float64)
             * numpy_helper.to_array(inits[dq_w.input[1]]).astype(np.float64))
        s = np.broadcast_to(s.reshape(-1), bias.shape) if s.size > 1 else np.full(bias.shape, float(s))
        s = np.where(s > 0, s, 1.0)
        q = np.clip(np.round(bias / s), np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        base = n.input[2]
        g.initializer.extend([numpy_helper.from_array(q, base + "_quantized"),
                              numpy_helper.from_array(s.astype(np.float32), base + "_quantized_scale"),
                              numpy_helper.from_array(np.zeros(bias.shape, np.int32), base + "_quantized_zero_point")])
        new_nodes.append(helper.make_node("DequantizeLinear", [base + "_quantized", base + "_quantized_scale",
                                                               base + "_quantized_zero_point"], [base + "_dq"],
                                          name=base + "_DequantizeLinear", axis=0))
        n.input[2] = base + "_dq"
    if new_nodes:  # topological order: the bias DQs go first (their inputs are initializers)
        nodes = new_nodes + list(g.node)
        del g.node[:]
        g.node.extend(nodes)
