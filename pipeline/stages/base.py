"""What every stage takes and returns.

A stage is a plain function `run(inputs, cfg, workdir) -> Artifact`: `inputs` carries the upstream
artifacts and the run's context (data, target, models), `cfg` is the stage's frozen config section and
`workdir` the stage's own folder under the run directory. Stages write files only inside `workdir`,
atomically; the run loop hashes them, caches them and records them in the manifest. A stage's numbers
are a frozen dataclass from `pipeline.stages.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Artifact:
    """A stage's result: its files (role -> path), the primary role, and its typed metrics."""

    files: dict[str, Path]
    primary: str
    metrics: Any = None  # the stage's `pipeline.stages.metrics.Metrics` subclass (None: not measured)
    status: str = "done"  # "done", or "skipped" when the stage had nothing to do here (reason in metrics)

    @property
    def path(self) -> Path:
        """The primary file."""
        return self.files[self.primary]


@dataclass(frozen=True)
class StageInputs:
    """Upstream artifacts plus the run's context."""

    artifacts: dict[str, Artifact]
    config: Any  # PipelineConfig
    target: Any  # Target
    data: Any  # pipeline.data.Data
    config_dir: Path
    out_dir: Path
    log: Callable[[str], None]
    cache_key: str = ""  # the stage's cache key: names its resume states ("" = no resume states)

    def artifact(self, stage: str) -> Artifact:
        """The artifact of an upstream stage (KeyError names the stage if it is not an input)."""
        return self.artifacts[stage]

