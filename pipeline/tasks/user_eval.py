"""The user's evaluation function: `eval: "module:function"`, called as `fn(predict, data) -> float`.

`predict(x)` takes a float32 NCHW numpy batch of any length and returns the model's outputs as a list of
numpy arrays (in the model's output order), whatever runs the model: a PyTorch module, an ONNX Runtime
session, or a `pipeline.runtimes` Runtime (ONNX Runtime, TensorRT, PyTorch). `data` is the evaluation split
as the user's config gives it (ground truth such as boxes comes from the user's own files). The score is
higher-is-better in [0, 1]; budgets (`max_accuracy_drop`) are in points of score x 100.

The module is imported like model and data factories: the config's folder first on the import path, and a
file beside the config preferred over an installed module of the same name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.user_code import import_user_module

EVAL_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
Predict = Callable[[np.ndarray], list]


def load_eval(spec: str, base: Path | None = None, field: str = "eval") -> Callable[[Predict, Any], Any]:
    """Import the user's evaluation function.

    Args:
        spec: "module:function" (e.g. "metrics:map50").
        base: the config's folder: put on the import path, and `module.py` there is preferred.
        field: the config field or option it came from, for messages ("eval", "--eval").
    Returns:
        The function.
    Raises:
        UserError: a malformed spec, a module that cannot be imported, a missing or non-callable attribute.
    """
    if not isinstance(spec, str) or not EVAL_PATTERN.match(spec):
        raise UserError(f"{field} = {spec!r}: allowed: 'module:function', e.g. 'metrics:map50'")
    mod_name, fn_name = spec.split(":")
    module = import_user_module(mod_name, base, spec, field)
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise UserError(f"{field} = {spec!r}: module {mod_name!r} ({getattr(module, '__file__', '?')}) has no "
                        f"{fn_name!r}")
    if not callable(fn):
        raise UserError(f"{field} = {spec!r}: {fn_name} is a {type(fn).__name__}, not a function fn(predict, data)")
    fn.__edgepipe_spec__ = spec  # type: ignore[attr-defined]  # named in later messages
    return fn


def make_predict(model: Any, batch_size: int = 64) -> Predict:
    """`predict(x) -> list[np.ndarray]` over a PyTorch module, an ONNX Runtime session or a Runtime.

    Args:
        model: a `torch.nn.Module` (run in eval mode, no grad, on its own device), an
            `onnxruntime.InferenceSession`, or an opened `pipeline.runtimes` Runtime (`infer` + `inputs`).
        batch_size: rows per call; the outputs of the calls are joined along axis 0. A runtime with a static
            batch (a DLA engine) gets its last batch padded and the padding dropped.
    Returns:
        The predict function.
    Raises:
        UserError: `model` is none of those.
    """
    if hasattr(model, "infer") and hasattr(model, "inputs"):
        return _batched(_runtime_call(model), batch_size, _static_batch(model))
    if hasattr(model, "get_inputs") and hasattr(model, "run"):
        name = model.get_inputs()[0].name
        return _batched(lambda x: list(model.run(None, {name: x})), batch_size, None)
    if hasattr(model, "forward") and hasattr(model, "parameters"):
        return _batched(_torch_call(model), batch_size, None)
    raise UserError(f"cannot make predict() from a {type(model).__name__}: allowed: a torch nn.Module, an "
                    "onnxruntime.InferenceSession or a pipeline.runtimes Runtime")


def _runtime_call(rt: Any) -> Callable[[np.ndarray], list]:
    name = rt.inputs()[0].name
    return lambda x: [np.asarray(o) for o in rt.infer({name: x})]


def _static_batch(rt: Any) -> int | None:
    shape = rt.inputs()[0].shape
    return int(shape[0]) if shape and shape[0] is not None else None


def _torch_call(model: Any) -> Callable[[np.ndarray], list]:
    import torch

    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")

    def call(x: np.ndarray) -> list:
        with torch.inference_mode():
            out = model(torch.from_numpy(x).to(device))
        if isinstance(out, dict):
            out = list(out.values())
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [o.detach().float().cpu().numpy() for o in outs]

    return call


def _batched(call: Callable[[np.ndarray], list], batch_size: int, static: int | None) -> Predict:
    step = static or batch_size

    def predict(x: Any) -> list:
        x = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
        if x.ndim < 2:
            raise UserError(f"predict(x): x has shape {list(x.shape)}; allowed: a batch, e.g. (N, C, H, W)")
        parts = []
        for i in range(0, len(x), step):
            xb, n = x[i:i + step], len(x[i:i + step])
            if static and n < static:  # a static-batch engine takes exactly `static` rows
                xb = np.concatenate([xb, np.repeat(xb[-1:], static - n, axis=0)])
            parts.append([o[:n] for o in call(np.ascontiguousarray(xb))])
        if not parts:
            return []
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    return predict


def score(fn: Callable[[Predict, Any], Any], predict: Predict, data: Any, name: str | None = None) -> float:
    """Call `fn(predict, data)` and check the result is a score in [0, 1].

    Args:
        fn: the user's evaluation function.
        predict: from `make_predict`.
        data: the evaluation split, passed through as it is.
        name: how to name the function in messages (default: its "module:function").
    Returns:
        The score as a float.
    Raises:
        UserError: the function raised, or returned something other than a finite number in [0, 1]; the
            message names the function and the value.
    """
    label = name or getattr(fn, "__edgepipe_spec__", None) or getattr(fn, "__qualname__", repr(fn))
    try:
        value = fn(predict, data)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"eval {label!r} raised {type(e).__name__}: {str(e)[:300]}") from None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UserError(f"eval {label!r} returned {value!r} ({type(value).__name__}); allowed: a float in [0, 1], "
                        "higher is better")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise UserError(f"eval {label!r} returned {value!r}; allowed: a float in [0, 1], higher is better "
                        "(a percentage? divide by 100)")
    return value


def evaluate(fn: Callable[[Predict, Any], Any] | str, model: Any, data: Any, base: Path | None = None,
             batch_size: int = 64) -> float:
    """The user's score for `model` on `data`: `load_eval` (for a spec string), `make_predict`, `score`.

    Args:
        fn: the function, or its "module:function" spec.
        model: a torch module, an ONNX Runtime session, an opened Runtime, or an ONNX file path.
        data: the evaluation split.
        base: the config's folder (for a spec string).
        batch_size: rows per model call.
    Returns:
        The score in [0, 1].
    """
    if isinstance(fn, str):
        fn = load_eval(fn, base)
    if isinstance(model, (str, Path)):
        from pipeline.runtimes.base import RuntimeOptions, open_runtime

        with open_runtime(str(model), None, RuntimeOptions(providers=("CPUExecutionProvider",))) as rt:
            return score(fn, make_predict(rt, batch_size), data)
    return score(fn, make_predict(model, batch_size), data)


def eval_split(data: Any, split: str = "test") -> Any:
    """A split of a run's `Data` as the config gave it (the user's own dataset object), else `data` itself.

    Args:
        data: the run's `Data`, or anything else (returned as it is).
        split: "test" (the held-out split), "val" (the search slice of INT8), or another split name; a
            missing split falls back to "test".
    Returns:
        The dataset the user's `eval` function receives.
    """
    splits = getattr(data, "splits", None)
    if isinstance(splits, dict):
        for name in (split, "test"):
            if name in splits:
                return splits[name]
    return data
