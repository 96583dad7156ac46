"""The pytest plugin in a real pytest subprocess: record a baseline, pass, then catch a slower model."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_plugin_module_imports_cheaply():
    code = ("import sys, pipeline.bench.pytest_plugin; "
            "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'numpy', 'matplotlib') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "pipeline.bench.pytest_plugin", "-p", "no:cacheprovider",
         "--rootdir", str(project), str(project / "test_latency.py"), *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=120)


def test_record_check_and_regress(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from models import convnet

    convnet(tmp_path / "model.onnx", 16, 2, 0, hw=32)
    (tmp_path / "test_latency.py").write_text(textwrap.dedent("""
        def test_latency(edgepipe_latency):
            edgepipe_latency.check("model.onnx", baseline="baselines/cpu.json", max_regression=0.10,
                                   iterations=150, threads=1)
    """))
    r = _pytest(tmp_path)
    assert r.returncode == 1 and "no latency baseline" in r.stdout, r.stdout
    r = _pytest(tmp_path, "--edgepipe-update-baselines")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "baselines" / "cpu.json").is_file()
    # a model with ~4x the work under the same name must fail the test
    convnet(tmp_path / "model.onnx", 16, 2, 6, hw=32)
    r = _pytest(tmp_path)
    assert r.returncode == 1 and "latency regression" in r.stdout, r.stdout
