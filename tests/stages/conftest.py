"""Fixtures for the stages' own tests: the tiny external project's data, and each stage's real output,
made once per session by the stage's own `run` so later stages get real inputs in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.stages.base import Artifact, StageInputs


@dataclass
class Ctx:
    """A loaded config, its folder, its data and a scratch root for stage folders."""

    cfg: Any
    base: Path
    data: Any
    root: Path

    def inputs(self, artifacts: dict[str, Artifact] | None = None, target: Any = "cpu", cfg: Any = None) -> StageInputs:
        """StageInputs for a stage, with `target` a name or a Target."""
        from pipeline.targets import Target, load_target

        tgt = target if isinstance(target, Target) else load_target(target)
        return StageInputs(artifacts or {}, cfg or self.cfg, tgt, self.data, self.base, self.root, lambda *a, **k: None)

    def workdir(self, name: str) -> Path:
        """A fresh folder for one stage run."""
        d = self.root / name
        d.mkdir(parents=True)
        return d


@pytest.fixture(scope="session")
def ctx(external_project_shared, tmp_path_factory) -> Ctx:
    """The tiny external project (3 classes, 2x8x8 images, 192 training images) loaded once."""
    from pipeline.config import load_config
    from pipeline.data import load_data

    cfg, base = load_config(external_project_shared)
    return Ctx(cfg, base, load_data(cfg.data, base, cfg=cfg), tmp_path_factory.mktemp("stages"))


@pytest.fixture(scope="session")
def teacher(ctx) -> Artifact:
    """train_teacher's artifact (15 epochs: 98-100 % on the held-out split in trial runs, in about 2 s)."""
    from pipeline.stages import train_teacher

    cfg = ctx.cfg.train_teacher.model_copy(update={"epochs": 15, "lr": 0.01})
    return train_teacher.run(ctx.inputs(), cfg, ctx.workdir("train_teacher"))


@pytest.fixture(scope="session")
def student(ctx, teacher) -> Artifact:
    """distill's artifact (10 epochs, with the scratch baseline)."""
    from pipeline.stages import distill

    cfg = ctx.cfg.distill.model_copy(update={"epochs": 10})
    return distill.run(ctx.inputs({"train_teacher": teacher}), cfg, ctx.workdir("distill"))


@pytest.fixture(scope="session")
def pruned(ctx, teacher, student) -> Artifact:
    """prune's artifact (ratio 0.4, 2 fine-tune epochs)."""
    from pipeline.stages import prune

    return prune.run(ctx.inputs({"train_teacher": teacher, "distill": student}), ctx.cfg.prune, ctx.workdir("prune"))


@pytest.fixture(scope="session")
def exported(ctx, teacher, pruned) -> Artifact:
    """export's artifact (student and teacher FP32 ONNX)."""
    from pipeline.stages import export

    return export.run(ctx.inputs({"train_teacher": teacher, "prune": pruned}), ctx.cfg.export, ctx.workdir("export"))


@pytest.fixture(scope="session")
def quantized(ctx, exported) -> Artifact:
    """quantize's artifact for the cpu target."""
    from pipeline.stages import quantize

    return quantize.run(ctx.inputs({"export": exported}), ctx.cfg.quantize, ctx.workdir("quantize"))
