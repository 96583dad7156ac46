"""Any task, not only classification: the user's evaluation function, and head-aware INT8 for detectors.

- `user_eval`: `eval: "module:function"` loaded like factories and called as `fn(predict, data) -> float`,
  with `predict` wrapping a PyTorch model, an ONNX Runtime session or any `pipeline.runtimes` Runtime.
- `heads`: the decode arithmetic of detection heads (score sigmoid/softmax, box math, concat of heads),
  found on the ONNX graph and scoped to the heads, as fixed INT8 exclusions.

Nothing heavy is imported here.
"""
