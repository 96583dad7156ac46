"""The deploy bundle (`dist/<target>/`) and the SSH path that runs it on a device.

`bundle` makes the bundle from a run directory (what each runtime adds comes from `pipeline.backends`,
the TensorRT build recipe and QDQ checks from `pipeline.build.recipe`), `ssh` ships and runs it, `cli` is
`edgepipe deploy`. `device/` holds the device runner, which runs on the device without edgepipe (Python >= 3.8,
numpy, ONNX Runtime or TensorRT).
"""
