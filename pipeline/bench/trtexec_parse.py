"""Read the text of a trtexec log: which run, which summary layout, which numbers.

Summary layouts differ by generation:
- 7.x: no `=== Performance summary ===`; blocks titled `Host Latency`, `Enqueue Time`, `H2D Latency`,
  `GPU Compute`, `D2H Latency` with lines `min: X ms (end to end Y ms)` ... `percentile: X ms at 99%`,
  plus `throughput: N qps` and `walltime: S s`.
- 8.0-8.2: summary header; one line per metric `Latency: min = X ms, max = ..., median = ...,
  percentile(99%) = ...`, with an extra `End-to-End Host Latency` line.
- 8.4: like 8.2 without the End-to-End line (also what 8.5+ prints with `--percentile=99`).
- 8.5-11.x: `percentile(90%)`, `(95%)` and `(99%)` on every line.

Real logs are messier than that, and every case below comes from a posted log (tests/fixtures/trtexec):
several runs pasted into one file (the last summary is the one read), `[I]`-only or doubled prefixes,
CRLF line endings, warnings between summary lines, `=` signs lost and lines run together in a
pasted post, `1.29477e+08 qps`, the command only as a shell line above the output, a `--dumpProfile`
table, and failed runs (`&&&& FAILED`) with no summary at all.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.errors import UserError

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
# what stands before trtexec's text on a line: markdown quote marks ("> "), a CI runner's ISO time
# ("2024-01-12T10:11:12.123Z "), a docker compose service ("trt-1  | "), then bracket groups
# ("[06/12/2022-22:34:00] [I] ", "[INFO] [..] [I] ", "[I] "); colour codes anywhere are dropped first
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PREFIX = re.compile(r"^(?:>\s*)*(?:\d{4}-\d\d-\d\dT[\d:.]+Z?\s+)?(?:[\w.-]+\s+\|\s)?\s*(?:\[[^\]]*\]\s*)*")
_STATUS = re.compile(
    r"&&&& (RUNNING|PASSED|FAILED)\s+TensorRT\.trtexec\s*(?:\[TensorRT v(\d+)\])?(?:\s*\[b\d+\])?\s*(?:#\s*(.*))?"
)
_VERSION_LINE = re.compile(r"TensorRT version:\s*(\d+(?:\.\d+)*)")
# a shell line that ran trtexec (the only place some posts keep the command): "$ trtexec --onnx=..."
# (at a line's start, after a prompt ending in $ # or >, or after sudo; not as another tool's argument)
_SHELL_CMD = re.compile(r"^(?:.*?[$#>]\s+)?(?:sudo\s+(?:-\S+\s+)*)?((?:\S*[/\\])?trtexec(?:\.exe)?\s+--\S.*)$")
# "Input binding for input with dimensions 1x3x1026x1282 is created." (10.x), "Created input binding for
# input with dimensions 1x3x640x640" (8.x): the shape the timed runs used
_BINDING = re.compile(r"[Ii]nput binding for \S+ with dimensions (\d+(?:x\d+)*)")
_SUMMARY = "=== Performance summary ==="
_METRIC_LINE = re.compile(
    r"^(Latency|End-to-End Host Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency):(.*)$", re.I)
_METRIC_NAMES = {
    "latency": "latency", "end-to-end host latency": "end_to_end", "enqueue time": "enqueue",
    "h2d latency": "h2d", "gpu compute time": "gpu_compute", "d2h latency": "d2h",
}
_V7_BLOCKS = {
    "host latency": "latency", "enqueue time": "enqueue", "h2d latency": "h2d",
    "gpu compute": "gpu_compute", "d2h latency": "d2h",
}
_KEYS = {"min": "min", "max": "max", "mean": "mean", "median": "p50"}
_PROFILE_HEAD = re.compile(r"^=== Profile \((\d+) iterations? ?\) ===")
_PROFILE_ROW = re.compile(r"^" + r"\s+".join([_NUM] * 4) + r"\s+(\S.*)$")


def decode_version(code: str | int) -> tuple[int, int, int]:
    """`v8400` -> (8, 4, 0); `v100200` -> (10, 2, 0) (NV_TENSORRT_VERSION encodings before/after 10)."""
    n = int(code)
    if n >= 10000:
        return n // 10000, (n // 100) % 100, n % 100
    return n // 1000, (n // 100) % 10, n % 100


def _strip(line: str) -> str:
    return _PREFIX.sub("", _ANSI.sub("", line).strip()).strip()


def _level(line: str) -> str:
    """The bracket groups before a line's text ("[..] [W] "), where trtexec puts the severity."""
    return _PREFIX.match(_ANSI.sub("", line).strip()).group(0)


def parse_metric_body(body: str) -> dict[str, float]:
    """`min = X ms, max = Y ms, ..., percentile(90%) = Z ms` -> {min, max, mean, p50, p90, ...}.

    Searched rather than split: a pasted post may lose the `=` signs or run the next lines into this
    one, and the first value of each statistic is the right one either way.
    """
    out: dict[str, float] = {}
    for m in re.finditer(r"\b(min|max|mean|median)\s*=?\s*" + _NUM + r"\s*ms\b", body):
        out.setdefault(_KEYS[m.group(1)], float(m.group(2)))
    for m in re.finditer(r"percentile\((\d+(?:\.\d+)?)%\)\s*=?\s*" + _NUM + r"\s*ms\b", body):
        out.setdefault(f"p{float(m.group(1)):g}", float(m.group(2)))
    return out


def _search(pattern: str, lines: list[str]) -> float | None:
    for line in lines:
        m = re.search(pattern, line, re.I)
        if m:
            return float(m.group(1))
    return None


def parse_profile(lines: list[str]) -> dict[str, Any] | None:
    """The last `--dumpProfile` table: {iterations, layers: [{name, time_ms, avg_ms, median_ms, percent}],
    total_avg_ms} (None when the log has none). Times are per layer, summed over the profiled runs."""
    starts = [i for i, ln in enumerate(lines) if _PROFILE_HEAD.match(ln)]
    if not starts:
        return None
    i = starts[-1]
    prof: dict[str, Any] = {"iterations": int(_PROFILE_HEAD.match(lines[i]).group(1)), "layers": [],
                            "total_avg_ms": None}
    for line in lines[i + 1:]:
        m = _PROFILE_ROW.match(line)
        if not m:
            if prof["layers"] or line.startswith("&&&&"):
                break
            continue  # the column header
        row = {"name": m.group(5).strip(), "time_ms": float(m.group(1)), "avg_ms": float(m.group(2)),
               "median_ms": float(m.group(3)), "percent": float(m.group(4))}
        if row["name"] == "Total":
            prof["total_avg_ms"] = row["avg_ms"]
            break
        prof["layers"].append(row)
    return prof


def _run_info(raw: list[str], lines: list[str], start: int) -> tuple[tuple[int, ...] | None, str | None]:
    """Version and command of the run whose summary starts at `start`: its `&&&& PASSED` line after the
    summary, else the `&&&& RUNNING` line before it, else a shell line that ran trtexec before it."""
    version: tuple[int, ...] | None = None
    command: str | None = None
    after = [m for ln in raw[start:] if (m := _STATUS.search(ln))]
    before = [m for ln in raw[:start] if (m := _STATUS.search(ln))]
    for m in after[:1] + before[::-1]:
        if version is None and m.group(2):
            version = decode_version(m.group(2))
        if command is None and m.group(3):
            command = m.group(3).strip()
    if command is None:
        for ln in reversed(lines[:start]):
            m = _SHELL_CMD.search(ln)
            if m:
                command = m.group(1).strip()
                break
    if version is None:
        for ln in reversed(raw[:start] or raw):
            m = _VERSION_LINE.search(ln)
            if m:
                parts = [int(x) for x in m.group(1).split(".")]
                version = decode_version(parts[0]) if len(parts) == 1 else tuple((parts + [0, 0])[:3])
                break
    return version, command


def _no_summary(raw: list[str], lines: list[str]) -> UserError:
    status = [m for ln in raw if (m := _STATUS.search(ln))]
    errors = [ln for ln in raw if re.search(r"\[E\]", ln)]
    msg = ("no trtexec performance summary found (neither '=== Performance summary ===' nor a 7.x "
           "'Host Latency' block)")
    if status and status[-1].group(1) == "FAILED":  # the last run failed (an earlier one may not have)
        v = status[-1].group(2)
        ver = ".".join(map(str, decode_version(v))) if v else "unknown version"
        last = _strip(errors[-1]) if errors else "no [E] line in the log"
        return UserError(f"{msg}: the trtexec run FAILED (TensorRT {ver}); its last error: {last}")
    if any(_PROFILE_HEAD.match(ln) for ln in lines):
        return UserError(f"{msg}: the log has a --dumpProfile per-layer table but no summary; pass the "
                         "complete trtexec output (the summary comes before the profile)")
    return UserError(f"{msg}; pass the complete trtexec output")


def parse_log_text(text: str) -> dict[str, Any]:
    """Parse a trtexec log (the last run's summary when several runs are pasted together).

    Args:
        text: the log (whole, or just its summary), any line endings.
    Returns:
        {"format", "version", "command", "throughput_qps", "walltime_s", "gpu_cv", "metrics": {name:
         {min,...}}, "summaries": how many summaries the text holds, "failed_after": a later run FAILED,
         "profile": the --dumpProfile table or None, "input_dims": the last input binding's dimensions
         before the summary or None} where metric names are latency, end_to_end,
         enqueue, h2d, gpu_compute, d2h.
    Raises:
        UserError: no summary of either kind (saying so when the run failed), or no Latency values.
    """
    raw = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = [_strip(ln) for ln in raw]
    heads = [i for i, ln in enumerate(lines) if _SUMMARY in ln]
    if heads:
        fmt = None
        start = heads[-1]
    else:
        blocks = [i for i, ln in enumerate(lines) if ln.lower() == "host latency"]
        if not blocks:
            raise _no_summary(raw, lines)
        fmt, start = "7.x", blocks[-1]
        heads = blocks
    end = next((i for i in range(start, len(raw)) if _STATUS.search(raw[i])), len(raw))
    seg = lines[start:end]
    version, command = _run_info(raw, lines, start)
    metrics = _parse_v7(seg) if fmt else _parse_summary(seg, raw[start:end])
    if not metrics.get("latency"):
        raise UserError("the trtexec performance summary has no readable Latency values "
                        f"(summary at line {start + 1}); pass the complete, unedited trtexec output")
    if fmt is None:
        fmt = "8.0-8.2" if "end_to_end" in metrics else ("8.5+" if any("p90" in v for v in metrics.values()) else "8.4")
    tail = [m.group(1) for ln in raw[end + 1:] if (m := _STATUS.search(ln))]
    return {
        "format": fmt, "version": version, "command": command, "metrics": metrics,
        "throughput_qps": _search(r"\bthroughput:\s*" + _NUM + r"\s*qps", seg),
        "walltime_s": _search(r"(?:Total Host Walltime|^walltime):\s*" + _NUM + r"\s*s\b", seg),
        "gpu_cv": (lambda v: v / 100 if v is not None else None)(
            _search(r"coefficient of variance = " + _NUM + "%", seg)),
        "summaries": len(heads), "failed_after": "FAILED" in tail, "profile": parse_profile(lines),
        "input_dims": next(([int(d) for d in m.group(1).split("x")] for ln in reversed(lines[:start])
                            if (m := _BINDING.search(ln))), None),
    }


def _parse_summary(seg: list[str], raw: list[str]) -> dict[str, dict[str, float]]:
    metrics: dict[str, dict[str, float]] = {}
    for ln, r in zip(seg, raw, strict=False):
        if re.search(r"\[[WEVF]\]", _level(r)):
            continue  # a warning/error/verbose line between summary lines is never a summary value
        m = _METRIC_LINE.match(ln)
        if m:
            metrics.setdefault(_METRIC_NAMES[m.group(1).lower()], parse_metric_body(m.group(2)))
    return metrics


def _parse_v7(seg: list[str]) -> dict[str, dict[str, float]]:
    metrics: dict[str, dict[str, float]] = {}
    block = None
    for ln in seg:
        low = ln.lower()
        if low in _V7_BLOCKS:
            block = _V7_BLOCKS[low]
            metrics.setdefault(block, {})
            continue
        if block is None:
            continue
        m = re.match(r"^(min|max|mean|median):\s*" + _NUM + r"\s*ms(?:\s*\(end to end " + _NUM + r" ms\))?", ln)
        if m:
            # setdefault: a second value for the same statistic belongs to a block whose title was
            # cut away (`grep -C` output), never to this one
            metrics[block].setdefault(_KEYS[m.group(1)], float(m.group(2)))
            if m.group(3) is not None:
                metrics.setdefault("end_to_end", {}).setdefault(_KEYS[m.group(1)], float(m.group(3)))
            continue
        m = re.match(r"^percentile:\s*" + _NUM + r"\s*ms at (\d+(?:\.\d+)?)%(?:\s*\(end to end " + _NUM + r" ms)?", ln)
        if m:
            p = f"p{float(m.group(2)):g}"
            metrics[block].setdefault(p, float(m.group(1)))
            if m.group(3) is not None:
                metrics.setdefault("end_to_end", {}).setdefault(p, float(m.group(3)))
            continue
        if not re.match(r"^(throughput|walltime|total compute time):", low):
            block = None  # anything else ("--" between grep chunks, a blank line) ends the block
    return metrics
