"""Stage `export`: torch -> ONNX (dynamic batch), onnx.checker, onnxslim, numeric parity vs PyTorch.

Both the final student and the teacher are exported: the teacher's FP32 ONNX stays in the run so the
latency and accuracy comparison can be rerun on any machine (a `model:` run has one model in both roles:
it is exported once and copied).

Any task: a model may return several tensors (a tuple, or a dict) - boxes and scores, masks, several heads.
Each becomes a named ONNX output (dict keys, the model's `output_names` attribute, else output_0, ...; a
single output stays `logits`), and parity is checked on every output. Height and width are made dynamic
where the model allows it: the dynamic export is compared with PyTorch at half and double the size, and
kept only when every output matches there; the range checked is recorded in the ONNX (shape profiles and
benchmarks read it). Otherwise the export has a static size and the reason is logged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import BudgetExceeded, UserError
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.common import load_model
from pipeline.stages.metrics import ExportMetrics, OnnxExport

PARITY_SAMPLES = 512  # held-out images compared between PyTorch and ONNX (the first ones: the same every run)
PROBE_SAMPLES = 8  # images compared at the other sizes when checking a dynamic height/width
MIN_SIDE = 8  # the smallest height/width probed (a few stride-2 layers make less vanish)


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `student_fp32.onnx` and `teacher_fp32.onnx`.

    Args:
        inputs: needs `prune` (student) and `train_teacher`; `config.eval` (optional) scores the ONNX.
        cfg: `ExportConfig` (opset, simplify, tolerance).
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = student_fp32.onnx, `teacher` = teacher_fp32.onnx; ExportMetrics (parity of both;
        `parity_vs_torch` also holds per-output differences, the output names and the dynamic axes).
    Raises:
        BudgetExceeded: an ONNX output differs from PyTorch beyond `atol`, or the top-1 agreement of class
            logits is below `min_top1_agreement`.
    """
    from pipeline.onnx_utils import ort_outputs
    from pipeline.tasks.user_eval import eval_split, load_eval, make_predict, score

    d = inputs.data
    x_test, y_test = d.sample("test", PARITY_SAMPLES)  # bounded: parity needs no more
    spec = getattr(inputs.config, "eval", None)
    eval_fn = load_eval(spec, inputs.config_dir) if spec else None
    files, exported, done = {}, {}, {}
    roles = (("student", "prune", "student_fp32.onnx"), ("teacher", "train_teacher", "teacher_fp32.onnx"))
    for role, stage, name in roles:
        src = inputs.artifact(stage).path
        path = workdir / name
        if src in done:  # `model:` is both teacher and student: the same checkpoint, exported once
            shutil.copyfile(done[src][0], path)
            exported[role] = done[src][1]
            files["model" if role == "student" else "teacher"] = path
            continue
        model = load_model(inputs, role, src)
        info, parity = export_checked(model, d.input_shape, path, cfg, x_test, inputs.log)
        if eval_fn is not None:
            from pipeline.onnx_utils import ort_session

            acc = score(eval_fn, make_predict(ort_session(path)), eval_split(d))
        else:
            acc = _top1(ort_outputs(path, x_test)[0], y_test)
        inputs.log(f"[export] {name}: {'score (' + spec + ')' if spec else 'top-1 accuracy'} {acc * 100:.2f}%")
        exported[role] = OnnxExport(**info, parity_vs_torch=parity, accuracy=acc, file_bytes=path.stat().st_size)
        files["model" if role == "student" else "teacher"] = path
        done[src] = (path, exported[role])
    metrics = ExportMetrics(student=exported["student"], teacher=exported["teacher"],
                            accuracy=exported["student"].accuracy)
    return Artifact(files, "model", metrics)


def export_checked(model: Any, input_shape: tuple[int, ...], path: Path, cfg: Any, x: np.ndarray,
                   log: Any = print) -> tuple[dict, dict]:
    """Export `model` (any number of outputs), with dynamic height/width when it holds, and check parity.

    Args:
        model: the nn.Module.
        input_shape: (C, H, W) the model was trained at.
        path: the `.onnx` to write.
        cfg: `ExportConfig` (opset, dynamo, simplify, atol, min_top1_agreement).
        x: held-out inputs (N, C, H, W) for the parity check.
        log: progress lines.
    Returns:
        (export info: nodes, opset, simplified; parity: max_abs_diff, top1_agreement, samples, outputs,
        output_names, dynamic_axes, spatial_range).
    Raises:
        BudgetExceeded: parity beyond `cfg.atol` / `cfg.min_top1_agreement` at the trained size.
        UserError: the model's outputs are not tensors, or the exporter fails.
    """
    from pipeline.onnx_utils import compare_outputs, export_onnx, ort_outputs, set_spatial_range
    from pipeline.tasks.user_eval import make_predict

    model.eval()
    net, names = with_named_outputs(model, x[:2])
    torch_predict = make_predict(net)
    sizes = probe_sizes(input_shape, net)
    dynamic_hw, why = bool(sizes), "the model rejects other input sizes" if not sizes else ""
    info = export_onnx(net, input_shape, path, cfg.opset, cfg.dynamo, cfg.simplify, names, dynamic_hw)
    if dynamic_hw:
        bad = _probe_mismatch(path, torch_predict, x[:PROBE_SAMPLES], sizes, names, cfg.atol)
        if bad:  # e.g. a size traced into a Reshape: export again with the trained size fixed
            dynamic_hw, why = False, bad
            info = export_onnx(net, input_shape, path, cfg.opset, cfg.dynamo, cfg.simplify, names, False)
    ref = torch_predict(x)
    parity = compare_outputs(ref, ort_outputs(path, x), names)
    h, w = input_shape[1:]
    spatial = None
    if dynamic_hw:
        (h0, w0), (h1, w1) = sizes[0], sizes[-1]
        spatial = {"min": [h0, w0], "opt": [h, w], "max": [h1, w1]}
        set_spatial_range(path, spatial)
    parity.update(output_names=list(names), dynamic_axes=["batch", "height", "width"] if dynamic_hw else ["batch"],
                  spatial_range=spatial)
    top1 = parity["top1_agreement"]
    log(f"[export] {path.name}: {info['nodes_after']} nodes, outputs {', '.join(names)}, max |onnx - torch| "
        f"{parity['max_abs_diff']:.2e}{'' if top1 is None else f', top-1 agreement {top1 * 100:.2f}%'}, "
        + (f"dynamic batch, height {h0}-{h1}, width {w0}-{w1}" if dynamic_hw else f"dynamic batch ({why})"))
    if parity["max_abs_diff"] > cfg.atol or (top1 is not None and top1 < cfg.min_top1_agreement):
        worst = max(parity["outputs"], key=lambda n: parity["outputs"][n]["max_abs_diff"])
        raise BudgetExceeded(
            f"export: {path.name} differs from PyTorch: max abs diff {parity['max_abs_diff']:.3g} on output "
            f"{worst!r} (export.atol = {cfg.atol}), top-1 agreement "
            f"{'n/a' if top1 is None else f'{top1:.4f}'} (export.min_top1_agreement = {cfg.min_top1_agreement})"
        )
    if top1 is None:
        parity["top1_agreement"] = 1.0  # no class logits: the recorded field means "nothing disagreed"
    return info, parity


def with_named_outputs(model: Any, x: np.ndarray) -> tuple[Any, list[str]]:
    """The model as the exporter needs it (tensor or tuple outputs) and one name per output.

    Args:
        model: the nn.Module; it may return a tensor, a tuple/list of tensors, or a dict of tensors.
        x: a small input batch to see what it returns.
    Returns:
        (module to export, output names): dict keys, else `model.output_names`, else output_0, ...; a single
        tensor is `logits` unless `output_names` names it.
    Raises:
        UserError: an output is not a tensor, or names are missing or repeated.
    """
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    own = list(getattr(model, "output_names", None) or [])
    if isinstance(out, torch.Tensor):
        return model, [str(own[0]) if len(own) == 1 else "logits"]
    keys = list(out) if isinstance(out, dict) else None
    values = list(out.values()) if keys else list(out) if isinstance(out, (tuple, list)) else None
    if not values or not all(isinstance(v, torch.Tensor) for v in values):
        raise UserError(f"export: {type(model).__name__} returns {type(out).__name__}; allowed: a tensor, or a "
                        "tuple/list/dict of tensors")
    names = keys or own or [f"output_{i}" for i in range(len(values))]
    if len(names) != len(values) or len(set(names)) != len(names) or "input" in names:
        raise UserError(f"export: {type(model).__name__}.output_names = {names} for {len(values)} outputs; "
                        "allowed: one distinct name per output, other than 'input'")
    return (_tuple_outputs(model, keys) if keys else model), [str(n) for n in names]


def _tuple_outputs(model: Any, keys: list[str]) -> Any:
    """A dict-returning model as a tuple-returning one (ONNX outputs are positional), in `keys` order."""
    import torch

    class TupleOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            out = self.inner(x)
            return tuple(out[k] for k in keys)

    return TupleOutputs().eval()


def probe_sizes(input_shape: tuple[int, ...], model: Any) -> list[tuple[int, int]]:
    """The (height, width) sizes a dynamic export is checked at: half and double the trained size.

    Args:
        input_shape: (C, H, W).
        model: the module (a forward pass at each size tells whether PyTorch itself accepts it).
    Returns:
        [(half), (double)] when PyTorch runs the model at both, else [] (static height/width).
    """
    import torch

    if len(input_shape) != 3:
        return []
    c, h, w = input_shape
    sizes = [(max(MIN_SIDE, h // 2), max(MIN_SIDE, w // 2)), (2 * h, 2 * w)]
    try:
        with torch.inference_mode():
            for sh, sw in sizes:
                model(torch.zeros(1, c, sh, sw))
    except Exception:  # a Linear after Flatten, a fixed-size reshape, ...: the model has one size
        return []
    return sizes


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of NCHW images (real content at the probed size, no extra dependency)."""
    h, w = x.shape[2:]
    rows = (np.arange(size[0]) * h // size[0]).clip(0, h - 1)
    cols = (np.arange(size[1]) * w // size[1]).clip(0, w - 1)
    return np.ascontiguousarray(x[:, :, rows][:, :, :, cols])


def _probe_mismatch(path: Path, torch_predict: Any, x: np.ndarray, sizes: list, names: list[str],
                    atol: float) -> str:
    """'' when the ONNX matches PyTorch at every probed size, else why not."""
    from pipeline.onnx_utils import compare_outputs, ort_outputs

    for size in sizes:
        xs = _resize(x, size)
        try:
            cmp = compare_outputs(torch_predict(xs), ort_outputs(path, xs), names)
        except Exception as e:  # ONNX Runtime rejects the size, or the output shapes differ
            return f"at {size[0]}x{size[1]} the ONNX fails ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        if cmp["max_abs_diff"] > atol:
            return f"at {size[0]}x{size[1]} the ONNX differs from PyTorch by {cmp['max_abs_diff']:.3g}"
    return ""


def _top1(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of class logits on the labeled images (0 when the first output is not class logits)."""
    lab = y >= 0
    if logits.ndim != 2 or not lab.any():
        return 0.0
    return float((logits.argmax(1) == y)[lab].mean())
