"""Turn a trtexec log (and its `--exportTimes` JSON) into a result document.

Reading the log's text (which run, which summary layout, which numbers) is `trtexec_parse`; this module
reads the files, works out batch, streams, throughput and whether copies were timed, and fills the
result document. Fields a log does not have stay None and are listed in `missing`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.bench.stats import LatencyStats
from pipeline.bench.trtexec_parse import parse_log_text
from pipeline.errors import UserError

# per-iteration series in --exportTimes records: TensorRT 8+ names, then the 7.x tracer's names
_SERIES = (("h2dMs", "h2d"), ("inMs", "h2d"), ("d2hMs", "d2h"), ("outMs", "d2h"), ("endToEndMs", "end_to_end"))


def read_export_times(path: str | Path) -> dict[str, list[float]]:
    """Per-iteration times from `trtexec --exportTimes=F.json`.

    Returns:
        {"latency": [...host latency ms...], "gpu_compute": [...], "h2d": [...], "d2h": [...],
        "end_to_end": [...]} with only the series present in the file (TensorRT 8+ names `h2dMs`/`d2hMs`
        and the 7.x names `inMs`/`outMs`/`endToEndMs` are both read).
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
    out: dict[str, list[float]] = {"latency": [], "gpu_compute": [], "h2d": [], "d2h": [], "end_to_end": []}
    for rec in data:
        if not isinstance(rec, dict) or not ({"latencyMs", "computeMs", "endComputeMs"} & set(rec)):
            continue  # the leading {"count": N} record
        try:
            if "latencyMs" in rec:
                out["latency"].append(float(rec["latencyMs"]))
            if "computeMs" in rec:
                out["gpu_compute"].append(float(rec["computeMs"]))
            elif "startComputeMs" in rec and "endComputeMs" in rec:
                out["gpu_compute"].append(float(rec["endComputeMs"]) - float(rec["startComputeMs"]))
            for k, name in _SERIES:
                if k in rec:
                    out[name].append(float(rec[k]))
        except (TypeError, ValueError):
            raise UserError(f"trtexec times file {p}: a record has a non-numeric time: {rec}") from None
    out = {k: v for k, v in out.items() if v}
    if not out:
        raise UserError(f"trtexec times file {p} holds no per-iteration latencyMs/computeMs records")
    return out


def transfers_from(version: tuple[int, ...] | None, command: str | None) -> str | None:
    """Were host<->device copies inside trtexec's "Latency"? (None when the log does not tell.)"""
    cmd = command or ""
    if "--noDataTransfers" in cmd:
        return "excluded"
    if "--includeDataTransfers" in cmd:
        return "included"
    if version is None:
        return None
    return "excluded" if version[0] >= 11 else "included"


def _batch_from(command: str | None,
                input_dims: list[int] | None = None) -> tuple[int | None, bool, str | None]:
    """(batch, implicit, where from): `--batch=16` (implicit batch, TensorRT < 10), the leading
    dimension of the first `--shapes=name:NxCxHxW` (explicit batch; the name may be quoted), or of a
    4-D input binding the log printed (NCHW; a 3-D binding is an implicit-batch CHW, so not used)."""
    m = re.search(r"--batch[= ](\d+)", command or "")
    if m:
        return int(m.group(1)), True, "--batch"
    m = re.search(r"--shapes[= ]\S*?:(\d+)(?=x|,|\s|$)", command or "")
    if m:
        return int(m.group(1)), False, "--shapes"
    if input_dims and len(input_dims) == 4:
        return input_dims[0], False, "input binding"
    return None, False, None


def _streams_from(command: str | None) -> int | None:
    # --streams (<= 8.6) / --infStreams (>= 10): queries run concurrently, so qps is the total over all
    m = re.search(r"--(?:streams|infStreams)[= ](\d+)", command or "")
    return int(m.group(1)) if m else None


def _read_text(p: Path) -> str:
    """The log as text: UTF-8 (BOM or not), or UTF-16 with a BOM (what PowerShell's `>` writes)."""
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"trtexec log {p} could not be read as text: {e}") from None
    try:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = data.decode("utf-16")
            # trtexec prints ASCII: bytes that only look like a UTF-16 BOM decode to mostly non-ASCII
            if sum(c < "\x80" for c in text) < 0.5 * len(text):
                raise UserError(f"trtexec log {p} could not be read as text: not UTF-8, and not UTF-16 text either")
            return text
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"trtexec log {p} could not be read as text: {e}") from None


def _ips(qps: float | None, batch: int | None, implicit: bool) -> float | None:
    # with an implicit-batch engine trtexec's qps already counts samples; with explicit batch it
    # counts inferences of `batch` samples each
    if qps is None or not batch:
        return None
    return qps if implicit else qps * batch


def _stats_from_summary(d: dict[str, float | None], batch: int | None, ips: float | None) -> LatencyStats:
    return LatencyStats(
        batch=batch, iterations=0, min=d.get("min"), mean=d.get("mean"), p50=d.get("p50"),
        p90=d.get("p90"), p95=d.get("p95"), p99=d.get("p99"), max=d.get("max"), throughput_ips=ips,
    )


def import_trtexec(log_path: str | Path, times_path: str | Path | None = None,
                   batch: int | None = None) -> dict[str, Any]:
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
    text = _read_text(p)
    try:
        parsed = parse_log_text(text)
    except UserError as e:
        raise UserError(f"{p}: {e}") from None
    m = parsed["metrics"]
    log_batch, implicit, batch_from = _batch_from(parsed["command"], parsed["input_dims"])
    if batch is None:
        batch = log_batch
    else:
        implicit, batch_from = False, "argument"
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
            # trtexec computed this CV over every iteration's GPU time (it warns above ~1 %)
            stats.device.cv = parsed["gpu_cv"]
    transfers = _transfers(parsed, m)
    stats.transfers = transfers
    info = {
        "format": parsed["format"],
        "version": ".".join(map(str, parsed["version"])) if parsed["version"] else None,
        "command": parsed["command"],
        "throughput_qps": qps,
        "walltime_s": parsed["walltime_s"],
        "gpu_compute_cv": parsed["gpu_cv"],
        "streams": _streams_from(parsed["command"]),
        "batch_from": batch_from,
        "summaries_in_log": parsed["summaries"],
        "summary": m,
        "profile": parsed["profile"],
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
        doc["warnings"].append("trtexec reported a throughput of 0 qps (a known trtexec 7.x reporting quirk); "
                               "throughput_ips is unusable")
    if parsed["summaries"] > 1:
        doc["warnings"].append(f"the log holds {parsed['summaries']} performance summaries (several runs pasted "
                               "together); only the last one was read")
    for name, d in (("Latency", m.get("latency") or {}), ("GPU Compute Time", m.get("gpu_compute") or {})):
        if (bad := _inconsistent(d)):
            doc["warnings"].append(f"the log's {name} numbers contradict each other ({bad}): the log was "
                                   "probably edited by hand; do not gate on it")
    if parsed["failed_after"]:
        doc["warnings"].append("a trtexec run after the summary that was read reports &&&& FAILED: check the log")
    if times_path is None:
        doc["warnings"].append("no per-iteration times (--times): the regression gate can only compare point values")
    if stats.device is not None and (w := unstable_warning(stats.device, "GPU compute time")):
        doc["warnings"].append(w)
    return doc


def _inconsistent(d: dict[str, float]) -> str | None:
    """The first way a summary breaks min <= median, mean, percentiles <= max (None when it does not)."""
    lo, hi = d.get("min"), d.get("max")
    if lo is not None and hi is not None and lo > hi:
        return f"min {lo:g} > max {hi:g}"
    for k in ("mean", "p50", "p90", "p95", "p99"):
        v = d.get(k)
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            return f"{k} {v:g} outside [{lo}, {hi}]"
    return None


def _transfers(parsed: dict[str, Any], m: dict[str, dict[str, float]]) -> str | None:
    """The command's own flag first, then what the summary shows (H2D and D2H all zero: copies were
    not timed), then the version's default."""
    cmd = parsed["command"] or ""
    if "--noDataTransfers" in cmd or "--includeDataTransfers" in cmd:
        return transfers_from(None, cmd)
    h2d, d2h = m.get("h2d") or {}, m.get("d2h") or {}
    if h2d and d2h and h2d.get("max") == 0 and d2h.get("max") == 0:
        return "excluded"
    by_version = transfers_from(parsed["version"], cmd)
    if by_version is None and (h2d.get("mean") or d2h.get("mean")):
        return "included"
    return by_version


def _engine_from(command: str | None) -> str | None:
    if not command:
        return None
    m = re.search(r"--(?:loadEngine|onnx)=(\S+)", command)
    return m.group(1) if m else None
