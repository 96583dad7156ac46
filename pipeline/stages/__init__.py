"""The explicit stage registry: every stage, in order, with what it needs and its config section.

Stage functions are named as "module:function" and imported when the stage runs, so listing the
registry imports nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class StageEntry:
    """One stage: name, "module:function", upstream stages, config section, what else its key covers."""

    name: str
    func: str
    needs: tuple[str, ...]
    config_key: Optional[str]
    uses_target: bool  # its output depends on the target (so a different target redoes it)
    extra_config: tuple[str, ...] = ()  # other config sections it reads
    description: str = ""
    # "module:function(target) -> dict" of environment facts its output depends on (cache key)
    environment: Optional[str] = None

    def load(self):
        """Import and return the stage's `run` function."""
        return _resolve(self.func)

    def environment_facts(self, target) -> dict:
        """The environment facts that belong in this stage's cache key ({} when none)."""
        return _resolve(self.environment)(target) if self.environment else {}


def _resolve(ref: str):
    mod, fn = ref.split(":")
    return getattr(importlib.import_module(mod), fn)


STAGES: tuple[StageEntry, ...] = (
    StageEntry("train_teacher", "pipeline.stages.train_teacher:run", (), "train_teacher", False,
               description="load the user's teacher, or train one"),
    StageEntry("distill", "pipeline.stages.distill:run", ("train_teacher",), "distill", False,
               description="Hinton KD into the student; scratch baseline with the same budget"),
    StageEntry("prune", "pipeline.stages.prune:run", ("train_teacher", "distill"), "prune", False, ("distill",),
               description="Torch-Pruning structured channel pruning + KD fine-tune"),
    StageEntry("export", "pipeline.stages.export:run", ("train_teacher", "prune"), "export", False,
               description="torch -> ONNX (dynamic batch), checked, simplified, parity vs PyTorch"),
    StageEntry("quantize", "pipeline.stages.quantize:run", ("export",), "quantize", True,
               description="static INT8 QDQ with ONNX Runtime calibration; accuracy budget"),
    StageEntry("build", "pipeline.stages.build:run", ("export", "quantize"), None, True,
               description="TensorRT engine where TensorRT and a GPU exist; otherwise recorded as skipped",
               environment="pipeline.stages.build:cache_environment"),
    StageEntry("benchmark", "pipeline.stages.benchmark:run", ("export", "quantize"), "benchmark", True,
               description="interleaved latency of teacher, student and final model"),
    StageEntry("report", "pipeline.stages.report:run",
               ("train_teacher", "distill", "prune", "export", "quantize", "build", "benchmark"), None, True,
               description="report.md and the accuracy/latency plot"),
)

STAGE_NAMES = tuple(s.name for s in STAGES)


def stage(name: str) -> StageEntry:
    """Look a stage up by name."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})")
