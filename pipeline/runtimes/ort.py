"""ONNX Runtime runner: CPU and whatever execution providers this onnxruntime build offers.

`RunnerOptions.providers` asks for providers (in priority order); those present are used and the
others are reported in `describe()["providers_missing"]`. Without a request, every available local
provider is used except TensorRT's (it builds an engine on the first run: ask for it explicitly) and
Azure's (a remote endpoint, not a local device).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.runtimes.base import RunnerOptions, TensorSpec

# ONNX element type names as onnxruntime reports them -> numpy dtype names
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
_NOT_BY_DEFAULT = ("TensorrtExecutionProvider", "AzureExecutionProvider")
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider")


_GLOBAL_POOL: dict[str, Any] = {}


def _global_pool(threads: int | None) -> bool:
    """Set up ONNX Runtime's process-wide thread pool once; False when this build cannot."""
    if "ok" not in _GLOBAL_POOL:
        try:
            from onnxruntime.capi import _pybind_state as C

            C.set_global_thread_pool_sizes(int(threads or os.cpu_count() or 1), 1)
            _GLOBAL_POOL.update(ok=True, threads=threads)
        except Exception as e:  # an older build, or a pool already fixed: fall back to per-session pools
            _GLOBAL_POOL.update(ok=False, error=str(e))
    return bool(_GLOBAL_POOL["ok"])


class OrtRunner:
    """open -> infer* -> close over an `onnxruntime.InferenceSession`."""

    runtime = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike, options: RunnerOptions | None = None):
        """Args:
        model_path: the .onnx file.
        options: threads (-> intra_op_num_threads), providers, and in `extra`:
            `graph_optimization_level` ("disable", "basic", "extended", "all"; default "all");
            `shared_thread_pool` (bool): use the process-wide intra-op pool instead of one per session.
            Interleaved benchmarks need it: with a pool per session, the idle-spinning workers of the
            other sessions steal the cores (measured on 2 cores: teacher p90 9.2 ms interleaved with
            per-session pools, 1.15 ms with the shared pool, 1.18 ms alone). Once set, every later
            session in the process must use it (ONNX Runtime's rule), so use it only in a process
            of its own: `pipeline.bench.isolated` does that.
        """
        self.model_path = Path(model_path)
        self.options = options or RunnerOptions()
        self._session = None
        self._shared_pool = False
        self._missing: list[str] = []

    def open(self) -> None:
        """Create the session; a missing or invalid model file is a UserError naming the path."""
        import onnxruntime as ort

        if not self.model_path.is_file():
            raise UserError(f"ONNX model not found: {self.model_path}")
        so = ort.SessionOptions()
        if self.options.threads is not None:
            if int(self.options.threads) < 1:
                raise UserError(f"threads = {self.options.threads}: must be >= 1")
            so.intra_op_num_threads = int(self.options.threads)
        if self.options.extra.get("shared_thread_pool"):
            _global_pool(self.options.threads)
        self._shared_pool = bool(_GLOBAL_POOL.get("ok"))
        if self._shared_pool:  # ONNX Runtime refuses per-session pools once the global one exists
            so.use_per_session_threads = False
        level = self.options.extra.get("graph_optimization_level", "all")
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if level not in levels:
            raise UserError(f"graph_optimization_level = {level!r} (allowed: {', '.join(levels)})")
        so.graph_optimization_level = levels[level]
        providers = self._choose_providers(ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(str(self.model_path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... classes
            raise UserError(f"onnxruntime could not load {self.model_path}: {e}") from None

    def _choose_providers(self, available: list[str]) -> list[str]:
        asked = self.options.providers
        if not asked:
            chosen = [p for p in available if p not in _NOT_BY_DEFAULT]
            return chosen or ["CPUExecutionProvider"]
        chosen = [p for p in asked if p in available]
        self._missing = [p for p in asked if p not in available]
        if not chosen:
            raise UserError(
                f"providers = {asked}: none is available in this onnxruntime build "
                f"(available: {', '.join(available)})"
            )
        return chosen

    def _sess(self):
        if self._session is None:
            raise RuntimeError("OrtRunner used before open()")
        return self._session

    def inputs(self) -> list[TensorSpec]:
        """Model inputs; a dynamic dimension (symbolic name or unknown) is None."""
        specs = []
        for i in self._sess().get_inputs():
            shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (i.shape or []))
            specs.append(TensorSpec(i.name, shape, _ORT_TYPES.get(i.type, i.type)))
        return specs

    def infer(self, feeds: dict[str, Any]) -> list[Any]:
        """One `session.run` over all outputs (nothing else: the harness times this call)."""
        return self._sess().run(None, feeds)

    def close(self) -> None:
        """Drop the session (onnxruntime frees it when the last reference goes)."""
        self._session = None

    def describe(self) -> dict[str, Any]:
        """Runtime version, providers in use, threads and whether timing includes copies."""
        import onnxruntime as ort

        used = self._session.get_providers() if self._session is not None else []
        on_gpu = any(p in _GPU_PROVIDERS for p in used)
        return {
            "runtime": self.runtime,
            "version": ort.__version__,
            "model": str(self.model_path),
            "providers": used,
            "providers_missing": self._missing,
            "threads": self.options.threads,
            "thread_pool": "shared" if getattr(self, "_shared_pool", False) else "per-session",
            "graph_optimization_level": self.options.extra.get("graph_optimization_level", "all"),
            # numpy in, numpy out: with a GPU provider the copies happen inside session.run
            "transfers": "included" if on_gpu else "n/a",
        }
