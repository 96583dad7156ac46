"""Config validation: every mistake names the field, the value and what is allowed; exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import UserError

BASE = "teacher: {builtin: resnet_teacher}\nstudent: {builtin: mobilenetv2_student}\ndata: {builtin: digits}\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, text))
    return str(e.value)


def test_minimal_config_gets_defaults(tmp_path):
    cfg, base = load_config(write(tmp_path, BASE))
    assert cfg.distill.temperature == 4.0 and cfg.prune.ratio == 0.5 and cfg.quantize.calibration_samples == 256
    assert base == tmp_path.resolve()


def test_unknown_top_level_key_lists_allowed(tmp_path):
    msg = error_of(tmp_path, BASE + "distil: {epochs: 3}\n")
    assert "unknown key 'distil'" in msg and "distill" in msg and "prune" in msg


def test_unknown_nested_key_lists_allowed(tmp_path):
    msg = error_of(tmp_path, BASE + "prune: {ratoi: 0.3}\n")
    assert "unknown key 'prune.ratoi'" in msg and "ratio" in msg


def test_out_of_range_value_names_field_value_and_bound(tmp_path):
    msg = error_of(tmp_path, BASE + "prune: {ratio: 1.5}\n")
    assert "prune.ratio = 1.5" in msg and "less than 1" in msg


def test_wrong_type(tmp_path):
    msg = error_of(tmp_path, BASE + "distill: {epochs: many}\n")
    assert "distill.epochs = 'many'" in msg and "integer" in msg


def test_unknown_builtin_model_lists_builtins(tmp_path):
    msg = error_of(tmp_path, BASE.replace("resnet_teacher", "vgg"))
    assert "teacher.builtin = 'vgg'" in msg and "resnet_teacher" in msg


def test_model_key_of_wrong_kind(tmp_path):
    msg = error_of(tmp_path, BASE.replace("{builtin: resnet_teacher}", "{builtin: resnet_teacher, factory: 'm:f'}"))
    assert "teacher.factory" in msg and "allowed" in msg


def test_missing_data_file_names_path(tmp_path):
    msg = error_of(tmp_path, BASE.replace("{builtin: digits}", "{train: nope.npz, val: val.npz}"))
    assert "data.train" in msg and "nope.npz" in msg and "not found" in msg


def test_normalisation_must_be_finite(tmp_path):
    msg = error_of(tmp_path, BASE.replace("{builtin: digits}", "{train: t.npz, val: v.npz, mean: [.nan], std: [1.0]}"))
    assert msg.endswith("data.mean = [nan]: Value error, need one finite value per channel (or one for all)")
    assert "\n" not in msg  # one line: the npz member alone is reported, not every union alternative
    msg = error_of(tmp_path, BASE.replace("{builtin: digits}", "{train: t.npz, val: v.npz, mean: [0.5], std: [.inf]}"))
    assert "data.std = [inf]" in msg and "finite value > 0" in msg and "\n" not in msg


def test_missing_weights_file(tmp_path):
    msg = error_of(tmp_path, BASE.replace("{builtin: resnet_teacher}", "{builtin: resnet_teacher, weights: w.pt}"))
    assert "teacher.weights" in msg and "w.pt" in msg


def test_missing_required_section(tmp_path):
    msg = error_of(tmp_path, "teacher: {builtin: resnet_teacher}\ndata: {builtin: digits}\n")
    assert "missing required key 'student'" in msg


def test_yaml_syntax_error_names_file(tmp_path):
    msg = error_of(tmp_path, BASE + "prune: {ratio: [\n")
    assert "could not be parsed" in msg and "c.yaml" in msg


def test_cli_exits_2_without_traceback(tmp_path, capsys):
    p = write(tmp_path, BASE + "quantize: {method: magic}\n")
    code = main(["run", "--config", str(p), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "quantize.method = 'magic'" in err and "minmax" in err
    assert "Traceback" not in err


def test_cli_missing_config_file(tmp_path, capsys):
    code = main(["run", "--config", str(tmp_path / "absent.yaml"), "--quiet"])
    assert code == 2 and "absent.yaml" in capsys.readouterr().err


def test_unknown_target(tmp_path, capsys):
    code = main(["run", "--config", str(write(tmp_path, BASE)), "--target", "toaster", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown target 'toaster'" in err and "cpu" in err


def test_num_classes_below_the_labels_is_refused(tmp_path, capsys):
    p = write(tmp_path, BASE + "num_classes: 5\n")
    code = main(["run", "--config", str(p), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "num_classes = 5" in err and "labels go up to 9" in err


def test_device_patience_and_feature_pairs(tmp_path):
    cfg, _ = load_config(write(tmp_path, BASE + "device: cuda:1\ndistill: {patience: 3, features: "
                               "[{student: features.3, teacher: layer2, weight: 0.5}]}\n"))
    assert cfg.device == "cuda:1" and cfg.distill.patience == 3 and cfg.train_teacher.patience is None
    assert (cfg.distill.features[0].student, cfg.distill.features[0].weight) == ("features.3", 0.5)
    assert load_config(write(tmp_path, BASE))[0].device == "auto"
    msg = error_of(tmp_path, BASE + "device: gpu\n")
    assert "device = 'gpu'" in msg and "auto, cpu, cuda, cuda:N" in msg
    msg = error_of(tmp_path, BASE + "distill: {features: [{student: a, techer: b}]}\n")
    assert "techer" in msg


def test_data_paths_root_split_factory_and_preprocess(tmp_path):
    (tmp_path / "imgs").mkdir()
    head = "teacher: {builtin: resnet50}\nstudent: {builtin: mobilenet_v2, width: 0.5}\n"
    cfg, _ = load_config(write(tmp_path, head + "data: {root: imgs, split: [0.8, 0.1, 0.1]}\npreprocess: imagenet\n"
                               "augment: standard\nworkers: 2\nskip_corrupt: true\n"))
    assert cfg.data.split == [0.8, 0.1, 0.1] and cfg.preprocess == "imagenet" and cfg.workers == 2
    cfg, _ = load_config(write(tmp_path, head + "data: {factory: 'mydata:make', kwargs: {n: 3}}\n"
                               "preprocess: {resize: 36, crop: 32, mode: L, mean: [0.5], std: [0.5]}\n"))
    assert cfg.data.factory == "mydata:make" and cfg.preprocess.crop == 32
    assert "needs data.split" in error_of(tmp_path, head + "data: {root: imgs}\n")
    assert "summing to 1" in error_of(tmp_path, head + "data: {root: imgs, split: [0.5, 0.1]}\n")
    assert "data.train = 'nope'" in error_of(tmp_path, head + "data: {train: nope, val: imgs}\n")
    assert "augment" in error_of(tmp_path, BASE + "augment: flip\n")
    assert "unknown key 'data.factroy'" in error_of(tmp_path, head + "data: {factory: 'a:b', factroy: 1}\n")
