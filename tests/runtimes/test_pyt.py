"""TorchRuntime: torch.export .pt2 files and module:function factories with weights."""

import textwrap

import numpy as np
import pytest
import torch

from pipeline.runtimes.base import RuntimeFailure, RuntimeOptions, open_runtime
from pipeline.runtimes.pyt import TorchRuntime


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def test_pt2(tmp_path):
    torch.manual_seed(0)
    net = Net().eval()
    ep = torch.export.export(net, (torch.randn(2, 4),))
    path = tmp_path / "net.pt2"
    torch.export.save(ep, str(path))
    rt = open_runtime(str(path), "pt", RuntimeOptions(threads=1))
    assert isinstance(rt, TorchRuntime) and rt.supports_trtexec is False
    with rt:
        (spec,) = rt.inputs()
        assert spec.shape == (2, 4) and spec.dtype == "float32"
        x = np.ones((2, 4), np.float32)
        (y,) = rt.infer({spec.name: x})
        np.testing.assert_allclose(y, net(torch.from_numpy(x)).detach().numpy(), rtol=1e-5)
        assert rt.describe()["device"] == "cpu" and rt.last_device_ms is None
    with pytest.raises(RuntimeFailure, match="before open"):
        rt.infer({spec.name: x})
    # the same file through `edgepipe bench`
    import json

    from pipeline.cli import main

    out = tmp_path / "r.json"
    assert main(["bench", str(path), "--iterations", "5", "--warmup", "1", "--json", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["runtime"] == "pytorch" and doc["latency"]["iterations"] == 5
    assert doc["inputs"] == {spec.name: [2, 4]}
    assert main(["bench", str(path), "--shape", "3x4"]) == 2  # the export fixed the batch at 2


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "epfactory.py").write_text(textwrap.dedent("""
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(4, 3)
            def forward(self, x):
                return self.fc(x)

        def make():
            return Net()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "epfactory:make"


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_factory_with_weights(tmp_path, factory, fmt):
    import importlib

    mod = importlib.import_module("epfactory")
    net = mod.make()
    with torch.no_grad():
        net.fc.weight.fill_(0.5)
        net.fc.bias.fill_(1.0)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        w = tmp_path / "w.safetensors"
        save_file(net.state_dict(), str(w))
    else:
        w = tmp_path / "w.pt"
        torch.save(net.state_dict(), str(w))
    with TorchRuntime(factory, RuntimeOptions(weights=w, input_shape=(1, 4))) as rt:
        assert rt.inputs()[0].shape == (1, 4)
        (y,) = rt.infer({"input": np.ones((1, 4), np.float32)})
    np.testing.assert_allclose(y, np.full((1, 3), 3.0))


def test_errors_are_runtime_failures(tmp_path, factory):
    with pytest.raises(RuntimeFailure, match="not found"):
        TorchRuntime(str(tmp_path / "none.pt2")).open()
    with pytest.raises(RuntimeFailure, match="could not be imported"):
        TorchRuntime("no_such_module_xyz:make").open()
    with pytest.raises(RuntimeFailure, match="weights file not found"):
        TorchRuntime(factory, RuntimeOptions(weights=str(tmp_path / "w.pt"))).open()
    bad = tmp_path / "bad.pt"
    torch.save({"other": torch.zeros(1)}, str(bad))
    with pytest.raises(RuntimeFailure, match="do not fit"):
        TorchRuntime(factory, RuntimeOptions(weights=str(bad))).open()
    with pytest.raises(RuntimeFailure, match="device"):
        RuntimeOptions(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeFailure, match="CUDA is not available"):
            TorchRuntime(factory, RuntimeOptions(device="cuda")).open()


def test_runtime_imports_no_pipeline_part_above_it():
    """pyt.py loads weights through the base layer (pipeline.safeload), not pipeline.models."""
    import ast
    from pathlib import Path

    import pipeline.runtimes.pyt as pyt

    tree = ast.parse(Path(pyt.__file__).read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in mods if m.startswith("pipeline")} <= {"pipeline.errors", "pipeline.safeload",
                                                              "pipeline.runtimes.base"}
