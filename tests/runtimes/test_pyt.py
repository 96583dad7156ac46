"""TorchRunner: torch.export .pt2 files and module:function factories with weights."""

import textwrap

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.runtimes.base import RunnerOptions, open_runner
from pipeline.runtimes.pyt import TorchRunner


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
    r = open_runner(str(path), options=RunnerOptions(threads=1))
    assert isinstance(r, TorchRunner)
    r.open()
    (spec,) = r.inputs()
    assert spec.shape == (2, 4) and spec.dtype == "float32"
    x = np.ones((2, 4), np.float32)
    (y,) = r.infer({spec.name: x})
    np.testing.assert_allclose(y, net(torch.from_numpy(x)).detach().numpy(), rtol=1e-5)
    assert r.describe()["device"] == "cpu" and r.last_device_ms is None
    r.close()
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
    r = TorchRunner(factory, RunnerOptions(extra={"weights": str(w), "input_shape": (1, 4)}))
    r.open()
    assert r.inputs()[0].shape == (1, 4)
    (y,) = r.infer({"input": np.ones((1, 4), np.float32)})
    np.testing.assert_allclose(y, np.full((1, 3), 3.0))


def test_errors(tmp_path, factory):
    with pytest.raises(UserError, match="not found"):
        TorchRunner(str(tmp_path / "none.pt2")).open()
    with pytest.raises(UserError, match="could not be imported"):
        TorchRunner("no_such_module_xyz:make").open()
    with pytest.raises(UserError, match="weights file not found"):
        TorchRunner(factory, RunnerOptions(extra={"weights": str(tmp_path / "w.pt")})).open()
    bad = tmp_path / "bad.pt"
    torch.save({"other": torch.zeros(1)}, str(bad))
    with pytest.raises(UserError, match="do not fit"):
        TorchRunner(factory, RunnerOptions(extra={"weights": str(bad)})).open()
    with pytest.raises(UserError, match="device"):
        TorchRunner(factory, RunnerOptions(device="tpu")).open()
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            TorchRunner(factory, RunnerOptions(device="cuda")).open()
