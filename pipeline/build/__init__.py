"""Engine building for TensorRT targets: the portable builder (trt_builder), parity against ONNX Runtime.

`trt_builder.py` is also copied verbatim into the deploy bundle, so it imports nothing from `pipeline`.
"""
