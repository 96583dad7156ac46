"""The explicit stage registry: every stage, in order, with what it needs and its config section.

Stage functions are named as "module:function" and imported when the stage runs, so listing the
registry imports nothing heavy. Each entry also names the stage's metrics class (`stages/metrics.py`),
which reads a cached stage's recorded numbers back.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pipeline.stages import metrics as m


@dataclass(frozen=True)
class StageEntry:
    """One stage: name, "module:function", upstream stages, config section, what else its key covers."""

    name: str
    func: str
    needs: tuple[str, ...]
    config_key: str | None
    uses_target: bool  # its output depends on the target (so a different target redoes it)
    metrics: type = m.Metrics  # its Artifact.metrics class
    extra_config: tuple[str, ...] = ()  # other config sections it reads
    description: str = ""
    uses_student: bool = True  # its output depends on the student's definition
    uses_backend_environment: bool = False  # the target backend's environment facts belong in its key
    # for a stage that does not depend on the whole target: "module:function" giving, from (target, its config
    # section), the target facts its output depends on
    target_facts_func: str = ""
    trains: bool = False  # it trains a model: under torchrun every rank runs it (DDP); other stages run on rank 0

    def load(self):
        """Import and return the stage's `run` function."""
        mod, fn = self.func.split(":")
        return getattr(importlib.import_module(mod), fn)

    def target_facts(self, target, section) -> dict | None:
        """The target facts this stage's result depends on (`target_facts_func`), or None.

        Args:
            target: the run's Target.
            section: the stage's config section.
        Returns:
            JSON-able facts for the stage's cache key; None when the stage names no function. Targets that agree
            on them share the stage's result (e.g. pruning for cpu and jetson-orin-nano, both multiple 16).
        """
        if not self.target_facts_func:
            return None
        mod, fn = self.target_facts_func.split(":")
        return getattr(importlib.import_module(mod), fn)(target, section)

    def environment_facts(self, target) -> dict:
        """The environment facts that belong in this stage's cache key ({} when none).

        Args:
            target: the run's Target.
        Returns:
            JSON-able facts (the backend's, e.g. TensorRT version and GPU, for the build stage).
        """
        if not self.uses_backend_environment:
            return {}
        from pipeline.backends import backend_for

        return backend_for(target).cache_environment(target)


STAGES: tuple[StageEntry, ...] = (
    # the teacher's training does not depend on the student: changing the student keeps it
    StageEntry("train_teacher", "pipeline.stages.train_teacher:run", (), "train_teacher", False,
               m.TrainTeacherMetrics, uses_student=False, trains=True,
               description="load the user's teacher, or train one"),
    StageEntry("distill", "pipeline.stages.distill:run", ("train_teacher",), "distill", False, m.DistillMetrics,
               trains=True, description="Hinton KD into the student; scratch baseline with the same budget"),
    StageEntry("prune", "pipeline.stages.prune:run", ("train_teacher", "distill"), "prune", False, m.PruneMetrics,
               ("distill",), trains=True, target_facts_func="pipeline.stages.prune:target_facts",
               description="Torch-Pruning structured channel pruning + KD fine-tune"),
    StageEntry("export", "pipeline.stages.export:run", ("train_teacher", "prune"), "export", False, m.ExportMetrics,
               description="torch -> ONNX (dynamic batch), checked, simplified, parity vs PyTorch"),
    StageEntry("quantize", "pipeline.stages.quantize:run", ("export", "prune"), "quantize", True, m.QuantizeMetrics,
               description="accuracy-aware INT8 QDQ search (calibration, CLE, bias correction, float fallback)"),
    StageEntry("build", "pipeline.stages.build:run", ("export", "quantize"), None, True, m.BuildMetrics,
               description="TensorRT engine where TensorRT and a GPU exist; otherwise recorded as skipped",
               uses_backend_environment=True),
    StageEntry("benchmark", "pipeline.stages.benchmark:run", ("export", "quantize"), "benchmark", True,
               m.BenchmarkMetrics, description="interleaved latency of teacher, student and final model"),
    StageEntry("report", "pipeline.stages.report:run",
               ("train_teacher", "distill", "prune", "export", "quantize", "build", "benchmark"), None, True,
               m.ReportMetrics, description="report.md and the accuracy/latency plot"),
)

STAGE_NAMES = tuple(s.name for s in STAGES)
