"""The checked-in JSON Schemas match the config classes, and they accept the shipped configs and targets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_schema", REPO / "tools" / "gen_config_schema.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checked_in_schemas_match_the_classes():
    gen = _generator()
    for path, text in gen.outputs().items():
        assert path.is_file(), f"{path.relative_to(REPO)} is missing: run {gen.REGENERATE}"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(REPO)} differs from the config classes: run {gen.REGENERATE} and commit the result")


def test_a_new_config_field_makes_the_check_fail(monkeypatch, tmp_path, capsys):
    """What the test above guards against: add a field without regenerating, and the check says so."""
    from pydantic import create_model

    import pipeline.config as config

    gen = _generator()
    grown = create_model("PipelineConfig", __base__=config.PipelineConfig, new_field=(int, 3))
    monkeypatch.setattr(config, "PipelineConfig", grown)
    assert '"new_field"' in gen.outputs()[gen.CONFIG_SCHEMA]
    assert gen.main(["--check"]) == 1
    assert "config.schema.json is out of date: run python tools/gen_config_schema.py" in capsys.readouterr().err


def test_generation_is_deterministic():
    gen = _generator()
    first, second = gen.outputs(), gen.outputs()
    assert first == second
    text = first[gen.CONFIG_SCHEMA]
    assert text.endswith("}\n") and json.loads(text)["$schema"].startswith("https://json-schema.org/")
    assert list(json.loads(text)) == sorted(json.loads(text)), "keys are sorted"


def test_unions_are_flat_for_editors():
    schema = json.loads(_generator().outputs()[_generator().CONFIG_SCHEMA])
    model = schema["properties"]["model"]
    assert "anyOf" not in model and {"type": "null"} in model["oneOf"]
    assert {m.get("$ref") for m in model["oneOf"]} >= {"#/$defs/BuiltinModel", "#/$defs/OnnxModel"}


def test_shipped_configs_and_targets_validate_against_the_schemas():
    jsonschema = pytest.importorskip("jsonschema")
    gen = _generator()
    config_schema = json.loads(gen.outputs()[gen.CONFIG_SCHEMA])
    target_schema = json.loads(gen.outputs()[gen.TARGET_SCHEMA])
    configs = sorted((REPO / "pipeline" / "configs").glob("*.yaml"))
    targets = sorted((REPO / "targets").glob("*.yaml"))
    assert configs and len(targets) >= 9
    for path in configs:
        jsonschema.validate(yaml.safe_load(path.read_text()), config_schema)
    for path in targets:
        jsonschema.validate(yaml.safe_load(path.read_text()), target_schema)
    bad = dict(yaml.safe_load((REPO / "targets" / "android-arm64.yaml").read_text()), cores=4)
    with pytest.raises(jsonschema.ValidationError, match="cores"):
        jsonschema.validate(bad, target_schema)
