"""The benchmark result document (`edgepipe bench ... --json OUT`), shared by every source.

Schema `edgepipe.bench/1`:
```
{"schema": "edgepipe.bench/1", "source": "edgepipe" | "trtexec",
 "model": {"path", "sha256", "runtime"}, "runner": {...the runtime's describe()...}, "config": {...},
 "inputs": {name: shape}, "latency": LatencyStats.to_dict() (host time per infer; samples kept),
 "device_latency": stats or null, "transfers": "included" | "excluded" | "n/a" | null,
 "reference": {"model": ..., "latency": ...} or null, "fingerprint": {...},
 "warnings": [...], "missing": ["latency.p90", ...], "created_utc": "..."}
```
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from pipeline.bench.harness import UNSTABLE_CV
from pipeline.bench.stats import LatencyStats
from pipeline.errors import UserError
from pipeline.fileio import read_json

SCHEMA = "edgepipe.bench/1"


def unstable_warning(stats: LatencyStats, what: str = "latency") -> str | None:
    """A warning that says what to do when the coefficient of variation is high, else None."""
    if stats.cv is None or stats.cv <= UNSTABLE_CV:
        return None
    return (
        f"unstable run: {what} CV = {stats.cv:.1%} (> {UNSTABLE_CV:.0%}); p99/max are noise-dominated. "
        "To fix: close other programs; pin --threads below the core count; warm up longer "
        "(--warmup-seconds 5) and measure longer (--duration 20); on CPU set the governor to "
        "'performance'; on a Jetson run `sudo nvpmodel -m <mode>` and `sudo jetson_clocks`; "
        "compare with `edgepipe bench compare --reference` so drift cancels."
    )


def make_result(
    stats: LatencyStats,
    *,
    model: str | None,
    runtime: str | None,
    runtime_info: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
    reference: tuple[str, LatencyStats] | None = None,
    source: str = "edgepipe",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a result document (see the module docstring) and its warnings / missing list."""
    from pipeline.fileio import sha256_file

    sha = None
    if model and Path(model).is_file():
        sha = sha256_file(model)
    warnings = [w for w in [unstable_warning(stats)] if w]
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "source": source,
        "model": {"path": model, "sha256": sha, "runtime": runtime},
        "runner": runtime_info or {},  # the runtime's describe(); the key keeps the schema's name
        "config": config or {},
        "inputs": inputs or {},
        "latency": stats.to_dict(),
        "device_latency": stats.device.to_dict() if stats.device is not None else None,
        "transfers": stats.transfers,
        "reference": None,
        "fingerprint": fingerprint or {},
        "warnings": warnings,
        "missing": stats.missing("latency."),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    doc["latency"].pop("device", None)  # kept once, as device_latency
    if reference is not None:
        ref_path, ref_stats = reference
        doc["reference"] = {
            "model": ref_path,
            "sha256": sha256_file(ref_path) if ref_path and Path(ref_path).is_file() else None,
            "latency": ref_stats.to_dict(),
        }
        doc["reference"]["latency"].pop("device", None)
    if extra:
        doc.update(extra)
    return doc


def load_result(path: str | Path, what: str = "benchmark result") -> dict[str, Any]:
    """Read and check a result document; a wrong or foreign file is a UserError naming it."""
    doc = read_json(path, what)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UserError(
            f"{what} {path} is not an edgepipe benchmark result (schema {SCHEMA!r}); "
            "make one with `edgepipe bench MODEL --json OUT` or `edgepipe bench import-trtexec`"
        )
    lat = doc.get("latency")
    if not isinstance(lat, dict):
        raise UserError(f"{what} {path} has no 'latency' section")
    return doc


def timing_section(doc: dict[str, Any], timing: str, path: str = "") -> dict[str, Any]:
    """The latency section to compare: "host" -> latency, "device" -> device_latency."""
    if timing == "host":
        return doc["latency"]
    if timing == "device":
        sec = doc.get("device_latency")
        if not isinstance(sec, dict):
            raise UserError(f"{path or 'result'} has no device_latency (the runtime reported no device time)")
        return sec
    raise UserError(f"--timing {timing!r} (allowed: host, device)")


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """A short human-readable summary of a result document."""
    lat = doc["latency"]

    def f(v: Any) -> str:
        return "  n/a" if v is None else f"{v:8.4f}"

    lines = [
        f"model: {doc['model'].get('path')}  runtime: {doc['model'].get('runtime')}  source: {doc.get('source')}",
        f"iterations: {lat.get('iterations')}  batch: {lat.get('batch')}  transfers: {doc.get('transfers')}",
        "host latency (ms): "
        + "  ".join(f"{k} {f(lat.get(k))}" for k in ("min", "mean", "p50", "p90", "p95", "p99", "max")),
        f"std {f(lat.get('std'))} ms  cv {_pct(lat.get('cv'))}  throughput {_num(lat.get('throughput_ips'))} samples/s",
    ]
    dev = doc.get("device_latency")
    if isinstance(dev, dict):
        lines.append("device latency (ms): "
                     + "  ".join(f"{k} {f(dev.get(k))}" for k in ("min", "mean", "p50", "p90", "p99", "max")))
    ref = doc.get("reference")
    if isinstance(ref, dict):
        rl = ref["latency"]
        lines.append(f"reference {ref.get('model')}: p50 {f(rl.get('p50'))}  p90 {f(rl.get('p90'))} ms")
    if doc.get("missing"):
        lines.append("missing: " + ", ".join(doc["missing"]))
    for w in doc.get("warnings", []):
        lines.append("WARNING: " + w)
    return lines


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.1f}"
