"""Built-in models and loading of users' models (factories and weights)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.safeload import load_weights as load_weights  # re-exported: callers import it from here
from pipeline.user_code import import_user_module

BUILTINS = {
    "resnet_teacher": ("pipeline.models.resnet", "make_resnet_teacher"),
    "mobilenetv2_student": ("pipeline.models.mobilenetv2", "make_mobilenetv2_student"),
    # torchvision-compatible state_dict keys: torchvision checkpoints load as `weights:`
    "resnet50": ("pipeline.models.tv_resnet", "resnet50"),
    "mobilenet_v2": ("pipeline.models.tv_mobilenet", "mobilenet_v2"),
}


def build_model(spec: Any, num_classes: int, in_channels: int, base: Path, role: str) -> Any:
    """Instantiate the model a config section describes (weights not loaded).

    Args:
        spec: a `BuiltinModel` or `FactoryModel` config section.
        num_classes: classes in the data.
        in_channels: image channels in the data.
        base: the config file's folder (put on sys.path so `models.py` beside it imports).
        role: "teacher" or "student", for messages.
    Returns:
        The `nn.Module`.
    """
    import torch.nn as nn

    if getattr(spec, "builtin", None):
        mod_name, fn_name = BUILTINS[spec.builtin]
        fn = getattr(importlib.import_module(mod_name), fn_name)
        if spec.builtin == "resnet50":
            if spec.width != 1.0:
                raise UserError(f"{role}.width = {spec.width}: resnet50 has one width (allowed: 1.0, or leave it out)")
            return fn(num_classes=num_classes, in_channels=in_channels)
        if spec.builtin == "mobilenet_v2":
            return fn(num_classes=num_classes, in_channels=in_channels, width_mult=spec.width)
        return fn(num_classes=num_classes, in_channels=in_channels, width=spec.width)
    mod_name, fn_name = spec.factory.split(":")
    mod = import_user_module(mod_name, base, spec.factory, f"{role}.factory")
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise UserError(f"{role}.factory = {spec.factory!r}: module {mod_name!r} has no function {fn_name!r}")
    kwargs = dict(spec.kwargs)
    params = inspect.signature(fn).parameters
    for k, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if k in params and k not in kwargs:
            kwargs[k] = v
    try:
        model = fn(**kwargs)
    except TypeError as e:
        raise UserError(f"{role}.factory = {spec.factory!r} failed with kwargs {kwargs}: {e}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{role}.factory = {spec.factory!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model
