"""`edgepipe run --nproc 2`: the training stages run as 2 gloo processes (torchrun), the rest once on rank 0.

The same config runs once with one process and once with two; the config's batch size is the global batch,
so both see the same images per optimiser step. The models use GroupNorm (per image) and the data no
augmentation, so the two runs compute the same function and differ only by float summation order in the
gradient all-reduce: the distilled students must agree to TOLERANCE. Only one set of artifacts is written:
one record per stage, one manifest, no per-rank scratch folders left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.slow,  # two pipeline runs, one of them with two training processes: ~1-2 min
              pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")]

ROOT = Path(__file__).resolve().parents[1]
# max |w_2proc - w_1proc| over the distilled student's weights after 3 teacher + 3 KD epochs (AdamW, weights
# of order 0.1-1): float summation order alone moved them by 1.3e-7 here; a wrong batch split or sampler, by ~1e-1.
TOLERANCE = 1e-4

MODELS = textwrap.dedent('''
    import torch.nn as nn


    def _net(num_classes, in_channels, width):
        return nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1), nn.GroupNorm(4, width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(4, width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


    def teacher(num_classes, in_channels):
        return _net(num_classes, in_channels, 32)


    def student(num_classes, in_channels):
        return _net(num_classes, in_channels, 16)
''')


def _npz(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int64)
    x = rng.normal(0, 0.3, (n, 2, 8, 8)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, 0, 2 * k, :] += 1.5
        x[i, 1, :, 2 * k] += 1.5
    np.savez(path, x=x, y=y)


def _project(d: Path) -> Path:
    (d / "models.py").write_text(MODELS)
    for name, n, seed in (("train", 192, 0), ("val", 64, 1), ("test", 64, 2)):
        _npz(d / f"{name}.npz", n, seed)
    cfg = d / "config.yaml"
    cfg.write_text(
        "name: ddp\n"
        'teacher: {factory: "models:teacher"}\n'
        'student: {factory: "models:student"}\n'
        "data: {train: train.npz, val: val.npz, test: test.npz}\n"
        "augment: none\ndevice: cpu\nworkers: 0\n"
        "train_teacher: {epochs: 3, batch_size: 32}\n"
        "distill: {epochs: 3, batch_size: 32, compare_scratch: false}\n"
        "prune: {ratio: 0.25, finetune_epochs: 1, max_accuracy_drop: 100}\n"
        "quantize: {calibration_samples: 32, max_accuracy_drop: 100, min_top1_agreement: 0.0}\n"
        "benchmark: {warmup: 2, iterations: 200, batches: [1]}\n"
    )
    return cfg


def _run(cfg: Path, out: Path, nproc: int) -> subprocess.CompletedProcess:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pipeline", "run", "--config", str(cfg), "--out", str(out), "--nproc", str(nproc),
           "--json", str(out / "stdout-manifest.json")]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_two_processes_write_one_set_of_artifacts_matching_one_process(tmp_path):
    cfg = _project(tmp_path)
    one, two = tmp_path / "a" / "run", tmp_path / "b" / "run"  # apart: no shared cache between them
    r1 = _run(cfg, one, 1)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = _run(cfg, two, 2)
    assert r2.returncode == 0, r2.stderr[-3000:]

    manifest = json.loads((two / "manifest.json").read_text())
    status = {s["name"]: s["status"] for s in manifest["stages"]}
    assert manifest["complete"], manifest
    # every training stage ran with 2 ranks (train_teacher, distill, prune)
    assert status["train_teacher"] == status["distill"] == status["prune"] == "done", status
    assert not list((two / ".work").glob("*")) if (two / ".work").exists() else True
    assert not list(two.rglob("*.rank*")), "a worker rank left its scratch folder"
    for stage in ("train_teacher", "distill", "prune"):
        assert len(list((two / stage).glob("stage.json"))) == 1
    distill = next(s for s in manifest["stages"] if s["name"] == "distill")
    assert distill["metrics"]["training"]["world_size"] == 2, distill["metrics"]["training"]
    assert json.loads((two / "stdout-manifest.json").read_text())["stages"] == manifest["stages"]  # rank 0's

    w1 = torch.load(one / "distill" / "student.pt", weights_only=True)
    w2 = torch.load(two / "distill" / "student.pt", weights_only=True)
    sd1, sd2 = (w.get("state_dict", w) if isinstance(w, dict) else w for w in (w1, w2))
    diff = max(float((sd1[k].float() - sd2[k].float()).abs().max()) for k in sd1)
    assert diff < TOLERANCE, f"2-process student differs from 1-process by {diff:.2e} (tolerance {TOLERANCE})"


def test_bad_nproc_is_a_user_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", "x.yaml", "--nproc", "0"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--nproc '0': allowed: an integer >= 1" in r.stderr
