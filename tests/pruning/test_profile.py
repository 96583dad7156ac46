"""Per-layer latency: ONNX Runtime's profiler (and a trtexec --dumpProfile table) mapped back to torch modules."""

from __future__ import annotations

import torch.nn as nn

from pipeline.pruning import profile
from pipeline.pruning.latency import export_bytes, measure_pair


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
        self.big = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.ReLU())
        self.small = nn.Conv2d(64, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.small(self.big(self.stem(x)))
        return self.head(x.mean((2, 3)))


def test_module_of_node_follows_torch_scopes():
    assert profile.module_of_node("/features/features.1/conv/conv.1/Conv") == "features.1.conv.1"
    assert profile.module_of_node("/features/features.0/features.0.0/Conv") == "features.0.0"
    assert profile.module_of_node("/classifier/classifier.1/Gemm") == "classifier.1"
    assert profile.module_of_node("/head/Gemm") == "head"
    assert profile.module_of_node("Conv_0") is None


def test_ort_profile_maps_time_to_conv_modules():
    model = Net().eval()
    times = profile.ort_layer_times(export_bytes(model, (3, 32, 32)), (3, 32, 32), runs=5)
    convs = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    mapped = {k for k in times if k}
    assert mapped <= convs and {"stem.0", "big.0", "small"} <= mapped
    # the 16->64 3x3 conv does 4x the stem's multiply-adds: the profile must see it as the slow one
    assert times["big.0"] > times["stem.0"]
    assert times.get("", 0.0) < sum(times[k] for k in mapped)


def test_trtexec_profile_table_uses_the_same_names():
    table = {"layers": [
        {"name": "/stem/stem.0/Conv + /stem/stem.2/Clip", "avg_ms": 0.25},
        {"name": "/big/big.0/Conv + /big/big.1/Relu", "avg_ms": 1.5},
        {"name": "Reformatting CopyNode for Input Tensor 0 to /small/Conv", "avg_ms": 0.01},
        {"name": "/small/Conv", "avg_ms": 0.5},
    ]}
    times = profile.trtexec_layer_times(table)
    assert times == {"stem.0": 0.25, "big.0": 1.5, "": 0.01, "small": 0.5}


def test_measure_pair_reports_both_p50s():
    small = nn.Sequential(nn.Conv2d(3, 4, 1)).eval()
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)).eval()
    t = measure_pair(export_bytes(big, (3, 32, 32)), export_bytes(small, (3, 32, 32)), (3, 32, 32),
                     iterations=20, rounds=4)
    assert t.reference_ms > 0 and t.candidate_ms > 0 and t.speedup == t.reference_ms / t.candidate_ms
