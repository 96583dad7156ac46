"""Timing loops: `measure` one opened runtime, or `measure_interleaved` several in alternating blocks.

The timed region is exactly one `runtime.infer(feeds)` call between two `time.perf_counter_ns()`
reads, so the harness adds well under a microsecond per iteration (see benchmarks/harness_overhead.py).
When the runtime exposes `last_device_ms` (CUDA-event time of its last infer), it is recorded too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.bench.stats import LatencyStats
from pipeline.errors import UserError
from pipeline.runtimes.base import TensorSpec

UNSTABLE_CV = 0.10  # coefficient of variation above which a run is called unstable


@dataclass
class BenchConfig:
    """How long to warm up and measure.

    Attributes:
        warmup: warm-up iterations (ignored when `warmup_seconds` is set).
        warmup_seconds: warm up for this long instead of a count.
        iterations: timed iterations (ignored when `duration_s` is set).
        duration_s: time for this long instead of a count (at least `min_iterations`).
        threads: threads the runtime was opened with (recorded in the fingerprint only).
        min_iterations: floor for duration-based runs, so percentiles mean something.
    """

    warmup: int = 20
    warmup_seconds: float | None = None
    iterations: int = 200
    duration_s: float | None = None
    threads: int | None = None
    min_iterations: int = 10

    def validate(self) -> BenchConfig:
        """Raise UserError naming the field when a value is out of range."""
        if self.warmup < 0:
            raise UserError(f"warmup = {self.warmup}: must be >= 0")
        if self.warmup_seconds is not None and self.warmup_seconds < 0:
            raise UserError(f"warmup_seconds = {self.warmup_seconds}: must be >= 0")
        if self.duration_s is None and self.iterations < 1:
            raise UserError(f"iterations = {self.iterations}: must be >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise UserError(f"duration_s = {self.duration_s}: must be > 0")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads = {self.threads}: must be >= 1")
        return self


def _first_call(runtime: Any, feeds: Mapping[str, Any]) -> None:
    """Run once outside the timing, turning a runtime's rejection of the inputs into a UserError."""
    try:
        runtime.infer(dict(feeds))
    except UserError:
        raise
    except Exception as e:  # onnxruntime InvalidArgument, torch RuntimeError, ...
        shapes = {k: tuple(getattr(v, "shape", ())) for k, v in feeds.items()}
        raise UserError(f"the model rejected inputs {shapes}: {str(e).splitlines()[0][:300]}") from None


def _warm(runtime: Any, feeds: dict[str, Any], cfg: BenchConfig) -> None:
    if cfg.warmup_seconds is not None:
        end = time.perf_counter() + cfg.warmup_seconds
        while time.perf_counter() < end:
            runtime.infer(feeds)
    else:
        for _ in range(cfg.warmup):
            runtime.infer(feeds)


def _timed(runtime: Any, feeds: dict[str, Any], n: int, host: list, device: list) -> None:
    """n timed iterations appended to host (ms) and, when the runtime reports it, device (ms)."""
    clock = time.perf_counter_ns
    infer = runtime.infer
    has_device = hasattr(runtime, "last_device_ms")
    for _ in range(n):
        t0 = clock()
        infer(feeds)
        t1 = clock()
        host.append((t1 - t0) / 1e6)
        if has_device:
            d = runtime.last_device_ms
            if d is not None:
                device.append(float(d))


def batch_of(feeds: Mapping[str, Any]) -> int | None:
    """The leading dimension shared by all inputs (None if they disagree or are scalars)."""
    dims = {int(v.shape[0]) for v in feeds.values() if getattr(v, "ndim", 0) >= 1}
    return dims.pop() if len(dims) == 1 else None


def _stats(host: list, device: list, batch: int | None, wall_s: float, runtime: Any) -> LatencyStats:
    st = LatencyStats.from_samples(host, batch=batch, wall_s=wall_s)
    if device and len(device) == len(host):
        st.device = LatencyStats.from_samples(device, batch=batch, wall_s=wall_s)
    try:
        st.transfers = runtime.describe().get("transfers")
    except Exception:  # describe() is informational: never fail a measurement over it
        st.transfers = None
    return st


def measure(runtime: Any, feeds: Mapping[str, Any], cfg: BenchConfig | None = None) -> LatencyStats:
    """Warm up, then time `runtime.infer(feeds)` per iteration.

    Args:
        runtime: an opened Runtime.
        feeds: input name -> numpy array (see `make_feeds`).
        cfg: warm-up and iteration settings.
    Returns:
        LatencyStats of host wall time per infer; `.device` holds the runtime's device-time stats
        (or None) and `.transfers` the runtime's "included"/"excluded"/"n/a".
    """
    cfg = (cfg or BenchConfig()).validate()
    feeds = dict(feeds)
    _first_call(runtime, feeds)
    _warm(runtime, feeds, cfg)
    host: list[float] = []
    device: list[float] = []
    t0 = time.perf_counter()
    if cfg.duration_s is not None:
        end = t0 + cfg.duration_s
        # check the clock every few iterations only, so the loop stays the same as the count loop
        while time.perf_counter() < end or len(host) < cfg.min_iterations:
            _timed(runtime, feeds, 5, host, device)
    else:
        _timed(runtime, feeds, cfg.iterations, host, device)
    wall = time.perf_counter() - t0
    return _stats(host, device, batch_of(feeds), wall, runtime)


def measure_interleaved(
    runtimes: Mapping[str, Any],
    feeds: Mapping[str, Mapping[str, Any]],
    cfg: BenchConfig | None = None,
    rounds: int | None = None,
) -> dict[str, LatencyStats]:
    """Measure several runtimes in alternating blocks so slow machine drift hits all of them alike.

    Each round runs a block of iterations of every model, in an order that rotates every round.
    With `iterations=N` and R rounds each model gets N samples in blocks of ceil(N/R).

    Args:
        runtimes: name -> opened runtime.
        feeds: name -> that runtime's feeds.
        cfg: warm-up (per model) and iterations or duration (per model).
        rounds: number of rounds (default: 20, fewer when there are few iterations).
    Returns:
        name -> LatencyStats, in the order of `runtimes`.
    """
    cfg = (cfg or BenchConfig()).validate()
    names = list(runtimes)
    if not names:
        raise UserError("measure_interleaved needs at least one runtime")
    missing = [n for n in names if n not in feeds]
    if missing:
        raise UserError(f"no feeds given for {missing}")
    fd = {n: dict(feeds[n]) for n in names}
    for n in names:
        _first_call(runtimes[n], fd[n])
        _warm(runtimes[n], fd[n], cfg)
    host = {n: [] for n in names}
    device = {n: [] for n in names}
    busy = {n: 0.0 for n in names}
    blocks: dict[str, list[int]] = {n: [] for n in names}
    r = rounds or max(1, min(20, (cfg.iterations if cfg.duration_s is None else 200) // 5))
    if cfg.duration_s is not None:
        # calibrate a block length from the warm-up speed: each block ~ duration / rounds
        block = {}
        for n in names:
            t0 = time.perf_counter()
            _timed(runtimes[n], fd[n], 3, [], [])
            per = max((time.perf_counter() - t0) / 3, 1e-6)
            block[n] = max(1, int(cfg.duration_s / r / per))
    else:
        per_block = -(-cfg.iterations // r)
        block = {n: per_block for n in names}
    for k in range(r):
        order = names[k % len(names):] + names[: k % len(names)]
        for n in order:
            want = block[n]
            if cfg.duration_s is None:
                want = min(want, cfg.iterations - len(host[n]))
            if want <= 0:
                continue
            t0 = time.perf_counter()
            _timed(runtimes[n], fd[n], want, host[n], device[n])
            busy[n] += time.perf_counter() - t0
            blocks[n].append(want)
    out = {}
    for n in names:
        out[n] = _stats(host[n], device[n], batch_of(fd[n]), busy[n], runtimes[n])
        out[n].blocks = blocks[n]
    return out


def parse_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """Parse `1x3x224x224` or `input:1x3x224x224` into (name or None, dims)."""
    name, _, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise UserError(f"--shape {text!r}: expected e.g. 1x3x224x224 or input:1x3x224x224") from None
    if any(d < 1 for d in shape):
        raise UserError(f"--shape {text!r}: every dimension must be >= 1")
    return (name or None), shape


def make_feeds(
    specs: Sequence[TensorSpec],
    shapes: Mapping[str | None, Sequence[int]] | None = None,
    batch: int | None = None,
    seed: int = 0,
    default_hw: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Random inputs matching the model's inputs.

    Args:
        specs: the runtime's `inputs()`.
        shapes: explicit shapes by input name (key None: the only/first input).
        batch: fills a dynamic leading dimension (default 1).
        seed: RNG seed, so repeated runs feed the same data.
        default_hw: fills a dynamic height/width (axes 2, 3 of an NCHW input) with no shape given, e.g. the
            size a dynamic-size ONNX was exported at (`pipeline.onnx_utils.spatial_range(...)["opt"]`).
    Returns:
        name -> numpy array.
    Raises:
        UserError: a given shape contradicts a static dimension, names an unknown input, or a
            dynamic non-batch dimension has no shape given.
    """
    import numpy as np

    shapes = dict(shapes or {})
    names = [s.name for s in specs]
    for k in shapes:
        if k is not None and k not in names:
            raise UserError(f"--shape names input {k!r}, but the model's inputs are {names}")
    if batch is not None and batch < 1:
        raise UserError(f"batch = {batch}: must be >= 1")
    rng = np.random.default_rng(seed)
    feeds: dict[str, Any] = {}
    for i, s in enumerate(specs):
        given = shapes.get(s.name, shapes.get(None) if i == 0 else None)
        shape = _resolve(s, given, batch, default_hw)
        dt = np.dtype(s.dtype if s.dtype in np.sctypeDict else "float32")
        if dt.kind == "f":
            feeds[s.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[s.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[s.name] = rng.integers(0, 8, shape).astype(dt)
    return feeds


def _resolve(s: TensorSpec, given: Sequence[int] | None, batch: int | None,
             default_hw: Sequence[int] | None = None) -> tuple[int, ...]:
    model = tuple(s.shape)
    if given is not None:
        given = tuple(int(d) for d in given)
        if model and len(given) != len(model):
            raise UserError(
                f"input {s.name!r}: shape {'x'.join(map(str, given))} has rank {len(given)}, "
                f"the model wants rank {len(model)} ({_fmt(model)})"
            )
        for j, (g, m) in enumerate(zip(given, model, strict=False)):
            if m is not None and g != m:
                raise UserError(
                    f"input {s.name!r}: shape {'x'.join(map(str, given))} differs from the model's "
                    f"{_fmt(model)} at dimension {j} (allowed: {m})"
                )
        if batch is not None and given and given[0] != batch:
            raise UserError(f"input {s.name!r}: --batch {batch} contradicts --shape {'x'.join(map(str, given))}")
        return given
    out = []
    for j, m in enumerate(model):
        if m is not None:
            if j == 0 and batch is not None and batch != m:
                raise UserError(f"input {s.name!r} has a static batch of {m}; --batch {batch} is not allowed")
            out.append(m)
        elif j == 0:
            out.append(batch or 1)
        elif default_hw is not None and len(model) == 4 and j in (2, 3):
            out.append(int(default_hw[j - 2]))
        else:
            raise UserError(
                f"input {s.name!r} has a dynamic dimension {j} ({_fmt(model)}): give its shape with --shape"
            )
    return tuple(out)


def _fmt(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
