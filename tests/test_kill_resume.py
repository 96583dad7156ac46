"""`kill -9` in the middle of distillation, then the same command again: the stage resumes, not restarts.

A real `python -m pipeline run` process is killed with SIGKILL (no cleanup, no atexit) once its log shows
that a distillation epoch finished; the rerun must log that it resumes that stage at the next epoch, keep the
stages finished before it, and complete.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two pipeline runs, one of them killed mid-stage: about a minute on 2 cores

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "name: kill-resume\n"
        "teacher: {builtin: resnet_teacher, width: 0.25}\n"
        "student: {builtin: mobilenetv2_student}\n"
        "data: {builtin: digits, image_size: 16}\n"
        "device: cpu\n"
        "train_teacher: {epochs: 2}\n"
        f"distill: {{epochs: {EPOCHS}, compare_scratch: false}}\n"
        "prune: {finetune_epochs: 1, max_accuracy_drop: 100}\n"
        "quantize: {max_accuracy_drop: 100, min_top1_agreement: 0.0}\n"
        "benchmark: {warmup: 2, iterations: 200, batches: [1]}\n"
    )
    return cfg


def _command(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "run", "--config", str(cfg), "--target", "cpu", "--out", str(out)]


def test_kill_9_mid_distill_then_rerun_resumes_at_the_next_epoch(tmp_path):
    cfg, out = _config(tmp_path), tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = tmp_path / "first.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(_command(cfg, out), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    killed_after = None
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = re.findall(r"\[distill\] epoch (\d+)/%d" % EPOCHS, log.read_text(errors="replace"))
            if done and int(done[-1]) >= 2:
                killed_after = int(done[-1])
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None and killed_after is None:
            proc.kill()
        proc.wait(timeout=60)
    first = log.read_text(errors="replace")
    assert killed_after is not None, f"distillation never reached epoch 2 before the deadline:\n{first[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert list((out / ".resume").rglob("*.pt")), "no resume state on disk after the kill"

    rerun = subprocess.run(_command(cfg, out), cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    text = rerun.stdout + rerun.stderr
    m = re.search(r"resuming distill at epoch (\d+)/%d" % EPOCHS, text)
    assert m, f"the rerun did not resume distillation:\n{text[-2000:]}"
    # an epoch's line is logged just before its state is written: the kill may land in between
    assert killed_after <= int(m.group(1)) <= killed_after + 1
    assert re.search(r"train_teacher: cached", text)  # the finished stage before it is kept
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and not list((out / ".resume").rglob("*.pt"))
