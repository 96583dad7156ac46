"""Built-in models and loading of users' models (factories and weights)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.safeload import load_weights as load_weights  # re-exported: callers import it from here

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
    mod = _import_factory_module(mod_name, base, spec.factory, role)
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


def _import_factory_module(mod_name: str, base: Path, factory: str, role: str) -> Any:
    """Import the factory's module, preferring the file beside the config.

    A `models.py` beside the config is loaded from that file even when another module called
    `models` was imported earlier in the process; otherwise the module is imported normally
    (an installed package such as `mypkg.nets`).
    """
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))  # so the user's module can import its siblings
    rel = Path(*mod_name.split("."))
    for cand in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
        if cand.is_file():
            unique = f"_edgepipe_user_{abs(hash(str(cand.resolve())))}_{mod_name.replace('.', '_')}"
            spec = importlib.util.spec_from_file_location(unique, cand)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[unique] = mod
            try:
                spec.loader.exec_module(mod)
            except Exception as e:
                del sys.modules[unique]
                raise UserError(
                    f"{role}.factory = {factory!r}: importing {cand} failed: {type(e).__name__}: {e}") from None
            return mod
    try:
        return importlib.import_module(mod_name)
    except ImportError as e:
        raise UserError(f"{role}.factory = {factory!r}: cannot import module {mod_name!r} ({e})") from None

