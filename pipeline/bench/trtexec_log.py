"""Parse trtexec logs (TensorRT 7.x to 11.x) and `--exportTimes` JSON into a result document.

Summary formats differ by generation:
- 7.x: no `=== Performance summary ===`; blocks titled `Host Latency`, `Enqueue Time`, `H2D Latency`,
  `GPU Compute`, `D2H Latency` with lines `min: X ms (end to end Y ms)` ... `percentile: X ms at 99%`,
  plus `throughput: N qps` and `walltime: S s`.
- 8.0-8.2: summary header; one line per metric `Latency: min = X ms, max = ..., median = ...,
  percentile(99%) = ...`, with an extra `End-to-End Host Latency` line.
- 8.4: like 8.2 without the End-to-End line.
- 8.5-11.x: `percentile(90%)`, `(95%)` and `(99%)` on every line.
Fields a log does not have stay None and are listed in `missing`; a number that cannot be read
(a truncated line) is treated the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from pipeline.bench.stats import LatencyStats
from pipeline.errors import UserError

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)*")  # "[06/12/2022-22:34:00] [I] "
_VERSION = re.compile(r"TensorRT\.trtexec \[TensorRT v(\d+)\]")
_VERSION_LINE = re.compile(r"TensorRT version:\s*(\d+(?:\.\d+)*)")
_METRIC_NAMES = {
    "latency": "latency",
    "end-to-end host latency": "end_to_end",
    "enqueue time": "enqueue",
    "h2d latency": "h2d",
    "gpu compute time": "gpu_compute",
    "d2h latency": "d2h",
}
_V7_BLOCKS = {
    "host latency": "latency",
    "enqueue time": "enqueue",
    "h2d latency": "h2d",
    "gpu compute": "gpu_compute",
    "d2h latency": "d2h",
}
_KEYS = {"min": "min", "max": "max", "mean": "mean", "median": "p50"}


def decode_version(code: str | int) -> tuple[int, int, int]:
    """`v8400` -> (8, 4, 0); `v100200` -> (10, 2, 0) (NV_TENSORRT_VERSION encodings before/after 10)."""
    n = int(code)
    if n >= 10000:
        return n // 10000, (n // 100) % 100, n % 100
    return n // 1000, (n // 100) % 10, n % 100


def _strip(line: str) -> str:
    return _PREFIX.sub("", line.rstrip()).strip()


def _parse_metric_line(body: str) -> dict[str, Optional[float]]:
    """`min = X ms, max = Y ms, ..., percentile(90%) = Z ms` -> {min, max, mean, p50, p90, ...}."""
    out: dict[str, Optional[float]] = {}
    for part in body.split(","):
        part = part.strip()
        m = re.match(r"^(min|max|mean|median)\s*=\s*" + _NUM + r"\s*ms$", part)
        if m:
            out[_KEYS[m.group(1)]] = float(m.group(2))
            continue
        m = re.match(r"^percentile\((\d+(?:\.\d+)?)%\)\s*=\s*" + _NUM + r"\s*ms$", part)
        if m:
            out[f"p{float(m.group(1)):g}"] = float(m.group(2))
    return out


def parse_log_text(text: str) -> dict[str, Any]:
    """Parse a trtexec log.

    Args:
        text: the log (whole, or just its summary).
    Returns:
        {"format", "version", "throughput_qps", "walltime_s", "metrics": {name: {min,...}},
         "command", "gpu_cv"} where names are latency, end_to_end, enqueue, h2d, gpu_compute, d2h.
    Raises:
        UserError: no summary of either kind is in the text.
    """
    version = None
    command = None
    for line in text.splitlines():
        m = _VERSION.search(line)
        if m:
            version = decode_version(m.group(1))
            command = line.split("#", 1)[1].strip() if "#" in line else command
        m = _VERSION_LINE.search(line)
        if m and version is None:
            parts = [int(x) for x in m.group(1).split(".")]
            version = decode_version(parts[0]) if len(parts) == 1 else tuple((parts + [0, 0])[:3])
    lines = [_strip(l) for l in text.splitlines()]
    metrics: dict[str, dict[str, Optional[float]]] = {}
    res: dict[str, Any] = {"version": version, "command": command, "throughput_qps": None, "walltime_s": None,
                           "gpu_cv": None, "metrics": metrics}
    if any(l == "=== Performance summary ===" for l in lines):
        for l in lines:
            name, sep, body = l.partition(":")
            key = _METRIC_NAMES.get(name.strip().lower())
            if sep and key:
                metrics[key] = _parse_metric_line(body)
            elif l.startswith("Throughput:"):
                res["throughput_qps"] = _num_after(l, "qps")
            elif l.startswith("Total Host Walltime:"):
                res["walltime_s"] = _num_after(l, "s")
            m = re.search(r"coefficient of variance = " + _NUM + "%", l)
            if m:
                res["gpu_cv"] = float(m.group(1)) / 100
        if "end_to_end" in metrics:
            res["format"] = "8.0-8.2"
        elif any("p90" in v for v in metrics.values()):
            res["format"] = "8.5+"
        else:
            res["format"] = "8.4"
        return res
    block = None
    for l in lines:
        low = l.lower()
        if low in _V7_BLOCKS:
            block = _V7_BLOCKS[low]
            metrics.setdefault(block, {})
            continue
        if block is None:
            continue
        m = re.match(r"^(min|max|mean|median):\s*" + _NUM + r"\s*ms(?:\s*\(end to end " + _NUM + r" ms\))?", l)
        if m:
            metrics[block][_KEYS[m.group(1)]] = float(m.group(2))
            if m.group(3) is not None:
                metrics.setdefault("end_to_end", {})[_KEYS[m.group(1)]] = float(m.group(3))
            continue
        m = re.match(r"^percentile:\s*" + _NUM + r"\s*ms at (\d+(?:\.\d+)?)%(?:\s*\(end to end " + _NUM + r" ms)?", l)
        if m:
            p = f"p{float(m.group(2)):g}"
            metrics[block][p] = float(m.group(1))
            if m.group(3) is not None:
                metrics.setdefault("end_to_end", {})[p] = float(m.group(3))
            continue
        if low.startswith("throughput:"):
            res["throughput_qps"] = _num_after(l, "qps")
        elif low.startswith("walltime:"):
            res["walltime_s"] = _num_after(l, "s")
    if not metrics.get("latency"):
        raise UserError(
            "no trtexec performance summary found (neither '=== Performance summary ===' nor a 7.x "
            "'Host Latency' block); pass the complete trtexec output"
        )
    res["format"] = "7.x"
    return res


def _num_after(line: str, unit: str) -> Optional[float]:
    m = re.search(_NUM + r"\s*" + re.escape(unit) + r"\b", line)
    return float(m.group(1)) if m else None


def read_export_times(path: str | Path) -> dict[str, list[float]]:
    """Per-iteration times from `trtexec --exportTimes=F.json`.

    Returns:
        {"latency": [...host latency ms...], "gpu_compute": [...], "h2d": [...], "d2h": [...]} with
        only the series present in the file.
    """
    import json

    p = Path(path)
    if not p.is_file():
        raise UserError(f"trtexec times file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"trtexec times file {p} is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise UserError(f"trtexec times file {p}: expected a JSON list of per-iteration records")
    out: dict[str, list[float]] = {"latency": [], "gpu_compute": [], "h2d": [], "d2h": []}
    for rec in data:
        if not isinstance(rec, dict) or ("latencyMs" not in rec and "computeMs" not in rec and "endComputeMs" not in rec):
            continue  # the leading {"count": N} record
        if "latencyMs" in rec:
            out["latency"].append(float(rec["latencyMs"]))
        if "computeMs" in rec:
            out["gpu_compute"].append(float(rec["computeMs"]))
        elif "startComputeMs" in rec and "endComputeMs" in rec:
            out["gpu_compute"].append(float(rec["endComputeMs"]) - float(rec["startComputeMs"]))
        for k, name in (("h2dMs", "h2d"), ("d2hMs", "d2h")):
            if k in rec:
                out[name].append(float(rec[k]))
    out = {k: v for k, v in out.items() if v}
    if not out:
        raise UserError(f"trtexec times file {p} holds no per-iteration latencyMs/computeMs records")
    return out


def transfers_from(version: Optional[tuple[int, ...]], command: Optional[str]) -> Optional[str]:
    """Were host<->device copies inside trtexec's "Latency"? (None when the log does not tell.)"""
    cmd = command or ""
    if "--noDataTransfers" in cmd:
        return "excluded"
    if "--includeDataTransfers" in cmd:
        return "included"
    if version is None:
        return None
    return "excluded" if version[0] >= 11 else "included"


def _batch_from(command: Optional[str]) -> tuple[Optional[int], bool]:
    """(batch, implicit): `--batch=16` (implicit batch, TensorRT < 10) or the leading dimension of
    the first `--shapes=name:NxCxHxW` (explicit batch)."""
    if not command:
        return None, False
    m = re.search(r"--batch=(\d+)", command)
    if m:
        return int(m.group(1)), True
    m = re.search(r"--shapes=[^:\s]+:(\d+)x", command)
    return (int(m.group(1)) if m else None), False


def _ips(qps: Optional[float], batch: Optional[int], implicit: bool) -> Optional[float]:
    # with an implicit-batch engine trtexec's qps already counts samples; with explicit batch it
    # counts inferences of `batch` samples each
    if qps is None or not batch:
        return None
    return qps if implicit else qps * batch


def _stats_from_summary(d: dict[str, Optional[float]], batch: Optional[int], ips: Optional[float]) -> LatencyStats:
    return LatencyStats(
        batch=batch, iterations=0, min=d.get("min"), mean=d.get("mean"), p50=d.get("p50"),
        p90=d.get("p90"), p95=d.get("p95"), p99=d.get("p99"), max=d.get("max"), throughput_ips=ips,
    )


def import_trtexec(log_path: str | Path, times_path: str | Path | None = None, batch: Optional[int] = None) -> dict[str, Any]:
    """Turn a trtexec log (and optionally its --exportTimes JSON) into a result document.

    Args:
        log_path: the saved trtexec output.
        times_path: `--exportTimes` JSON; when given, every statistic is recomputed from the
            per-iteration times (so std, CV and all percentiles exist and the gate can bootstrap).
        batch: samples per query, for throughput (default: from --batch / --shapes in the log).
    Returns:
        A result document (`pipeline.bench.result`), with "trtexec": {format, version, ...}.
    """
    from pipeline.bench.result import make_result, unstable_warning

    p = Path(log_path)
    if not p.is_file():
        raise UserError(f"trtexec log not found: {p}")
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"trtexec log {p} could not be read as text: {e}") from None
    try:
        parsed = parse_log_text(text)
    except UserError as e:
        raise UserError(f"{p}: {e}") from None
    m = parsed["metrics"]
    log_batch, implicit = _batch_from(parsed["command"])
    if batch is None:
        batch = log_batch
    else:
        implicit = False
    qps = parsed["throughput_qps"]
    ips = _ips(qps, batch, implicit)
    if times_path is not None:
        times = read_export_times(times_path)
        wall = parsed.get("walltime_s")
        host = times.get("latency") or times.get("gpu_compute")
        stats = LatencyStats.from_samples(host, batch=batch, wall_s=wall)
        if ips is not None:
            stats.throughput_ips = ips
        if "gpu_compute" in times:
            stats.device = LatencyStats.from_samples(times["gpu_compute"], batch=batch, wall_s=wall)
    else:
        stats = _stats_from_summary(m["latency"], batch, ips)
        if m.get("gpu_compute"):
            stats.device = _stats_from_summary(m["gpu_compute"], batch, ips)
    transfers = transfers_from(parsed["version"], parsed["command"])
    h2d, d2h = m.get("h2d") or {}, m.get("d2h") or {}
    if transfers is None and h2d and d2h and h2d.get("max") == 0 and d2h.get("max") == 0:
        transfers = "excluded"  # H2D and D2H all zero: run with --noDataTransfers
    elif transfers is None and (h2d.get("mean") or d2h.get("mean")):
        transfers = "included"
    stats.transfers = transfers
    info = {
        "format": parsed["format"],
        "version": ".".join(map(str, parsed["version"])) if parsed["version"] else None,
        "command": parsed["command"],
        "throughput_qps": qps,
        "walltime_s": parsed["walltime_s"],
        "gpu_compute_cv": parsed["gpu_cv"],
        "summary": m,
        "log": str(p),
        "times": str(times_path) if times_path else None,
    }
    doc = make_result(stats, model=None, runtime="tensorrt", source="trtexec", extra={"trtexec": info})
    doc["model"]["path"] = _engine_from(parsed["command"])
    missing = list(stats.missing("latency."))
    if stats.device is None:
        missing.append("device_latency")
    else:
        missing += stats.device.missing("device_latency.")
    if m.get("end_to_end") is None and parsed["format"] in ("7.x", "8.0-8.2"):
        missing.append("end_to_end")
    if qps is None:
        missing.append("throughput_qps")
    if info["version"] is None:
        missing.append("trtexec.version")
    if transfers is None:
        missing.append("transfers")
    doc["missing"] = missing
    doc["end_to_end_latency"] = m.get("end_to_end")
    if qps == 0:
        doc["warnings"].append("trtexec reported a throughput of 0 qps (a known trtexec 7.x reporting quirk); throughput_ips is unusable")
    if times_path is None:
        doc["warnings"].append("no per-iteration times (--times): the regression gate can only compare point values")
    if stats.device is not None and (w := unstable_warning(stats.device, "GPU compute time")):
        doc["warnings"].append(w)
    return doc


def _engine_from(command: Optional[str]) -> Optional[str]:
    if not command:
        return None
    m = re.search(r"--(?:loadEngine|onnx)=(\S+)", command)
    return m.group(1) if m else None
