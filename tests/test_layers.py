"""Imports only point down the layers that ARCHITECTURE.md draws.

Every `import` in `pipeline/` is read from the syntax tree (function-level and guarded imports too) and
each module is placed in a layer; an import of a higher layer, or across the `tools` parts that must stay
apart, fails the test with file, line and the arrow that is not allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pipeline"

# Lowest first; a module may import its own layer or any layer listed before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("pipeline.version", "pipeline.errors", "pipeline.fileio", "pipeline.validation", "pipeline.safeload",
              "pipeline.device_facts", "pipeline.preprocess", "pipeline.isa", "pipeline.user_code")),
    ("specs", ("pipeline.targets", "pipeline.config")),
    ("runtimes", ("pipeline.runtimes",)),
    ("tools", ("pipeline.build", "pipeline.bench", "pipeline.models", "pipeline.data", "pipeline.datasets",
               "pipeline.training", "pipeline.onnx_utils", "pipeline.int8", "pipeline.pruning", "pipeline.tasks")),
    ("backends", ("pipeline.backends",)),
    ("stages", ("pipeline.stages",)),
    ("orchestration", ("pipeline.run_loop", "pipeline.run_folder", "pipeline.cache", "pipeline.deploy",
                       "pipeline.ranks")),
    ("interface", ("pipeline.cli", "pipeline.commands", "pipeline.__main__", "pipeline")),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

# Inside `tools`, these parts stay independent of each other, except for the arrows listed.
TOOL_PARTS = ("pipeline.build", "pipeline.bench", "pipeline.models", "pipeline.data", "pipeline.datasets",
              "pipeline.training", "pipeline.onnx_utils", "pipeline.int8", "pipeline.pruning", "pipeline.tasks")
TOOL_ARROWS = {
    ("pipeline.training", "pipeline.models"),  # training loops build and checkpoint models
    ("pipeline.training", "pipeline.datasets"),  # and read batches from the streamed data sets
    ("pipeline.data", "pipeline.datasets"),  # the config's data section becomes data sets
    ("pipeline.bench", "pipeline.onnx_utils"),  # the harness reads an ONNX model's input spec
    ("pipeline.build", "pipeline.onnx_utils"),
    ("pipeline.int8", "pipeline.onnx_utils"),  # the INT8 search compares ONNX models
    ("pipeline.int8", "pipeline.training"),  # QAT fine-tunes with the KD loop
    ("pipeline.pruning", "pipeline.onnx_utils"),  # candidates are exported and timed as ONNX
    ("pipeline.pruning", "pipeline.bench"),  # ... timed by the same latency harness as `edgepipe bench`
    ("pipeline.int8", "pipeline.bench"),  # INT8 candidates are timed by that harness too
    ("pipeline.tasks", "pipeline.onnx_utils"),  # user eval functions run ONNX models too
}


def _owner(module: str, prefixes: tuple[str, ...]) -> str | None:
    """The longest prefix (as a dotted package path) that `module` falls under."""
    best = None
    for p in prefixes:
        if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best)):
            best = p
    return best


def layer_of(module: str) -> str:
    """The layer a `pipeline.*` module belongs to (the most specific prefix wins)."""
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        p = _owner(module, prefixes)
        if p is not None and len(p) > best_len:
            best, best_len = name, len(p)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS here and to ARCHITECTURE.md")
    return best


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import of a `pipeline` module in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "pipeline"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "pipeline":
                # `from pipeline.x import y` may name a submodule y: judge by the deepest real module
                for a in node.names:
                    sub = f"{mod}.{a.name}"
                    found.append((node.lineno, sub if _is_module(sub) else mod))
    return found


def _is_module(dotted: str) -> bool:
    p = ROOT.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


SOURCES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer():
    missing = []
    for path in SOURCES:
        try:
            layer_of(_module_name(path))
        except LookupError as e:
            missing.append(str(e))
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path):
    here = _module_name(path)
    mine = layer_of(here)
    bad = []
    for line, target in _imports(path):
        theirs = layer_of(target)
        if RANK[theirs] > RANK[mine]:
            bad.append(f"{path.relative_to(ROOT)}:{line}: {here} ({mine}) imports {target} ({theirs}), a higher layer")
        elif mine == theirs == "tools":
            a, b = _owner(here, TOOL_PARTS), _owner(target, TOOL_PARTS)
            if a != b and (a, b) not in TOOL_ARROWS:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target}: {a} -> {b} is not an "
                           "allowed arrow inside tools (see ARCHITECTURE.md)")
    assert not bad, "\n".join(bad)


def test_the_checker_catches_an_upward_import(tmp_path):
    # The checker itself must be able to fail: a runtime importing a stage is an upward arrow.
    assert RANK[layer_of("pipeline.runtimes.ort")] < RANK[layer_of("pipeline.stages.build")]
    assert layer_of("pipeline.bench.fingerprint") == "tools"
    assert layer_of("pipeline.device_facts") == "base"
    assert layer_of("pipeline") == "interface"
