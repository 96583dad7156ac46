"""The deploy bundle (`dist/<target>/`) and the SSH path that runs it on a device.

`bundle` makes the bundle from a run directory, `recipe` holds the TensorRT build recipe and QDQ checks,
`vendor` copies the TensorRT builder/runner into it, `ssh` ships and runs it, `cli` is `edgepipe deploy`.
`device/` holds the standalone files that run on the device (Python >= 3.8, numpy, ORT or TensorRT).
"""
