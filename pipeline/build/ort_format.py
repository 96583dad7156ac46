"""ONNX Runtime Mobile: the ORT-format (.ort) model, its reduced-build operator config, the mobile usability report.

Everything is done by ONNX Runtime's own tooling: `onnxruntime.tools.convert_onnx_models_to_ort` writes the .ort
file and `required_operators_and_types.config` (the `--include_ops_by_config` input of a reduced-size ORT build),
and `onnxruntime.tools.mobile_helpers.usability_checker` estimates how much of the graph NNAPI and CoreML would
take. The .ort is then loaded in ORT's CPU provider and compared with its ONNX on held-out inputs: the mobile
providers are not in the x86 wheel, so that is the check that can run here.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.build.ort_usability import check_mobile_usability
from pipeline.errors import BudgetExceeded, UserError
from pipeline.fileio import write_text
from pipeline.targets import OrtSpec

ORT_MODEL = "model.ort"
USABILITY_LOG = "mobile_usability.txt"
# ORT's name for the saved-runtime-optimizations replay switch ("runtime" optimization style).
REPLAY_RUNTIME_OPTS = "session.enable_saved_runtime_optimizations"
# The converter's platform switch: with "arm" it keeps signed-INT8 QDQ groups (ARM's S8 kernels); x86 defaults
# rewrite them to U8. The reference ONNX session gets the same setting, so the check compares formats alone.
QDQ_INT8_ALLOWED = "session.qdqisint8allowed"
REF_CHUNK = 32  # the reference ONNX (dynamic batch) runs this many samples at a time


def config_name(type_reduction: bool) -> str:
    """The operator config's file name, as ORT's converter names it (with or without per-operator types)."""
    return "required_operators_and_types.config" if type_reduction else "required_operators.config"


@dataclass(frozen=True)
class OrtConversion:
    """What `convert_to_ort` wrote.

    Attributes:
        ort_path: the .ort model.
        config_path: the reduced-build operator (and type) config.
        optimization_style: "fixed" or "runtime" (ORT's converter styles).
        target_platform: "arm" or "amd64", the converter's platform switch.
        fixed_batch: the batch size the .ort was fixed to, or None when shapes stayed as in the ONNX.
        session_config: the session config entries the app must set to load the .ort as intended.
        seconds: conversion wall time.
        usability: ORT's mobile usability check of the converted graph (`check_mobile_usability`), or None.
    """

    ort_path: Path
    config_path: Path
    optimization_style: str
    target_platform: str
    fixed_batch: int | None
    session_config: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    usability: dict[str, Any] | None = None


def convert_to_ort(onnx_path: Path, out_dir: Path, *, arch: str, optimization_style: str = "fixed",
                   type_reduction: bool = True, fixed_batch: int | None = None,
                   check_usability: bool = True) -> OrtConversion:
    """Convert an ONNX model to ORT format with ONNX Runtime's converter.

    Args:
        onnx_path: the ONNX model (FP32 or INT8 QDQ).
        out_dir: where `model.ort` and the operator config go (replaced atomically).
        arch: the target's arch ("aarch64" converts with ORT's "arm" platform settings, e.g. S8 QDQ allowed).
        optimization_style: "fixed" or "runtime" (see OrtFormatSpec).
        type_reduction: write per-operator type lists into the config (a smaller reduced build).
        fixed_batch: fix a symbolic batch dimension to this size first (NNAPI and CoreML want static shapes).
        check_usability: run ORT's mobile usability checker on the model as converted (its text goes to
            `out_dir/mobile_usability.txt`).
    Returns:
        OrtConversion.
    Raises:
        UserError: a missing ONNX, or a model ORT's converter cannot convert (its message included).
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise UserError(f"ORT format: ONNX not found: {onnx_path}")
    style = {"fixed": OptimizationStyle.Fixed, "runtime": OptimizationStyle.Runtime}.get(optimization_style)
    if style is None:
        raise UserError(f"ORT format: optimization_style = {optimization_style!r} (allowed: fixed, runtime)")
    platform = "arm" if arch == "aarch64" else "amd64"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # The converter names its outputs after the input and may leave temporaries beside it: stage in a folder
    # of our own next to out_dir, then move the two files in (a crash never leaves a half-written model.ort).
    with tempfile.TemporaryDirectory(prefix=".ort-convert-", dir=out_dir) as tmp:
        staged = Path(tmp) / "model.onnx"
        batch = _stage_model(onnx_path, staged, fixed_batch)
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):  # the converter prints progress; keep our stdout for results
                convert_onnx_models_to_ort(staged, output_dir=Path(tmp) / "out", optimization_styles=[style],
                                           target_platform=platform, enable_type_reduction=type_reduction)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph classes
            # Measured with onnxruntime 1.32: "runtime" style fails on QDQ graphs whose biases stay float
            # (quantize_bias: false) while "fixed" converts them.
            hint = ("; the 'runtime' optimization style fails on some graphs (e.g. QDQ with float biases, "
                    "quantize_bias: false): try onnxruntime.ort_format.optimization_style: fixed"
                    if optimization_style == "runtime" else "")
            raise UserError(f"ORT format: onnxruntime could not convert {onnx_path}: {e}{hint}") from None
        ort_files = sorted((Path(tmp) / "out").glob("*.ort"))
        configs = sorted((Path(tmp) / "out").glob("*.config"))
        if len(ort_files) != 1 or len(configs) != 1:
            raise UserError(f"ORT format: expected one .ort and one .config from ORT's converter, got "
                            f"{[p.name for p in ort_files + configs]}; its log:\n{log.getvalue()}")
        usability = check_mobile_usability(staged, out_dir / USABILITY_LOG) if check_usability else None
        ort_path, cfg_path = out_dir / ORT_MODEL, out_dir / config_name(type_reduction)
        shutil.move(ort_files[0], ort_path)
        # ORT's config names the models it was made from by absolute path: keep them relative to our temp folder
        write_text(cfg_path, configs[0].read_text(encoding="utf-8").replace(f"{Path(tmp).resolve()}/", ""))
    session = {REPLAY_RUNTIME_OPTS: "1"} if optimization_style == "runtime" else {}
    return OrtConversion(ort_path, cfg_path, optimization_style, platform, batch, session,
                         round(time.perf_counter() - t0, 3), usability)


def _stage_model(src: Path, dest: Path, fixed_batch: int | None) -> int | None:
    """Copy the ONNX to `dest`, fixing symbolic batch dimensions to `fixed_batch` (returns it, or None if no
    dimension was symbolic or no batch was asked for)."""
    if fixed_batch is None:
        shutil.copyfile(src, dest)
        return None
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

    model = onnx.load(str(src))
    params = {i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input
              if i.type.tensor_type.shape.dim and i.type.tensor_type.shape.dim[0].dim_param}
    if not params:
        shutil.copyfile(src, dest)
        return None
    for name in sorted(params):
        make_dim_param_fixed(model.graph, name, fixed_batch)
    fix_output_shapes(model)
    onnx.save(model, str(dest))
    return fixed_batch


def verify_ort(onnx_path: Path, conv: OrtConversion, x: Any, min_top1_agreement: float,
               max_abs_diff: float | None = None) -> dict[str, Any]:
    """Run the .ort and its ONNX on the CPU provider over `x` and compare every output.

    Args:
        onnx_path: the ONNX the .ort came from (the reference, with the converter's platform setting).
        conv: the conversion (its .ort, fixed batch and session config).
        x: inputs (N, ...) float32, held out from training and calibration.
        min_top1_agreement: the least top-1 agreement (first output) allowed, in [0, 1].
        max_abs_diff: the largest absolute difference allowed over all outputs; None: recorded only.
    Returns:
        {"samples", "max_abs_diff", "mean_abs_diff", "top1_agreement", "outputs": [per output], "provider",
        "reference", "host_defaults"}; "host_defaults" (arm conversions only, recorded, not gated) compares the
        .ort with the ONNX under this x86 host's default settings, which run signed-INT8 QDQ through U8 kernels:
        what an accuracy measured here may differ by from the phone's arithmetic.
    Raises:
        BudgetExceeded: agreement or difference outside the tolerance (the numbers in the message).
    """
    import numpy as np
    import onnxruntime as ort

    from pipeline.build.parity import compare_outputs

    x = np.ascontiguousarray(x, dtype=np.float32)
    ref_so = ort.SessionOptions()
    int8_allowed = "1" if conv.target_platform == "arm" else "0"
    ref_so.add_session_config_entry(QDQ_INT8_ALLOWED, int8_allowed)
    ref_sess = ort.InferenceSession(str(onnx_path), ref_so, providers=["CPUExecutionProvider"])
    so = ort.SessionOptions()
    for k, v in conv.session_config.items():
        so.add_session_config_entry(k, v)
    try:
        got_sess = ort.InferenceSession(str(conv.ort_path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UserError(f"ORT format: {conv.ort_path} does not load in ONNX Runtime's CPU provider: {e}") from None
    ref, got = _run_chunks(ref_sess, x, REF_CHUNK), _run_chunks(got_sess, x, conv.fixed_batch or REF_CHUNK)
    if len(ref) != len(got):
        raise UserError(f"ORT format: {conv.ort_path.name} has {len(got)} outputs, its ONNX {len(ref)}")
    outputs = [compare_outputs(r, g) for r, g in zip(ref, got, strict=True)]
    result = {"samples": int(len(x)), "max_abs_diff": max(o["max_abs_diff"] for o in outputs),
              "mean_abs_diff": max(o["mean_abs_diff"] for o in outputs),
              "top1_agreement": outputs[0]["top1_agreement"], "outputs": outputs,
              "provider": "CPUExecutionProvider",
              "reference": f"onnx on onnxruntime-cpu, {QDQ_INT8_ALLOWED}={int8_allowed}"}
    if conv.target_platform == "arm":
        host = _run_chunks(ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]), x, REF_CHUNK)
        h = compare_outputs(host[0], got[0])
        result["host_defaults"] = {"top1_agreement": h["top1_agreement"], "max_abs_diff": h["max_abs_diff"]}
    if result["top1_agreement"] < min_top1_agreement:
        raise BudgetExceeded(f"ORT format: {conv.ort_path.name} agrees with its ONNX on "
                             f"{100 * result['top1_agreement']:.2f} % of {len(x)} held-out top-1 decisions "
                             f"< onnxruntime.ort_format.min_top1_agreement {100 * min_top1_agreement:.2f} %")
    if max_abs_diff is not None and result["max_abs_diff"] > max_abs_diff:
        raise BudgetExceeded(f"ORT format: {conv.ort_path.name} differs from its ONNX by up to "
                             f"{result['max_abs_diff']:.4g} > onnxruntime.ort_format.max_abs_diff {max_abs_diff}")
    return result


def _run_chunks(sess: Any, x: Any, step: int) -> list[Any]:
    """Every output of `sess` over `x`, fed `step` samples at a time (a fixed-batch .ort takes only that)."""
    import numpy as np

    name = sess.get_inputs()[0].name
    runs = [sess.run(None, {name: x[i:i + step]}) for i in range(0, len(x), step)]
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]


def session_setup(spec: OrtSpec, conv: OrtConversion | None = None) -> dict[str, Any]:
    """How the app should open the .ort: providers in order and their options in ONNX Runtime's own terms.

    Args:
        spec: the target's `onnxruntime:` section.
        conv: the conversion (adds the session config entries it needs), or None.
    Returns:
        {"execution_providers", "provider_options", "session_config_entries", "intra_op_num_threads",
        "graph_optimization_level"}.
    """
    options: dict[str, Any] = {}
    entries = dict(conv.session_config) if conv else {}
    if spec.xnnpack is not None:
        options["XnnpackExecutionProvider"] = {"intra_op_num_threads": str(spec.xnnpack.intra_op_num_threads)}
        entries["session.intra_op.allow_spinning"] = "0"  # ORT's advice beside XNNPACK's own thread pool
    if spec.nnapi is not None:
        n = spec.nnapi
        options["NnapiExecutionProvider"] = {"flags": [f for f, on in (
            ("NNAPI_FLAG_USE_FP16", n.use_fp16), ("NNAPI_FLAG_USE_NCHW", n.use_nchw),
            ("NNAPI_FLAG_CPU_DISABLED", n.cpu_disabled), ("NNAPI_FLAG_CPU_ONLY", n.cpu_only)) if on]}
    if spec.coreml is not None:
        c = spec.coreml
        options["CoreMLExecutionProvider"] = {
            "ModelFormat": c.model_format, "MLComputeUnits": c.compute_units,
            "RequireStaticInputShapes": str(int(c.require_static_input_shapes)),
            "EnableOnSubgraphs": str(int(c.enable_on_subgraphs))}
    return {"execution_providers": list(spec.execution_providers), "provider_options": options,
            "session_config_entries": entries, "intra_op_num_threads": spec.intra_op_threads,
            "graph_optimization_level": spec.graph_optimization_level}


def build_ort(onnx_path: Path, target: Any, workdir: Path, samples: Any = None) -> dict[str, Any]:
    """The build stage's work for an `onnxruntime.model_format: ort` target: convert, check usability, verify.

    Args:
        onnx_path: the final ONNX.
        target: the Target (its `onnxruntime:` section and profile decide the conversion).
        workdir: the build stage's folder.
        samples: held-out inputs (N, ...) float32; None: random inputs of the model's shape (numbers only,
            the top-1 agreement of random inputs says little).
    Returns:
        {"ort_format": {...files, style, sizes, session setup}, "mobile_usability": {...}, "parity": {...}}.
    Raises:
        BudgetExceeded: the .ort disagrees with its ONNX beyond `onnxruntime.ort_format`'s tolerance.
    """
    import numpy as np

    spec = target.onnxruntime or OrtSpec()
    fmt, profile = spec.ort_format, target.profile
    static = profile.min_batch == profile.max_batch
    conv = convert_to_ort(Path(onnx_path), Path(workdir), arch=target.arch, optimization_style=fmt.optimization_style,
                          type_reduction=fmt.type_reduction, fixed_batch=profile.opt_batch if static else None)
    inputs = "held-out"
    if samples is None or not len(samples):
        import onnx

        dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        shape = [d.dim_value or 1 for d in dims]
        samples, inputs = np.random.default_rng(0).standard_normal([16] + shape[1:]).astype(np.float32), "random"
    import onnxruntime as ort

    # the phone's providers are not in this onnxruntime build: the check (and the host benchmark) ran without them
    absent = [p for p in spec.execution_providers if p not in ort.get_available_providers()]
    parity = dict(verify_ort(Path(onnx_path), conv, samples, fmt.min_top1_agreement, fmt.max_abs_diff),
                  inputs=inputs, providers_not_here=absent)
    return {
        "ort_format": {
            "model": conv.ort_path.name, "config": conv.config_path.name,
            "usability_log": USABILITY_LOG if conv.usability is not None else None,
            "bytes": conv.ort_path.stat().st_size, "onnx_bytes": Path(onnx_path).stat().st_size,
            "optimization_style": conv.optimization_style, "target_platform": conv.target_platform,
            "fixed_batch": conv.fixed_batch, "seconds": conv.seconds, "session": session_setup(spec, conv),
        },
        "mobile_usability": conv.usability,
        "parity": parity,
    }


def summary(built: dict[str, Any]) -> str:
    """One line for the report: the .ort, its agreement with the ONNX, and ORT's mobile verdict."""
    f, p, u = built["ort_format"], built["parity"], built.get("mobile_usability") or {}
    text = (f"ORT format {f['model']} ({f['bytes'] / 1e3:.1f} kB, {f['optimization_style']} optimizations, "
            f"{f['target_platform']}), vs its ONNX on the CPU provider ({p['samples']} {p['inputs']} inputs): "
            f"top-1 agreement {100 * p['top1_agreement']:.2f} %, max abs diff {p['max_abs_diff']:.3g}")
    eps = "; ".join(f"{name} {e.get('coverage', 0):.0%} of nodes in {e.get('partitions', '?')} partition(s): "
                    f"{e.get('as_is', '?')}" for name, e in (u.get("eps") or {}).items())
    if p.get("providers_not_here"):
        text += f" ({', '.join(p['providers_not_here'])} not in this onnxruntime build: checked without them)"
    return text + (f". ORT mobile check: {eps}. Recommendation: {u['recommendation']}" if u else "")
