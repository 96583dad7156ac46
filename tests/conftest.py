"""Shared fixtures: tiny configs and data written into tmp folders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

# Tests train tiny models: one intra-op thread avoids oversubscribing a 2-core machine.
import torch

torch.set_num_threads(1)

# A teacher and student defined outside the package: the teacher has residual blocks with
# squeeze-excite and depthwise convolutions, so pruning must keep coupled channels consistent.
EXTERNAL_MODELS = textwrap.dedent(
    '''
    import torch
    import torch.nn as nn


    class SE(nn.Module):
        def __init__(self, c, r=4):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(c, max(4, c // r), 1)
            self.fc2 = nn.Conv2d(max(4, c // r), c, 1)

        def forward(self, x):
            s = torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))
            return x * s


    class DWResSE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.pw = nn.Conv2d(c, c, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            self.se = SE(c)

        def forward(self, x):
            y = torch.relu(self.bn1(self.dw(x)))
            y = self.se(self.bn2(self.pw(y)))
            return torch.relu(x + y)


    class Teacher(nn.Module):
        def __init__(self, num_classes=3, in_channels=2, width=32):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU())
            self.blocks = nn.Sequential(DWResSE(width), DWResSE(width))
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean((2, 3)))


    class Student(nn.Module):
        def __init__(self, num_classes=3, in_channels=2):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(in_channels, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.ReLU(),
            )
            self.se = SE(24)
            self.fc = nn.Linear(24, num_classes)

        def forward(self, x):
            return self.fc(self.se(self.body(x)).mean((2, 3)))


    def make_teacher(num_classes, in_channels):
        return Teacher(num_classes, in_channels)


    def make_student(num_classes, in_channels):
        return Student(num_classes, in_channels)
    '''
)


def synthetic_npz(folder: Path, n: int, seed: int, name: str, classes: int = 3, size: int = 8) -> Path:
    """Images of class k carry a bright bar at row 2k (channel 0) or column 2k (channel 1), plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int64)
    x = rng.normal(0, 0.3, (n, 2, size, size)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, 0, 2 * k, :] += 1.5
        x[i, 1, :, 2 * k] += 1.5
    path = folder / f"{name}.npz"
    np.savez(path, x=x, y=y)
    return path


TINY_STAGES = """
train_teacher: {epochs: 3}
distill: {epochs: 3, batch_size: 32}
prune: {ratio: 0.4, finetune_epochs: 2, max_accuracy_drop: 60}
quantize: {calibration_samples: 32, max_accuracy_drop: 60, min_top1_agreement: 0.0}
benchmark: {warmup: 2, iterations: 200, batches: [1]}
"""


def write_external_project(d: Path) -> Path:
    """Write a user's project into `d`: models.py, train/val/test npz and config.yaml; returns the config."""
    (d / "models.py").write_text(EXTERNAL_MODELS)
    synthetic_npz(d, 192, 0, "train")
    synthetic_npz(d, 64, 1, "val")
    synthetic_npz(d, 64, 2, "test")
    cfg = d / "config.yaml"
    cfg.write_text(
        "name: external\n"
        'teacher: {factory: "models:make_teacher"}\n'
        'student: {factory: "models:make_student"}\n'
        "data: {train: train.npz, val: val.npz, test: test.npz}\n" + TINY_STAGES
    )
    return cfg


@pytest.fixture()
def external_project(tmp_path: Path) -> Path:
    """A user's project folder: models.py, npz data and config.yaml; returns the config path."""
    return write_external_project(tmp_path)


@pytest.fixture()
def digits_tiny(tmp_path: Path) -> Path:
    """The built-in models and digits, made tiny (8x8 images, narrow models, 2-3 epochs)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: tiny\n"
        "teacher: {builtin: resnet_teacher, width: 0.25}\n"
        "student: {builtin: mobilenetv2_student, width: 0.5}\n"
        "data: {builtin: digits, image_size: 8}\n" + TINY_STAGES
    )
    return cfg


@pytest.fixture()
def external_models(tmp_path: Path):
    """The external models file imported as a module (Teacher with SE + depthwise residuals, Student)."""
    import importlib.util

    path = tmp_path / "ext_models.py"
    path.write_text(EXTERNAL_MODELS)
    spec = importlib.util.spec_from_file_location("ext_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_tiny_onnx(path, batch_dim="N"):
    """input [N, 4] float32 -> logits [N, 3] (one MatMul)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch_dim, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch_dim, 3])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture()
def make_tiny_onnx():
    """A function writing a one-MatMul ONNX model (input [N, 4] -> logits [N, 3]) to a path."""
    return write_tiny_onnx


@pytest.fixture(scope="session")
def make_images():
    """`make_image_project(root, per_class=20, ext="png")`: a tiny generated image folder project (tests/_images.py)."""
    import importlib.util

    # loaded by path: tests/ must not go on sys.path (tests/tensorrt would shadow the real `tensorrt`)
    path = Path(__file__).resolve().parent / "_images.py"
    spec = importlib.util.spec_from_file_location("_edgepipe_test_images", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_image_project


@pytest.fixture(scope="session")
def external_project_shared(tmp_path_factory) -> Path:
    """`external_project`'s files made once per session, for tests that only read them (stage tests)."""
    d = tmp_path_factory.mktemp("external_project")
    return write_external_project(d)


# --- Skipped tests, listed last -------------------------------------------------------------------
# pytest's own summary ends with "N passed, M skipped": easy to read as green. This block comes after
# it, as the last lines of the run: every skip grouped by reason, with counts and the files involved,
# so a test that did not run is never mistaken for a pass. (Collection-time skips count as one each.)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


@pytest.hookimpl(specname="pytest_unconfigure")  # own name: other conftest hooks may use pytest_unconfigure
def pytest_unconfigure_list_skipped_last(config):
    """Write the skipped-tests block after pytest's final summary line (pytest_unconfigure runs after it)."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return
    skipped = [r for r in tr.stats.get("skipped", []) if not hasattr(r, "wasxfail")]
    deselected = len(tr.stats.get("deselected", []))
    if not skipped and not deselected:
        return
    groups: dict[str, list[str]] = {}
    for r in skipped:
        groups.setdefault(_skip_reason(r), []).append(r.nodeid.split("::")[0] or r.nodeid)
    title = ", ".join(f"{n} {what}" for n, what in ((len(skipped), "skipped"), (deselected, "deselected")) if n)
    tr.write_sep("=", f"{title}: these tests did NOT run", yellow=True, bold=True)
    for reason, files in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        where = sorted(set(files))
        shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more files" if len(where) > 3 else "")
        tr.write_line(f"{len(files):4d} skipped     {reason}  [{shown}]", yellow=True)
    if deselected:
        markexpr, keyword = config.getoption("markexpr", ""), config.getoption("keyword", "")
        how = " and ".join(f"{opt} {expr!r}" for opt, expr in (("-m", markexpr), ("-k", keyword)) if expr)
        hint = " (run them with `make test-slow`)" if "not slow" in markexpr else ""
        tr.write_line(f"{deselected:4d} deselected  by {how or 'a plugin'}{hint}", yellow=True)
