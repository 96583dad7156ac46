"""The example CI job (tools/ci/github-actions.yml) parses, and every edgepipe command and flag it runs exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.errors import UserError

RECIPE = Path(__file__).resolve().parents[1] / "tools" / "ci" / "github-actions.yml"


def _steps() -> list[dict]:
    doc = yaml.safe_load(RECIPE.read_text())
    return [s for job in doc["jobs"].values() for s in job["steps"]]


def edgepipe_commands(script: str) -> list[list[str]]:
    """The `edgepipe ...` command lines in a step's shell script, as argv (GitHub expressions filled in)."""
    script = re.sub(r"\$\{\{\s*matrix\.target\s*\}\}", "cpu", script)
    script = re.sub(r"\\\n\s*", " ", script)  # shell line continuations
    commands = []
    for line in script.splitlines():
        line = line.strip()
        if line.startswith("edgepipe "):
            commands.append(shlex.split(line, comments=True))
    return commands


def check_argv(argv: list[str]) -> None:
    """Parse `argv` (starting with "edgepipe") with the real parsers; raise AssertionError naming what is wrong."""
    from pipeline.bench import cli as bench_cli
    from pipeline.cli import build_parser

    args = argv[1:]
    try:
        if args[0] == "bench":
            rest = args[1:]
            if rest[0] == "compare":
                bench_cli._compare_parser().parse_args(rest[1:])
            else:
                bench_cli._bench_parser().parse_args(rest)
        else:
            build_parser().parse_args(args)
    except (SystemExit, UserError) as e:
        raise AssertionError(f"tools/ci/github-actions.yml runs {shlex.join(argv)!r}, which edgepipe's parser "
                             f"rejects ({e}): update the recipe to the CLI") from None


def test_recipe_parses_and_every_edgepipe_command_exists():
    commands = [c for s in _steps() if "run" in s for c in edgepipe_commands(s["run"])]
    used = {tuple(c[1:3]) if c[1] == "bench" and c[2] == "compare" else (c[1],) for c in commands}
    # the job compresses, measures, gates on the baseline and bundles
    assert {("run",), ("bench",), ("bench", "compare"), ("deploy",)} <= used, used
    for argv in commands:
        check_argv(argv)


def test_recipe_installs_pinned_cpu_torch_first_and_uploads_the_bundle():
    steps = _steps()
    install = next(s["run"] for s in steps if "run" in s and "pip install" in s["run"])
    assert install.index("$TORCH_SPEC") < install.index("pip install ."), "torch first, then edgepipe"
    assert "download.pytorch.org/whl/cpu" in install
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert "dist/${{ matrix.target }}/" in upload["with"]["path"]
    gate = next(s["run"] for s in steps if "run" in s and "bench compare" in s["run"])
    assert "--max-regression" in gate and "$BASELINES" in gate


def test_recipe_states_the_documented_exit_codes():
    import pipeline.cli as cli

    text = RECIPE.read_text()
    for stated in ("0 success", "1 a measured budget was exceeded", "2 a user error", "130 interrupted"):
        assert stated in cli.__doc__, f"pipeline/cli.py no longer documents {stated!r}: update the recipe too"
        assert stated in text


@pytest.mark.parametrize("line", ["edgepipe run --config c.yaml --no-such-flag",
                                  "edgepipe bench compare new.json old.json --max-regresion 5%",
                                  "edgepipe bench m.onnx --batches 1",
                                  "edgepipe frobnicate"])
def test_the_check_catches_a_rotten_command(line):
    with pytest.raises(AssertionError, match="update the recipe"):
        check_argv(shlex.split(line))
