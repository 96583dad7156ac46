"""Latency statistics over per-iteration samples.

Percentiles use numpy's default (linear interpolation between order statistics). The per-iteration
samples are kept in `samples_ms` so the regression gate can bootstrap confidence intervals later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

QUANTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
SUMMARY_FIELDS = ("min", "mean", "p50", "p90", "p95", "p99", "max", "std", "cv")


@dataclass
class LatencyStats:
    """Summary of one model's latency: every field in milliseconds except `cv` (a fraction).

    A field is None when the source did not report it (e.g. a trtexec log without percentile(90%)).
    """

    batch: int | None = 1
    iterations: int = 0
    min: float | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    std: float | None = None
    cv: float | None = None
    throughput_ips: float | None = None
    samples_ms: list[float] = field(default_factory=list)
    unit: str = "ms"
    # device-side time per iteration (CUDA events) when the runtime reports it, else None
    device: LatencyStats | None = None
    # whether host<->device copies are inside the timed region: "included", "excluded", "n/a" or None
    transfers: str | None = None
    # samples per interleaving round, in order (measure_interleaved only): lets the gate normalise
    # each round by the reference model's median of the same round
    blocks: list[int] = field(default_factory=list)

    @classmethod
    def from_samples(
        cls, samples_ms: Sequence[float], batch: int | None = 1, wall_s: float | None = None
    ) -> LatencyStats:
        """Compute the summary from per-iteration latencies.

        Args:
            samples_ms: one latency per iteration, in milliseconds (at least one).
            batch: samples per inference, for the throughput (None when unknown).
            wall_s: wall-clock seconds the timed loop took; throughput is batch * iterations / wall_s.
                Without it, the sum of the samples is used (an upper bound on throughput).
        Returns:
            The statistics, with the samples kept.
        """
        import numpy as np

        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no latency samples")
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        total_s = wall_s if wall_s and wall_s > 0 else float(a.sum()) / 1000.0
        q = {k: float(np.percentile(a, p)) for k, p in QUANTILES.items()}
        return cls(
            batch=batch,
            iterations=int(a.size),
            min=float(a.min()),
            mean=mean,
            max=float(a.max()),
            std=std,
            cv=(std / mean) if mean > 0 else None,
            throughput_ips=(batch * a.size / total_s) if (batch and total_s > 0) else None,
            samples_ms=[float(x) for x in a],
            **q,
        )

    def to_dict(self, with_samples: bool = True) -> dict[str, Any]:
        """The JSON form: unit, batch, iterations, the summary fields, throughput and samples."""
        d: dict[str, Any] = {"unit": self.unit, "batch": self.batch, "iterations": self.iterations}
        for k in SUMMARY_FIELDS:
            d[k] = getattr(self, k)
        d["throughput_ips"] = self.throughput_ips
        if with_samples:
            d["samples_ms"] = list(self.samples_ms)
        d["device"] = self.device.to_dict(with_samples) if self.device is not None else None
        d["transfers"] = self.transfers
        if self.blocks:
            d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyStats:
        """Inverse of `to_dict` (unknown keys are ignored)."""
        kw = {k: d.get(k) for k in SUMMARY_FIELDS}
        return cls(
            batch=d.get("batch"),
            iterations=int(d.get("iterations") or 0),
            throughput_ips=d.get("throughput_ips"),
            samples_ms=list(d.get("samples_ms") or []),
            unit=d.get("unit", "ms"),
            device=cls.from_dict(d["device"]) if isinstance(d.get("device"), dict) else None,
            transfers=d.get("transfers"),
            blocks=list(d.get("blocks") or []),
            **kw,
        )

    def missing(self, prefix: str = "") -> list[str]:
        """Names of summary fields that are None (for the result's `missing` list)."""
        names = [k for k in SUMMARY_FIELDS if getattr(self, k) is None]
        if self.throughput_ips is None:
            names.append("throughput_ips")
        return [f"{prefix}{n}" for n in names]
