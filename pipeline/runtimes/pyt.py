"""PyTorch: a `torch.export` .pt2 file or a `module:function` factory (plus optional weights).

With `device="cuda"` (and CUDA available) each infer is also timed with CUDA events around the
forward pass; `last_device_ms` holds that time (it excludes the host<->device copies, which the
harness's host timing includes).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.runtimes.base import RuntimeFailure, RuntimeOptions, TensorSpec
from pipeline.safeload import load_weights

_TORCH_TO_NP = {
    "torch.float32": "float32",
    "torch.float16": "float16",
    "torch.float64": "float64",
    "torch.int64": "int64",
    "torch.int32": "int32",
    "torch.uint8": "uint8",
    "torch.int8": "int8",
    "torch.bool": "bool",
}


class TorchRuntime:
    """open -> infer* -> close (or `with TorchRuntime(...) as rt:`) over a torch module in eval mode."""

    runtime = "pytorch"
    supports_trtexec = False

    def __init__(self, model: str | os.PathLike, options: RuntimeOptions | None = None):
        """Args:
        model: a `.pt2` file saved with `torch.export.save`, or `package.module:function` returning
            an `nn.Module` (called with no arguments).
        options: threads (torch.set_num_threads), device ("cpu", "cuda", "cuda:N"), and for a factory
            model `weights` (a .safetensors file or a state dict loaded with torch.load(weights_only=True))
            and `input_shape` (its inputs cannot be read from a graph).
        """
        self.model = str(model)
        self.options = options or RuntimeOptions()
        self._module = None
        self._specs: list[TensorSpec] = []
        self._device = "cpu"
        self.last_device_ms: float | None = None

    def __enter__(self) -> TorchRuntime:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Load the module, move it to the device and switch it to eval mode.

        Raises:
            RuntimeFailure: no torch, no CUDA for device "cuda", a missing or unreadable model or weights file.
        """
        try:
            import torch
        except ImportError as e:
            raise RuntimeFailure(f"PyTorch is not installed here ({e})") from None

        if self.options.threads is not None:
            torch.set_num_threads(int(self.options.threads))
        want = (self.options.device or "cpu").lower()
        if want.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeFailure(f"device = {want!r} but CUDA is not available here (allowed: cpu)")
            self._device = want
        elif want != "cpu":
            raise RuntimeFailure(f"device = {want!r} (allowed: cpu, cuda)")
        if self.model.endswith(".pt2"):
            module = self._load_pt2(torch)
        elif ":" in self.model and not Path(self.model).exists():
            module = self._load_factory()
        else:
            raise RuntimeFailure(f"PyTorch model {self.model!r}: expected a .pt2 file (torch.export) "
                                 "or module:function")
        if self.options.weights:
            try:  # safetensors, or torch.load(weights_only=True): never runs pickled code
                load_weights(module, Path(self.options.weights), "model")
            except UserError as e:
                raise RuntimeFailure(str(e)) from None
        if hasattr(module, "eval") and not self.model.endswith(".pt2"):
            module.eval()
        self._module = module.to(self._device) if hasattr(module, "to") else module

    def _load_pt2(self, torch):
        p = Path(self.model)
        if not p.is_file():
            raise RuntimeFailure(f"PyTorch model not found: {p}")
        try:
            ep = torch.export.load(str(p))
        except Exception as e:
            raise RuntimeFailure(f"torch.export.load could not read {p}: {e}") from None
        user_inputs = set(ep.graph_signature.user_inputs)
        for node in ep.graph.nodes:
            if node.op == "placeholder" and node.name in user_inputs:
                val = node.meta.get("val")
                shape = tuple(int(d) if isinstance(d, int) else None for d in getattr(val, "shape", ()))
                dtype = _TORCH_TO_NP.get(str(getattr(val, "dtype", "torch.float32")), "float32")
                self._specs.append(TensorSpec(node.name, shape, dtype))
        return ep.module()

    def _load_factory(self):
        mod_name, _, fn_name = self.model.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as e:
            raise RuntimeFailure(f"PyTorch factory {self.model!r} could not be imported: {e}") from None
        module = fn()
        shape = self.options.input_shape or getattr(module, "example_input_shape", None)
        dims = tuple(shape) if shape else (None,)
        self._specs = [TensorSpec("input", dims, "float32")]
        return module

    def inputs(self) -> list[TensorSpec]:
        """Inputs read from the exported graph (or `input_shape` for a factory)."""
        return list(self._specs)

    def infer(self, feeds: dict[str, Any]) -> list[Any]:
        """Forward pass on the inputs (in `inputs()` order); outputs come back as numpy on the host."""
        import torch

        if self._module is None:
            raise RuntimeFailure("TorchRuntime used before open() (use `with TorchRuntime(...) as rt:`)")
        names = [s.name for s in self._specs] if self._specs else list(feeds)
        with torch.inference_mode():
            args = [torch.from_numpy(feeds[n]).to(self._device) for n in names]
            if self._device == "cpu":
                out = self._module(*args)
            else:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                out = self._module(*args)
                end.record()
                end.synchronize()
                self.last_device_ms = float(start.elapsed_time(end))
            outs = out if isinstance(out, (list, tuple)) else [out]
            return [o.detach().cpu().numpy() for o in outs]

    def close(self) -> None:
        """Release the module (and cached CUDA memory)."""
        self._module = None
        if self._device != "cpu":
            import torch

            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        """torch version, device, threads; CUDA-event device time excludes the copies."""
        import torch

        return {
            "runtime": self.runtime,
            "version": torch.__version__,
            "model": self.model,
            "device": self._device,
            "threads": torch.get_num_threads(),
            "transfers": "excluded" if self._device != "cpu" else "n/a",
        }
