"""Head-scoped INT8 exclusions: a detector's decode arithmetic is found, the backbone's SiLU is not."""

from __future__ import annotations

import onnx
import pytest
import torch

from pipeline.onnx_utils import export_onnx
from pipeline.tasks.heads import as_records, head_exclusion_names, head_exclusions


def _export(model, shape, path, names):
    export_onnx(model.eval(), shape, path, 17, False, True, output_names=names)
    return path


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory):
    from detector_fixture import make_detector

    torch.manual_seed(0)
    return _export(make_detector(), (3, 48, 48), tmp_path_factory.mktemp("heads") / "det.onnx", ["boxes", "scores"])


def test_detector_heads_keep_score_sigmoid_and_box_math_but_not_the_backbone_silu(detector_onnx):
    graph = onnx.load(str(detector_onnx)).graph
    by_name = {n.name: n for n in graph.node}
    found = head_exclusions(detector_onnx)
    names = [h.name for h in found]
    # every SiLU of the backbone and of the heads' hidden layers (Sigmoid + Mul feeding a conv) stays INT8
    silu = [n.name for n in graph.node
            if n.op_type in ("Sigmoid", "Mul") and ("backbone" in n.name or "head.0" in n.name)]
    assert silu and not set(silu) & set(names)
    ops = {h.op_type for h in found}
    assert {"Sigmoid", "Mul", "Add", "Concat"} <= ops  # score/offset sigmoid, stride/grid math, box concat
    # the score head's sigmoid reaches only 'scores'; the box decode only 'boxes'
    score_sigmoids = [h for h in found if h.op_type == "Sigmoid" and h.outputs == ("scores",)]
    assert len(score_sigmoids) == 1 and "activation" in score_sigmoids[0].why
    assert {o for h in found for o in h.outputs} == {"boxes", "scores"}
    # each one is really on a path from a head conv to an output: its inputs come from head nodes or the
    # heads' last convs, never from the backbone directly
    producer = {o: n for n in graph.node for o in n.output}
    for name in names:
        for inp in by_name[name].input:
            p = producer.get(inp)
            assert p is None or "backbone" not in p.name, (name, p.name)
    assert head_exclusion_names(detector_onnx) == names
    assert as_records(found)[0]["outputs"] == list(found[0].outputs)


def test_a_plain_classifier_has_no_head_exclusions_and_a_softmax_one_keeps_only_its_softmax(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self, softmax):
            super().__init__()
            self.conv, self.fc, self.softmax = torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 4), softmax

        def forward(self, x):
            y = self.fc(torch.nn.functional.silu(self.conv(x)).mean((2, 3)))
            return y.softmax(1) if self.softmax else y

    assert head_exclusions(_export(Net(False), (3, 8, 8), tmp_path / "a.onnx", ["logits"])) == []
    found = head_exclusions(_export(Net(True), (3, 8, 8), tmp_path / "b.onnx", ["probs"]))
    assert [h.op_type for h in found] == ["Softmax"]


def test_arithmetic_that_also_feeds_the_trunk_is_not_taken(tmp_path):
    class Residual(torch.nn.Module):
        """out = conv(t) + t with t = silu(conv0(x)): t also feeds the conv, so its SiLU is trunk, not head."""

        def __init__(self):
            super().__init__()
            self.c0, self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            t = torch.nn.functional.silu(self.c0(x))
            return torch.sigmoid(self.c1(t) + t)

    path = _export(Residual(), (3, 8, 8), tmp_path / "r.onnx", ["out"])
    found = head_exclusions(path, quantizable_only=False)
    assert [h.op_type for h in found] == ["Add", "Sigmoid"]


def test_only_op_types_onnx_runtime_quantizes_are_listed_unless_asked(detector_onnx):
    everything = {h.op_type for h in head_exclusions(detector_onnx, quantizable_only=False)}
    listed = {h.op_type for h in head_exclusions(detector_onnx)}
    assert "Exp" in everything and "Exp" not in listed  # ORT never quantizes Exp: nothing to exclude
    assert listed < everything
