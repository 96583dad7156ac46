"""Generate the JSON Schemas of the pipeline config and of target files, for editor completion and checks.

    python tools/gen_config_schema.py            # (re)write pipeline/configs/config.schema.json and target.schema.json
    python tools/gen_config_schema.py --check    # exit 1 if a checked-in schema differs from the classes

The schemas come from the pydantic classes (`PipelineConfig`, `Target`) through `model_json_schema`, then are
made easier on editors: a union picked by its key (`builtin:` / `factory:` / `onnx:`) is a flat `oneOf` of its
members (with `null` beside them when the field is optional) instead of a `oneOf` nested in an `anyOf`. The
output is deterministic (sorted keys, two-space indent, trailing newline), so regenerating an unchanged config
changes nothing. Editors find the schema through a first line in the YAML file, e.g. for VS Code's YAML
extension: `# yaml-language-server: $schema=<path to>/pipeline/configs/config.schema.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG_SCHEMA = REPO / "pipeline" / "configs" / "config.schema.json"
TARGET_SCHEMA = REPO / "pipeline" / "configs" / "target.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE = "python tools/gen_config_schema.py"


def _flatten_unions(node: Any) -> Any:
    """Turn `anyOf: [{oneOf: [A, B]}, {type: null}]` into `oneOf: [A, B, {type: null}]`, recursively."""
    if isinstance(node, list):
        return [_flatten_unions(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _flatten_unions(v) for k, v in node.items()}
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and any("oneOf" in m for m in any_of):
        flat: list[Any] = []
        for member in any_of:
            flat.extend(member["oneOf"] if set(member) == {"oneOf"} else [member])
        node.pop("anyOf")
        node["oneOf"] = flat
    return node


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a pipeline config file (`pipeline.config.PipelineConfig`)."""
    sys.path.insert(0, str(REPO))
    from pipeline.config import PipelineConfig

    schema = _flatten_unions(PipelineConfig.model_json_schema(mode="validation"))
    schema.update({"$schema": DRAFT, "title": "edgepipe pipeline config",
                   "$comment": f"generated from pipeline.config.PipelineConfig by {REGENERATE}; do not edit"})
    return schema


def target_schema() -> dict[str, Any]:
    """The JSON Schema of a target file (`pipeline.targets.Target`)."""
    sys.path.insert(0, str(REPO))
    from pipeline.targets import Target

    schema = _flatten_unions(Target.model_json_schema(mode="validation"))
    # load_target fills `name` from the file name, so a target file may leave it out
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    schema.update({"$schema": DRAFT, "title": "edgepipe target",
                   "$comment": f"generated from pipeline.targets.Target by {REGENERATE}; do not edit"})
    return schema


def render(schema: dict[str, Any]) -> str:
    """The schema as the checked-in text: sorted keys, two-space indent, ASCII, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def outputs() -> dict[Path, str]:
    """Every schema file and the text it must hold."""
    return {CONFIG_SCHEMA: render(config_schema()), TARGET_SCHEMA: render(target_schema())}


def main(argv: list[str] | None = None) -> int:
    """Write the schemas, or with --check report the ones that differ. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a checked-in schema is out of date")
    args = parser.parse_args(argv)
    stale = [p for p, text in outputs().items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(REPO)} is out of date: run {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    for p, text in outputs().items():
        if p in stale:
            p.write_text(text, encoding="utf-8")
            print(f"wrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
