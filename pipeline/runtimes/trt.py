"""TensorRT: deserialize an engine, run it with execute_async_v3, time it with CUDA events.

Also copied verbatim into deploy bundles as `trt_runtime.py` and run ON the Jetson (Python >= 3.8, numpy,
TensorRT, cuda-python or pycuda; no `pipeline` package), so it imports only the standard library and numpy
at top level and falls back to local definitions of the protocol types.

Options (RuntimeOptions):
- transfers: "included" (default) - `last_device_ms` spans host->device copies, the enqueue and the
  device->host copies; "excluded" - it spans the enqueue only (copies still happen, so outputs are real).
  describe() names the mode so reports never compare one with the other.
- dla_core: set on the TensorRT Runtime before deserializing an engine built for a DLA core.
Device memory comes from cuda-python (cuda.bindings.runtime, or the older cuda.cudart) or pycuda,
whichever imports; describe() says which.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import numpy as np

try:
    from pipeline.runtimes.base import TRANSFER_MODES, RuntimeFailure, RuntimeOptions, TensorSpec
except ImportError:  # on the device, outside the pipeline package
    from dataclasses import dataclass

    TRANSFER_MODES = ("included", "excluded")

    class RuntimeFailure(Exception):  # type: ignore[no-redef]
        """The engine cannot be loaded or run here (no TensorRT, no CUDA device, bad engine file or input)."""

        exit_code = 2

    @dataclass(frozen=True)
    class TensorSpec:  # type: ignore[no-redef]
        """A model input or output: name, shape (None for a dynamic dimension) and numpy dtype name."""

        name: str
        shape: tuple
        dtype: str

    @dataclass(frozen=True)
    class RuntimeOptions:  # type: ignore[no-redef]
        """The fields of pipeline.runtimes.base.RuntimeOptions (validated here by TrtRuntime)."""

        threads: Optional[int] = None
        providers: Optional[tuple] = None
        device: str = "cpu"
        graph_optimization_level: str = "all"
        shared_thread_pool: bool = False
        transfers: str = "included"
        dla_core: Optional[int] = None
        weights: Optional[str] = None
        input_shape: Optional[tuple] = None


class _CudaPython:
    """Device memory, copies, a stream and events through cuda-python's runtime API."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate())
        self.start = self._ok(cudart.cudaEventCreate())
        self.end = self._ok(cudart.cudaEventCreate())

    def _ok(self, result: Any) -> Any:
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise RuntimeFailure("CUDA call failed: %s (error %d)" % (err, int(err)))
        if isinstance(result, tuple):
            return result[1] if len(result) == 2 else result[1:]
        return None

    def stream_handle(self) -> int:
        return int(self.stream)

    def malloc(self, nbytes: int) -> Any:
        return self._ok(self.rt.cudaMalloc(max(int(nbytes), 1)))

    def free(self, ptr: Any) -> None:
        self._ok(self.rt.cudaFree(ptr))

    def ptr(self, dev: Any) -> int:
        return int(dev)

    def htod(self, dev: Any, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(dev, host.ctypes.data, host.nbytes, kind, self.stream))

    def dtoh(self, host: np.ndarray, dev: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, kind, self.stream))

    def record_start(self) -> None:
        self._ok(self.rt.cudaEventRecord(self.start, self.stream))

    def record_end(self) -> None:
        self._ok(self.rt.cudaEventRecord(self.end, self.stream))

    def synchronize(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    def elapsed_ms(self) -> float:
        return float(self._ok(self.rt.cudaEventElapsedTime(self.start, self.end)))

    def close(self) -> None:
        for ev in (self.start, self.end):
            self.rt.cudaEventDestroy(ev)
        self.rt.cudaStreamDestroy(self.stream)


class _PyCuda:
    """The same operations through pycuda (common on JetPack images)."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        # The primary context is what TensorRT uses; retain it rather than creating a private one.
        self.ctx = cuda.Device(0).retain_primary_context()
        self.ctx.push()
        self.stream = cuda.Stream()
        self.start = cuda.Event()
        self.end = cuda.Event()

    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def malloc(self, nbytes: int) -> Any:
        return self.cuda.mem_alloc(max(int(nbytes), 1))

    def free(self, ptr: Any) -> None:
        ptr.free()

    def ptr(self, dev: Any) -> int:
        return int(dev)

    def htod(self, dev: Any, host: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(dev, host, self.stream)

    def dtoh(self, host: np.ndarray, dev: Any) -> None:
        self.cuda.memcpy_dtoh_async(host, dev, self.stream)

    def record_start(self) -> None:
        self.start.record(self.stream)

    def record_end(self) -> None:
        self.end.record(self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def elapsed_ms(self) -> float:
        return float(self.end.time_since(self.start))

    def close(self) -> None:
        self.ctx.pop()


def open_cuda() -> Any:
    """The first CUDA binding that imports and finds a device (cuda-python, then pycuda)."""
    reasons = []
    for cls in (_CudaPython, _PyCuda):
        try:
            return cls()
        except Exception as e:  # ImportError, no driver (error 35), no device
            reasons.append("%s: %s" % (cls.name, e))
    raise RuntimeFailure("no usable CUDA binding/device (" + "; ".join(reasons) + ")")


class TrtRuntime:
    """Runs a serialized TensorRT engine (.engine/.plan) on the GPU (or GPU + DLA); a context manager."""

    runtime = "tensorrt"
    supports_trtexec = True

    def __init__(self, model_path: str, options: Optional[RuntimeOptions] = None) -> None:
        """Args:
        model_path: the serialized engine.
        options: `transfers` and `dla_core` (see the module docstring); the other fields do not apply.
        Raises:
            RuntimeFailure: `transfers` is not one of TRANSFER_MODES.
        """
        self.model_path = str(model_path)
        self.options = options or RuntimeOptions()
        self.transfers = str(self.options.transfers)
        if self.transfers not in TRANSFER_MODES:
            raise RuntimeFailure(
                "transfers = %r is not allowed (allowed: %s)" % (self.transfers, ", ".join(TRANSFER_MODES))
            )
        dla = self.options.dla_core
        self.dla_core = None if dla is None else int(dla)
        self.last_device_ms: Optional[float] = None
        self._trt: Any = None
        self._cuda: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._names: List[str] = []
        self._inputs: List[str] = []
        self._outputs: List[str] = []
        self._buffers: Dict[str, Any] = {}
        self._capacity: Dict[str, int] = {}

    def __enter__(self) -> TrtRuntime:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Deserialize the engine, create the execution context, stream and events."""
        if not os.path.isfile(self.model_path):
            raise RuntimeFailure("engine file not found: %s" % self.model_path)
        try:
            import tensorrt as trt
        except ImportError as e:
            raise RuntimeFailure("TensorRT is not importable: %s" % e) from None
        self._trt = trt
        self._cuda = open_cuda()  # before TensorRT touches the device, so both share the primary context
        try:
            self._load(trt)
        except BaseException:
            self.close()  # a failed open leaves nothing allocated (`with` only closes what it opened)
            raise

    def _load(self, trt: Any) -> None:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if self.dla_core is not None:
            runtime.DLA_core = self.dla_core  # must precede deserialization of a DLA engine
        with open(self.model_path, "rb") as f:
            engine = runtime.deserialize_cuda_engine(f.read())
        if engine is None:
            raise RuntimeFailure(
                "TensorRT %s could not deserialize %s (built with another TensorRT version or GPU?)"
                % (trt.__version__, self.model_path)
            )
        self._runtime = runtime
        self._engine = engine
        context = engine.create_execution_context()
        self._context = context
        self._names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in self._names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in self._names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _spec(self, name: str) -> TensorSpec:
        engine = self._engine
        shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
        trt = self._trt
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
        return TensorSpec(name=name, shape=shape, dtype=dtype)

    def inputs(self) -> List[TensorSpec]:
        """Engine inputs; a dynamic axis (the batch) is None."""
        return [self._spec(n) for n in self._inputs]

    def outputs(self) -> List[TensorSpec]:
        """Engine outputs, in engine order."""
        return [self._spec(n) for n in self._outputs]

    def _device_buffer(self, name: str, nbytes: int) -> Any:
        # Grow-only buffers: a smaller batch reuses the allocation of a larger one.
        if self._capacity.get(name, -1) < nbytes:
            if name in self._buffers:
                self._cuda.free(self._buffers[name])
            self._buffers[name] = self._cuda.malloc(nbytes)
            self._capacity[name] = nbytes
        return self._buffers[name]

    def infer(self, feeds: Dict[str, Any]) -> List[np.ndarray]:
        """Copy inputs in, run once, copy outputs out; sets `last_device_ms` from CUDA events."""
        if self._context is None:
            raise RuntimeFailure("call open() before infer()")
        trt, cuda, context, engine = self._trt, self._cuda, self._context, self._engine
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise RuntimeFailure("missing inputs %s (engine inputs: %s)" % (missing, self._inputs))
        hosts = {}
        for name in self._inputs:
            want = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = np.ascontiguousarray(np.asarray(feeds[name]), dtype=want)
            if not context.set_input_shape(name, tuple(host.shape)):
                raise RuntimeFailure("input %r shape %s is outside the engine's profile" % (name, host.shape))
            hosts[name] = host
            context.set_tensor_address(name, cuda.ptr(self._device_buffer(name, host.nbytes)))
        results = {}
        for name in self._outputs:
            shape = tuple(context.get_tensor_shape(name))
            out = np.empty(shape, dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
            results[name] = out
            context.set_tensor_address(name, cuda.ptr(self._device_buffer(name, out.nbytes)))
        if self.transfers == "included":
            cuda.record_start()
        for name, host in hosts.items():
            cuda.htod(self._buffers[name], host)
        if self.transfers == "excluded":
            cuda.record_start()
        if not context.execute_async_v3(cuda.stream_handle()):
            raise RuntimeFailure("execute_async_v3 failed (see the TensorRT log)")
        if self.transfers == "excluded":
            cuda.record_end()
        for name, out in results.items():
            cuda.dtoh(out, self._buffers[name])
        if self.transfers == "included":
            cuda.record_end()
        cuda.synchronize()  # the host arrays are only valid after the stream drains
        self.last_device_ms = cuda.elapsed_ms()
        return [results[n] for n in self._outputs]

    def close(self) -> None:
        """Free device buffers, the context, the engine and the stream."""
        if self._cuda is not None:
            for buf in self._buffers.values():
                self._cuda.free(buf)
            self._buffers.clear()
            self._capacity.clear()
            self._context = None
            self._engine = None
            self._cuda.close()
            self._cuda = None

    def describe(self) -> Dict[str, Any]:
        """Runtime, versions, transfers mode and device, for reports."""
        info: Dict[str, Any] = {
            "runtime": self.runtime,
            "engine": self.model_path,
            "transfers": self.transfers,
            "device_timing": "CUDA events around "
            + ("H2D copies + enqueue + D2H copies" if self.transfers == "included" else "the enqueue only"),
            "dla_core": self.dla_core,
        }
        if self._trt is not None:
            info["version"] = str(self._trt.__version__)
        if self._cuda is not None:
            info["cuda_binding"] = self._cuda.name
        return info
