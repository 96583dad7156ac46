"""One module per runtime (ort, trt, pyt), all sharing the small Runner protocol in `base`.

Nothing heavy is imported here: each runtime imports its library inside its functions.
"""

from pipeline.runtimes.base import Runner, TensorSpec, open_runner  # noqa: F401
