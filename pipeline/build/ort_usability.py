"""ONNX Runtime's mobile usability checker, run and parsed: how much of a model NNAPI and CoreML would take.

`onnxruntime.tools.mobile_helpers.usability_checker.analyze_model` logs its findings as text; this module
captures those lines (into a log file for the bundle) and turns them into per-EP facts for the build metrics.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pipeline.fileio import write_text

_PARTITIONS = re.compile(r"(\d+) partitions with a total of (\d+)/(\d+) nodes can be handled by the (.+) EP\.")
_AS_IS = re.compile(r"Model should perform well with (.+) as is: (\w+)")
_FIXED = re.compile(r"Model should perform well with (.+) if modified to have fixed input shapes: (\w+)")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def check_mobile_usability(onnx_path: Path, log_path: Path | None = None) -> dict[str, Any]:
    """Run ORT's mobile usability checker and parse what it says.

    Args:
        onnx_path: the model as it will be converted (static shapes if the .ort has them).
        log_path: where to write the checker's full text (None: not written).
    Returns:
        {"try_mobile_eps": bool (ORT's verdict), "recommendation": str, "eps": {EP name: {"partitions",
        "supported_nodes", "nodes", "coverage", "as_is", "with_fixed_shapes", "unsupported_ops"}}}.
    """
    from onnxruntime.tools.mobile_helpers.usability_checker import analyze_model

    logger = logging.getLogger("edgepipe.ort_mobile_usability")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the checker is chatty: its text goes to the log file, not the console
    handler = _Lines()
    logger.addHandler(handler)
    try:
        try_eps = bool(analyze_model(Path(onnx_path), skip_optimize=False, logger=logger))
    finally:
        logger.removeHandler(handler)
    if log_path is not None:
        write_text(log_path, "\n".join(handler.lines) + "\n")
    return {"try_mobile_eps": try_eps, "recommendation": _recommendation(try_eps),
            "eps": parse_usability(handler.lines)}


def _recommendation(try_eps: bool) -> str:
    # The two conclusions of ORT's own check_onnx_model_mobile_usability tool, in its words.
    if try_eps:
        return ("NNAPI or CoreML may help: compare the NNAPI EP on Android and the CoreML EP on iOS "
                "against the CPU EP on the device")
    return "use the CPU EP (NNAPI and CoreML would take too little of this model to pay off)"


def parse_usability(lines: list[str]) -> dict[str, dict[str, Any]]:
    """Per-EP facts from the usability checker's log lines (the first, as-is analysis of each EP).

    Args:
        lines: the checker's INFO messages, in order.
    Returns:
        {EP name: {"partitions", "supported_nodes", "nodes", "coverage", "as_is", "with_fixed_shapes",
        "unsupported_ops"}}; an EP the log does not mention is absent.
    """
    eps: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for raw in lines:
        line = raw.strip()
        # "Checking NNAPI" opens an EP's section; "Checking if ..." and "Checking <path> for usability" do not
        if line.startswith("Checking ") and not line.startswith("Checking if ") and " for usability" not in line:
            current = eps.setdefault(line[len("Checking "):], {"with_fixed_shapes": None, "unsupported_ops": []})
        elif line.startswith("Partition information if the model was updated"):
            current = None  # the what-if analysis with fixed shapes: only its verdict (below) is kept
        elif current is not None and (m := _PARTITIONS.match(line)) and "partitions" not in current:
            part, sup, total = (int(v) for v in m.groups()[:3])
            current.update(partitions=part, supported_nodes=sup, nodes=total,
                           coverage=round(sup / total, 4) if total else 0.0)
        elif current is not None and line.startswith("Unsupported ops:") and not current["unsupported_ops"]:
            current["unsupported_ops"] = sorted(o for o in line.split(":", 1)[1].strip().split(",") if o)
        elif m := _AS_IS.match(line):
            eps.setdefault(m.group(1), {})["as_is"] = m.group(2)
        elif m := _FIXED.match(line):
            eps.setdefault(m.group(1), {})["with_fixed_shapes"] = m.group(2)
    return eps
