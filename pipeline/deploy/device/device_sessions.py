"""The two ways the device runner runs the model: ONNX Runtime on the CPU, or TensorRT (standalone, Python >= 3.8).

Both expose `infer(x) -> [outputs]`, `close()` and `info` (runtime, version, settings) for the results.
"""

from __future__ import annotations

from pathlib import Path


class OrtSession:
    """ONNX Runtime on the CPU, configured from the target's `onnxruntime` section."""

    def __init__(self, model: Path, spec: dict, threads: int = 0):
        import onnxruntime as ort

        so = ort.SessionOptions()
        levels = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                  "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              levels[spec.get("graph_optimization_level") or "all"])
        threads = threads or spec.get("intra_op_threads") or 0
        if threads:
            so.intra_op_num_threads = int(threads)
        avail = ort.get_available_providers()
        providers = [p for p in spec.get("execution_providers") or ["CPUExecutionProvider"] if p in avail]
        self.session = ort.InferenceSession(str(model), so, providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.info = {"runtime": "onnxruntime", "version": ort.__version__,
                     "providers": self.session.get_providers(), "intra_op_threads": threads or "default"}

    def infer(self, x):
        return self.session.run(None, {self.input_name: x})

    def close(self):
        self.session = None


class TrtSession:
    """TensorRT through the bundled trt_runner.py (a verbatim copy of edgepipe's runner)."""

    def __init__(self, engine: Path, input_name: str, dla_core: int = -1):
        import trt_runner  # shipped in the bundle

        opts_cls = getattr(trt_runner, "RunnerOptions", None)
        extra = {"dla_core": dla_core} if dla_core >= 0 else {}
        opts = opts_cls(device="cuda", extra=extra) if opts_cls else None
        self.runner = trt_runner.TrtRunner(str(engine), opts)
        self.runner.open()
        self.input_name = input_name
        self.info = dict(self.runner.describe(), runtime="tensorrt")

    def infer(self, x):
        return self.runner.infer({self.input_name: x})

    def close(self):
        self.runner.close()
