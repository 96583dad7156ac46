"""One module per runtime (ort, trt, pyt), all behind the small Runtime protocol in `base`.

    from pipeline.runtimes.base import RuntimeOptions, open_runtime

    with open_runtime("model.onnx", "ort", RuntimeOptions(threads=2)) as rt:
        outputs = rt.infer(feeds)

Nothing heavy is imported here: each runtime imports its library inside its functions.
"""
