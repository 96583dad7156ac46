"""PyTorch runner: a `torch.export` .pt2 file or a `module:function` factory (plus optional weights).

With `device="cuda"` (and CUDA available) each infer is also timed with CUDA events around the
forward pass; `last_device_ms` holds that time (it excludes the host<->device copies, which the
harness's host timing includes).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Optional

from pipeline.errors import UserError
from pipeline.runtimes.base import RunnerOptions, TensorSpec

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


class TorchRunner:
    """open -> infer* -> close over a torch module in eval / inference mode."""

    runtime = "pytorch"

    def __init__(self, model: str | os.PathLike, options: RunnerOptions | None = None):
        """Args:
        model: a `.pt2` file saved with `torch.export.save`, or `package.module:function` returning
            an `nn.Module` (called with no arguments).
        options: threads (torch.set_num_threads), device ("cpu" or "cuda"), and in `extra`:
            `weights` (a .safetensors file or a state dict loaded with torch.load(weights_only=True)),
            `input_shape` (tuple, for a factory model whose inputs cannot be read from a graph).
        """
        self.model = str(model)
        self.options = options or RunnerOptions()
        self._module = None
        self._specs: list[TensorSpec] = []
        self._device = "cpu"
        self.last_device_ms: Optional[float] = None

    def open(self) -> None:
        """Load the module, move it to the device and switch it to eval mode."""
        import torch

        if self.options.threads is not None:
            torch.set_num_threads(int(self.options.threads))
        want = (self.options.device or "cpu").lower()
        if want.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UserError(f"device = {want!r} but CUDA is not available here (allowed: cpu)")
            self._device = want
        elif want != "cpu":
            raise UserError(f"device = {want!r} (allowed: cpu, cuda)")
        if self.model.endswith(".pt2"):
            module = self._load_pt2(torch)
        elif ":" in self.model and not Path(self.model).exists():
            module = self._load_factory()
        else:
            raise UserError(f"PyTorch model {self.model!r}: expected a .pt2 file (torch.export) or module:function")
        weights = self.options.extra.get("weights")
        if weights:
            self._load_weights(module, weights)
        if hasattr(module, "eval") and not self.model.endswith(".pt2"):
            module.eval()
        self._module = module.to(self._device) if hasattr(module, "to") else module

    def _load_pt2(self, torch):
        p = Path(self.model)
        if not p.is_file():
            raise UserError(f"PyTorch model not found: {p}")
        try:
            ep = torch.export.load(str(p))
        except Exception as e:
            raise UserError(f"torch.export.load could not read {p}: {e}") from None
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
            raise UserError(f"PyTorch factory {self.model!r} could not be imported: {e}") from None
        module = fn()
        shape = self.options.extra.get("input_shape") or getattr(module, "example_input_shape", None)
        dims = tuple(shape) if shape else (None,)
        self._specs = [TensorSpec("input", dims, "float32")]
        return module

    def _load_weights(self, module, weights: str) -> None:
        from pipeline.models import load_weights  # safetensors, or torch.load(weights_only=True)

        load_weights(module, Path(weights), "model")

    def inputs(self) -> list[TensorSpec]:
        """Inputs read from the exported graph (or `input_shape` for a factory)."""
        return list(self._specs)

    def infer(self, feeds: dict[str, Any]) -> list[Any]:
        """Forward pass on the inputs (in `inputs()` order); outputs come back as numpy on the host."""
        import torch

        if self._module is None:
            raise RuntimeError("TorchRunner used before open()")
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
