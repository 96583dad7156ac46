"""pytest plugin (entry point `edgepipe`): latency regression tests in a project's own test suite.

    def test_latency(edgepipe_latency):
        edgepipe_latency.check("model.onnx", baseline="baselines/cpu.json", max_regression=0.10)

`check` benchmarks the model, compares it with the baseline through the same bootstrap gate as
`edgepipe bench compare`, and fails the test on a regression. Relative paths are resolved against
pytest's rootdir. Record or refresh baselines with `pytest --edgepipe-update-baselines` (or
`edgepipe bench MODEL --json baselines/cpu.json`). A missing baseline fails with that hint.

Imported by every pytest run once edgepipe is installed, so only the standard library is imported
at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: Any) -> None:
    """Add --edgepipe-update-baselines and --edgepipe-iterations."""
    group = parser.getgroup("edgepipe", "edgepipe latency regression tests")
    group.addoption("--edgepipe-update-baselines", action="store_true", default=False,
                    help="record (overwrite) latency baselines instead of comparing against them")
    group.addoption("--edgepipe-iterations", type=int, default=None,
                    help="override the iterations of every edgepipe_latency.check")


class LatencyChecker:
    """What the `edgepipe_latency` fixture returns."""

    def __init__(self, root: Path, update: bool, iterations: int | None):
        self.root = root
        self.update = update
        self.iterations = iterations

    def _path(self, p: str | Path) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def check(
        self,
        model: str,
        baseline: str,
        max_regression: float = 0.10,
        *,
        metrics: Sequence[str] = ("p50", "p90"),
        iterations: int = 300,
        warmup: int = 30,
        threads: int | None = None,
        runtime: str | None = None,
        shape: Sequence[int] | None = None,
        batch: int | None = None,
        reference: str | None = None,
    ) -> dict[str, Any]:
        """Benchmark `model` and fail the test when it regressed against `baseline`.

        Args:
            model: model path (or module:function) relative to the rootdir.
            baseline: result JSON relative to the rootdir; written when updating baselines.
            max_regression: allowed slowdown as a fraction (0.10 = 10 %).
            metrics: quantiles gated (default p50 and p90).
            iterations, warmup, threads, runtime, shape, batch: as for `edgepipe bench`.
            reference: a reference model measured interleaved (recommended on shared CI runners;
                the baseline must have been recorded with the same reference).
        Returns:
            The verdict dict (or {"verdict": "baseline-updated"} when updating).
        """
        from pipeline.bench.api import bench_model
        from pipeline.bench.compare import compare_docs, verdict_lines
        from pipeline.bench.harness import BenchConfig
        from pipeline.bench.result import load_result
        from pipeline.errors import UserError
        from pipeline.fileio import write_json

        is_factory = ":" in model and not model.endswith((".onnx", ".pt2", ".engine", ".plan"))
        model_path = model if is_factory else str(self._path(model))
        base_path = self._path(baseline)
        cfg = BenchConfig(warmup=warmup, iterations=self.iterations or iterations, threads=threads)
        try:
            doc = bench_model(model_path, runtime=runtime, threads=threads,
                              shapes={None: tuple(shape)} if shape else None, batch=batch, cfg=cfg,
                              reference=str(self._path(reference)) if reference else None)
        except UserError as e:
            pytest.fail(f"edgepipe: {e}", pytrace=False)
        if self.update:
            write_json(base_path, doc)
            return {"verdict": "baseline-updated", "baseline": str(base_path)}
        if not base_path.is_file():
            pytest.fail(f"edgepipe: no latency baseline at {base_path}; record it with "
                        f"`pytest --edgepipe-update-baselines`", pytrace=False)
        try:
            v = compare_docs(doc, load_result(base_path, "baseline"), budget=max_regression, metrics=metrics)
        except UserError as e:
            pytest.fail(f"edgepipe: {e}", pytrace=False)
        if v["regression"]:
            pytest.fail(f"edgepipe: latency regression of {model} against {baseline}:\n" + "\n".join(verdict_lines(v)),
                        pytrace=False)
        return v


@pytest.fixture
def edgepipe_latency(request: Any) -> LatencyChecker:
    """A LatencyChecker bound to this session's rootdir and options."""
    cfg = request.config
    return LatencyChecker(Path(cfg.rootpath), bool(cfg.getoption("--edgepipe-update-baselines")),
                          cfg.getoption("--edgepipe-iterations"))
