"""The user's eval function: loaded like factories, called with a predict() over any runtime, result checked."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.onnx_utils import export_onnx, ort_session
from pipeline.runtimes.base import RuntimeOptions, TensorSpec, open_runtime
from pipeline.tasks.user_eval import eval_split, evaluate, load_eval, make_predict, score


class TwoHeads(torch.nn.Module):
    output_names = ("a", "b")

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y.mean((2, 3)), torch.sigmoid(y).flatten(1)


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    torch.manual_seed(0)
    model = TwoHeads().eval()
    path = tmp_path_factory.mktemp("eval") / "m.onnx"
    export_onnx(model, (2, 6, 6), path, 17, False, False, output_names=["a", "b"])
    return model, path


def test_loads_the_module_beside_the_config_before_an_installed_one(tmp_path):
    (tmp_path / "json.py").write_text("def score(predict, data):\n    return 0.25\n")  # shadows the stdlib name
    fn = load_eval("json:score", tmp_path)
    assert fn(None, None) == 0.25


@pytest.mark.parametrize("spec, message", [
    ("metrics", "allowed: 'module:function'"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("user_metrics:missing", "has no 'missing'"),
    ("user_metrics:VALUE", "not a function"),
    ("broken:f", "importing .*broken.py failed: ZeroDivisionError"),
])
def test_bad_eval_specs_name_the_field_and_the_problem(tmp_path, spec, message):
    (tmp_path / "user_metrics.py").write_text("VALUE = 3\n")
    (tmp_path / "broken.py").write_text("1 / 0\n")
    with pytest.raises(UserError, match=message) as e:
        load_eval(spec, tmp_path)
    assert str(e.value).startswith(f"eval = {spec!r}")


def test_predict_is_the_same_over_torch_onnxruntime_and_a_runtime(two_heads):
    model, path = two_heads
    x = np.random.default_rng(0).standard_normal((13, 2, 6, 6)).astype(np.float32)
    with torch.no_grad():
        ref = [o.numpy() for o in model(torch.from_numpy(x))]
    with open_runtime(str(path), None, RuntimeOptions(providers=("CPUExecutionProvider",))) as rt:
        runs = {"torch": make_predict(model, batch_size=4)(x), "session": make_predict(ort_session(path), 5)(x),
                "runtime": make_predict(rt, batch_size=64)(x)}
    for name, outs in runs.items():
        assert [o.shape for o in outs] == [(13, 3), (13, 108)], name
        for r, o in zip(ref, outs, strict=True):
            np.testing.assert_allclose(o, r, atol=1e-5, err_msg=name)


def test_a_static_batch_runtime_gets_padded_batches_and_the_padding_is_dropped():
    seen = []

    class StaticTwo:  # a DLA-like engine: exactly 4 rows per call
        def inputs(self):
            return [TensorSpec("input", (4, 1), "float32")]

        def infer(self, feeds):
            x = feeds["input"]
            seen.append(len(x))
            return [x * 2]

    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    out = make_predict(StaticTwo())(x)
    assert seen == [4, 4, 4] and out[0].shape == (10, 1)
    np.testing.assert_array_equal(out[0], x * 2)


@pytest.mark.parametrize("value, message", [
    (1.5, "returned 1.5; allowed: a float in \\[0, 1\\]"),
    (float("nan"), "returned nan"),
    (-0.1, "returned -0.1"),
    ("0.5", "returned '0.5' \\(str\\)"),
    (True, "returned True \\(bool\\)"),
    (None, "returned None"),
])
def test_a_score_outside_0_1_or_not_a_number_is_refused_naming_function_and_value(value, message):
    def my_metric(predict, data):
        return value

    with pytest.raises(UserError, match=f"eval 'mymod:my_metric' {message}"):
        score(my_metric, lambda x: [x], None, name="mymod:my_metric")


def test_numpy_scores_are_accepted_and_errors_inside_the_function_are_user_errors(tmp_path):
    assert score(lambda p, d: np.float32(0.75), lambda x: [x], None) == 0.75
    assert score(lambda p, d: np.array([1.0]), lambda x: [x], None) == 1.0
    (tmp_path / "m.py").write_text("def f(predict, data):\n    return data['missing']\n")
    with pytest.raises(UserError, match="eval 'm:f' raised KeyError"):
        score(load_eval("m:f", tmp_path), lambda x: [x], {})


def test_evaluate_runs_an_onnx_file_and_passes_the_data_through(two_heads, tmp_path):
    _, path = two_heads
    x = np.random.default_rng(1).standard_normal((6, 2, 6, 6)).astype(np.float32)
    (tmp_path / "metric.py").write_text(textwrap.dedent("""
        import numpy as np

        def frac_positive(predict, data):
            a, b = predict(data["x"])
            assert a.shape == (len(data["x"]), 3) and b.shape[1] == 108
            return float((a > 0).mean())
    """))
    got = evaluate("metric:frac_positive", path, {"x": x}, base=tmp_path)
    assert got == float((make_predict(ort_session(path))(x)[0] > 0).mean())


def test_eval_split_is_the_held_out_dataset_of_a_run_or_the_data_itself():
    class D:
        splits = {"train": "tr", "test": "held-out"}

    assert eval_split(D()) == "held-out"
    assert eval_split({"x": 1}) == {"x": 1}


def test_accuracy_on_uses_the_users_eval_on_the_split_asked_for(two_heads, tmp_path):
    """Every stage's accuracy (train_teacher, distill, prune) comes through accuracy_on: with `eval:` it is the
    user's score on that split, never an argmax over a multi-output model."""
    from types import SimpleNamespace

    from pipeline.stages.common import accuracy_on

    model, _ = two_heads
    (tmp_path / "split_metric.py").write_text(textwrap.dedent("""
        def which(predict, data):
            a, b = predict(data["x"])  # both outputs of the two-head model
            return data["score"]
    """))
    x = np.zeros((3, 2, 6, 6), np.float32)
    data = SimpleNamespace(splits={"val": {"x": x, "score": 0.25}, "test": {"x": x, "score": 0.75}})
    inputs = SimpleNamespace(config=SimpleNamespace(eval="split_metric:which"), config_dir=tmp_path, data=data)
    assert accuracy_on(inputs, model) == 0.75 and accuracy_on(inputs, model, "val") == 0.25
    (tmp_path / "bad_metric.py").write_text("def f(predict, data):\n    return 75.0\n")
    with pytest.raises(UserError, match="eval 'bad_metric:f' returned 75.0"):
        accuracy_on(SimpleNamespace(config=SimpleNamespace(eval="bad_metric:f"), config_dir=tmp_path, data=data),
                    model)
