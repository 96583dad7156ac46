"""ONNX Runtime: CPU and whatever execution providers this onnxruntime build offers.

`RuntimeOptions.providers` asks for providers (in priority order); those present are used and the
others are reported in `describe()["providers_missing"]`. Without a request, every available local
provider is used except TensorRT's (it builds an engine on the first run: ask for it explicitly) and
Azure's (a remote endpoint, not a local device).

Also copied verbatim into deploy bundles as `ort_runtime.py` and run ON the device (Python >= 3.8,
numpy, onnxruntime; no `pipeline` package), so it imports only the standard library at top level and
falls back to local definitions of the protocol types.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

try:
    from pipeline.runtimes.base import RuntimeFailure, RuntimeOptions, TensorSpec
except ImportError:  # on the device, outside the pipeline package
    from dataclasses import dataclass

    class RuntimeFailure(Exception):  # type: ignore[no-redef]
        """ONNX Runtime cannot load or run the model here (the device runner prints it in one line)."""

        exit_code = 2

    @dataclass(frozen=True)
    class TensorSpec:  # type: ignore[no-redef]
        """A model input or output: name, shape (None for a dynamic dimension) and numpy dtype name."""

        name: str
        shape: tuple
        dtype: str

    @dataclass(frozen=True)
    class RuntimeOptions:  # type: ignore[no-redef]
        """The fields of pipeline.runtimes.base.RuntimeOptions (validated here by OrtRuntime.open)."""

        threads: Optional[int] = None
        providers: Optional[tuple] = None
        device: str = "cpu"
        graph_optimization_level: str = "all"
        shared_thread_pool: bool = False
        transfers: str = "included"
        dla_core: Optional[int] = None
        weights: Optional[str] = None
        input_shape: Optional[tuple] = None


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
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
                  "MIGraphXExecutionProvider")
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}

_GLOBAL_POOL: Dict[str, Any] = {}


def _global_pool(threads: Optional[int]) -> bool:
    """Set up ONNX Runtime's process-wide thread pool once; False when this build cannot."""
    if "ok" not in _GLOBAL_POOL:
        try:
            from onnxruntime.capi import _pybind_state as C

            C.set_global_thread_pool_sizes(int(threads or os.cpu_count() or 1), 1)
            _GLOBAL_POOL.update(ok=True, threads=threads)
        except Exception as e:  # an older build, or a pool already fixed: fall back to per-session pools
            _GLOBAL_POOL.update(ok=False, error=str(e))
    return bool(_GLOBAL_POOL["ok"])


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeFailure("onnxruntime is not installed here (%s): pip install onnxruntime" % e) from None
    return onnxruntime


class OrtRuntime:
    """open -> infer* -> close (or `with OrtRuntime(...) as rt:`) over an `onnxruntime.InferenceSession`."""

    runtime = "onnxruntime"
    supports_trtexec = False

    def __init__(self, model_path: Union[str, os.PathLike], options: Optional[RuntimeOptions] = None) -> None:
        """Args:
        model_path: the .onnx file.
        options: threads (-> intra_op_num_threads), providers, graph_optimization_level ("disable",
            "basic", "extended", "all"; default "all"), and shared_thread_pool: use the process-wide
            intra-op pool instead of one per session. Interleaved benchmarks need it: with a pool per
            session, the idle-spinning workers of the other sessions steal the cores (measured on 2 cores:
            teacher p90 9.2 ms interleaved with per-session pools, 1.15 ms with the shared pool, 1.18 ms
            alone). Once set, every later session in the process must use it (ONNX Runtime's rule), so
            use it only in a process of its own: `pipeline.bench.isolated` does that.
        """
        self.model_path = Path(model_path)
        self.options = options or RuntimeOptions()
        self._session: Any = None
        self._shared_pool = False
        self._missing: List[str] = []

    def __enter__(self) -> OrtRuntime:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the session.

        Raises:
            RuntimeFailure: no onnxruntime, a missing or invalid model file, a bad option, no provider asked
                for is available.
        """
        ort = _import_ort()
        if not self.model_path.is_file():
            raise RuntimeFailure("ONNX model not found: %s" % self.model_path)
        so = ort.SessionOptions()
        threads = self.options.threads
        if threads is not None:
            if int(threads) < 1:
                raise RuntimeFailure("threads = %s: must be >= 1" % threads)
            so.intra_op_num_threads = int(threads)
        if self.options.shared_thread_pool:
            _global_pool(threads)
        self._shared_pool = bool(_GLOBAL_POOL.get("ok"))
        if self._shared_pool:  # ONNX Runtime refuses per-session pools once the global one exists
            so.use_per_session_threads = False
        level = self.options.graph_optimization_level
        if level not in _LEVELS:
            raise RuntimeFailure("graph_optimization_level = %r (allowed: %s)" % (level, ", ".join(_LEVELS)))
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
        providers = self._choose_providers(ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(str(self.model_path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... classes
            raise RuntimeFailure("onnxruntime could not load %s: %s" % (self.model_path, e)) from None

    def _choose_providers(self, available: List[str]) -> List[str]:
        asked = list(self.options.providers or [])
        if not asked:
            chosen = [p for p in available if p not in _NOT_BY_DEFAULT]
            return chosen or ["CPUExecutionProvider"]
        chosen = [p for p in asked if p in available]
        self._missing = [p for p in asked if p not in available]
        if not chosen:
            raise RuntimeFailure(
                "providers = %s: none is available in this onnxruntime build (available: %s)"
                % (asked, ", ".join(available))
            )
        return chosen

    def _sess(self) -> Any:
        if self._session is None:
            raise RuntimeFailure("OrtRuntime used before open() (use `with OrtRuntime(...) as rt:`)")
        return self._session

    def inputs(self) -> List[TensorSpec]:
        """Model inputs; a dynamic dimension (symbolic name or unknown) is None."""
        specs = []
        for i in self._sess().get_inputs():
            shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (i.shape or []))
            specs.append(TensorSpec(i.name, shape, _ORT_TYPES.get(i.type, i.type)))
        return specs

    def infer(self, feeds: Dict[str, Any]) -> List[Any]:
        """One `session.run` over all outputs (nothing else: the harness times this call)."""
        return self._sess().run(None, feeds)

    def close(self) -> None:
        """Drop the session (onnxruntime frees it when the last reference goes)."""
        self._session = None

    def describe(self) -> Dict[str, Any]:
        """Runtime version, providers in use, threads and whether timing includes copies."""
        ort = _import_ort()
        used = self._session.get_providers() if self._session is not None else []
        on_gpu = any(p in _GPU_PROVIDERS for p in used)
        return {
            "runtime": self.runtime,
            "version": ort.__version__,
            "model": str(self.model_path),
            "providers": used,
            "providers_missing": self._missing,
            "threads": self.options.threads,
            "thread_pool": "shared" if self._shared_pool else "per-session",
            "graph_optimization_level": self.options.graph_optimization_level,
            # numpy in, numpy out: with a GPU provider the copies happen inside session.run
            "transfers": "included" if on_gpu else "n/a",
        }
