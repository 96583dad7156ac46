"""Make the deploy bundle `dist/<target>/` from a pipeline run directory.

The bundle is everything the person (or `edgepipe deploy --device`) needs at the device: the INT8 QDQ
ONNX, the standalone device runner with its device facts and ONNX Runtime runtime, eval data, the run's
report, a README, what the target's backend adds (for TensorRT: the engine recipe, i.e. our Python builder
and the equivalent trtexec script, and the TensorRT runtime), and `manifest.json` with the sha256 of every
file, which the device runner checks before it builds or runs anything. The bundle is assembled in a
temporary folder next to DIST and swapped in, so DIST is always either the old bundle or the new one.
"""

from __future__ import annotations

import datetime
import shutil
import sys
import tempfile
from pathlib import Path
from string import Template
from typing import Any

from pipeline.backends import Backend, backend_for, ship_standalone
from pipeline.build.recipe import MODEL_NAME
from pipeline.errors import UserError
from pipeline.fileio import read_json, sha256_file, write_json, write_text
from pipeline.targets import Target
from pipeline.version import __version__

BUNDLE_FORMAT = "edgepipe-bundle/1"
DEVICE_DIR = Path(__file__).resolve().parent / "device"
PIPELINE_DIR = Path(__file__).resolve().parents[1]
# Standalone files every bundle ships (bundle name <- source); the backend adds its runtime's own.
DEVICE_FILES = (("device_runner.py", DEVICE_DIR / "device_runner.py"),
                ("device_checks.py", DEVICE_DIR / "device_checks.py"),
                ("device_facts.py", PIPELINE_DIR / "device_facts.py"),
                ("ort_runtime.py", PIPELINE_DIR / "runtimes" / "ort.py"),
                ("preprocess.py", PIPELINE_DIR / "preprocess.py"))  # raw image files -> inputs, as in training
MAX_EVAL_BYTES = 64 << 20  # larger eval sets are cut to their first samples (recorded in the manifest)
BUDGET_PERCENTILE, BUDGET_BATCH = "p99", 1  # the latency budget is a tail-latency promise at batch 1


def load_run(run_dir: Path) -> dict[str, Any]:
    """Read a run's manifest and check that its final model is the file it names.

    Args:
        run_dir: the pipeline's output folder (holds manifest.json, quantize/, data/, report.md).
    Returns:
        The run manifest.
    Raises:
        UserError: missing manifest or model, or a model whose sha256 differs from the manifest's.
    """
    manifest = read_json(run_dir / "manifest.json", "run manifest")
    final = manifest.get("final")
    if manifest.get("complete") is False:
        raise UserError(f"run {run_dir} did not finish (failed stage: {manifest.get('failed_stage')}); "
                        "rerun the pipeline before bundling it")
    if not isinstance(final, dict) or "path" not in final:
        raise UserError(f"run manifest {run_dir / 'manifest.json'} has no 'final' model: did the pipeline finish?")
    model = run_dir / final["path"]
    if not model.is_file():
        raise UserError(f"final model {model} (named by {run_dir / 'manifest.json'}) not found")
    if final.get("sha256") and sha256_file(model) != final["sha256"]:
        raise UserError(f"{model} changed since the pipeline wrote it (sha256 differs from the run manifest); "
                        "rerun the pipeline with --force")
    return manifest


def make_bundle(run_dir: str | Path, target: Target, dist: str | Path) -> dict[str, Any]:
    """Assemble the bundle for `target` from `run_dir` into `dist`, atomically.

    Args:
        run_dir: the pipeline run folder.
        target: the loaded Target; must be the target the run was made for.
        dist: the bundle folder to create or replace (only an earlier bundle or an empty folder is replaced).
    Returns:
        The bundle manifest (also written to DIST/manifest.json).
    Raises:
        UserError: an unfinished or changed run, a run for another target, a DIST that is not a bundle.
    """
    run_dir, dist = Path(run_dir), Path(dist)
    run = load_run(run_dir)
    if run.get("target") is not None and run["target"] != target.name:
        raise UserError(f"run {run_dir} was made for target {run['target']!r}, not {target.name!r}: its INT8 scheme "
                        f"and build settings belong to that target (rerun with --target {target.name})")
    check_dist(dist)
    dist.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dist.name}.new-", dir=dist.parent))
    try:
        manifest = _assemble(run_dir, run, target, tmp)
        _swap(tmp, dist)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def _assemble(run_dir: Path, run: dict[str, Any], target: Target, out: Path) -> dict[str, Any]:
    final = run["final"]
    model_src = run_dir / final["path"]
    backend = backend_for(target)
    backend.check_model(model_src)
    shutil.copyfile(model_src, out / MODEL_NAME)
    for name, src in DEVICE_FILES:
        ship_standalone(src, out / name)
    for name in ("report.md", "report.png"):  # the report and the plot it shows
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
    eval_info = _copy_eval(run_dir / final.get("eval_data", "data/eval.npz"), out / "eval.npz")
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "edgepipe_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": target.model_dump(mode="json"),
        "target_alias": target.alias,
        "runtime": backend.device_module,
        "model": MODEL_NAME,
        "input": _input_spec(final["input"], model_src),
        "output": final.get("output"),
        # every output of the model, in order (boxes and scores, masks, several heads): read from the file
        "outputs": _output_specs(model_src),
        "preprocessing": {
            "layout": final["input"].get("layout", "NCHW"), "dtype": final["input"].get("dtype", "float32"),
            "mean": final["input"].get("mean"), "std": final["input"].get("std"),
            "description": final["input"].get("preprocessing")
            or "x = (raw - mean[c]) / std[c] per channel, raw scaled to [0, 1]",
            "eval_npz": "already preprocessed: feed eval.npz's x as is",
            # the exact recipe for raw image files (preprocess.py: Preprocess.from_dict(recipe).load(path));
            # None: array data, preprocessed before edgepipe saw it
            "recipe": final["input"].get("preprocess"),
            "module": "preprocess.py",
        },
        "expected": {"accuracy": final.get("accuracy"), "host_latency_ms": final.get("latency_ms"),
                     "host_runtime": final.get("runtime")},
        "latency_budget": {"ms": target.latency_budget_ms, "percentile": BUDGET_PERCENTILE, "batch": BUDGET_BATCH},
        "benchmark": {"batches": _device_batches(target), "warmup": 20, "runs": 200},
        "eval": eval_info,
        "versions": dict(run.get("versions", {}), edgepipe=__version__),
        "source_run": {"dir": str(run_dir.resolve()), "manifest_sha256": sha256_file(run_dir / "manifest.json"),
                       "model_sha256": final.get("sha256")},
    }
    build_record = next((r for r in run.get("stages") or [] if r.get("name") == "build"), None)
    # what the quantize stage chose (e.g. reduce_range false on a VNNI host): the device runner refuses a
    # full-range model on an x86 CPU without VNNI, where its u8*s8 sums can saturate
    q_record = next((r for r in run.get("stages") or [] if r.get("name") == "quantize"), None)
    q_metrics = (q_record or {}).get("metrics") or {}
    if q_metrics.get("scheme"):
        manifest["quantization"] = {k: q_metrics["scheme"].get(k) for k in ("activation_type", "weight_type",
                                                                             "reduce_range")}
        manifest["quantization"]["decision"] = q_metrics.get("decision", "int8")
        if manifest["quantization"]["decision"] != "int8":  # a float model ships: no INT8 weights to saturate
            manifest["quantization"]["reduce_range"] = None
    sparse = bool(((build_record or {}).get("metrics") or {}).get("sparse_2_4"))  # the build stage decided it
    build = backend.bundle(target, manifest["input"], out, sparse_2_4=sparse)
    if build is not None:
        manifest["build"] = build
    # ONNX Runtime Mobile targets: model.ort + required_operators_and_types.config made by the build stage
    ort_mobile = backend.bundle_build_outputs(target, run_dir, build_record, out)
    if ort_mobile is not None:
        manifest["ort_mobile"] = ort_mobile
    write_text(out / "README.md", _readme(manifest, backend))
    manifest["files"] = {
        p.relative_to(out).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(out.rglob("*")) if p.is_file() and p.name != "manifest.json"
    }
    write_json(out / "manifest.json", manifest)
    # mkdtemp/mkstemp make 0700/0600 entries; a bundle is meant to be read (and copied) by others
    out.chmod(0o755)
    for p in out.rglob("*"):
        p.chmod(0o755 if p.is_dir() or p.suffix == ".sh" else 0o644)
    return manifest


def _input_spec(recorded: dict[str, Any], model: Path) -> dict[str, Any]:
    """The run's input record, plus the height/width range a dynamic-size ONNX was checked at (engine profiles)."""
    if model.suffix != ".onnx":
        return recorded
    from pipeline.onnx_utils import spatial_range

    hw = spatial_range(model)
    return dict(recorded, spatial_range=hw) if hw else recorded


def _output_specs(model: Path) -> list[dict[str, Any]] | None:
    """Name, shape and type of each model output (None for a file that is not ONNX)."""
    if model.suffix != ".onnx":
        return None
    from pipeline.onnx_utils import model_output_specs

    return model_output_specs(model)


def _device_batches(target: Target) -> list[int]:
    """The batch sizes the device benchmarks: the target's within its profile, and the budget's batch."""
    p = target.profile
    batches = sorted({b for b in target.benchmark_batches if p.min_batch <= b <= p.max_batch} or {p.opt_batch})
    if BUDGET_BATCH not in batches and p.min_batch <= BUDGET_BATCH:
        batches.insert(0, BUDGET_BATCH)
    return batches


def _copy_eval(src: Path, dest: Path) -> dict[str, Any] | None:
    """Copy eval.npz, cut to its first samples if it is larger than MAX_EVAL_BYTES."""
    if not src.is_file():
        return None
    import numpy as np

    with np.load(src) as data:
        x, y = data["x"], data["y"]
    n_all = len(x)
    if src.stat().st_size <= MAX_EVAL_BYTES:
        shutil.copyfile(src, dest)
        n = n_all
    else:
        n = max(1, MAX_EVAL_BYTES // max(1, x[0].nbytes))
        with open(dest, "wb") as f:
            np.savez(f, x=x[:n], y=y[:n])
    return {"path": "eval.npz", "samples": int(n), "of": int(n_all)}


def _readme(manifest: dict[str, Any], backend: Backend) -> str:
    template = Template((DEVICE_DIR / "bundle_readme.md").read_text(encoding="utf-8"))
    t = manifest["target"]
    budget = manifest["latency_budget"]
    build = manifest.get("build")
    return template.substitute(
        target=t["name"], description=t.get("description") or t["name"], runtime=manifest["runtime"],
        requirements=backend.readme_requirements, accuracy=manifest["expected"]["accuracy"],
        budget=f"{budget['ms']} ms ({budget['percentile']} at batch {budget['batch']})" if budget["ms"] else "none",
        build_step=backend.readme_build_step(build),
        trtexec=" ".join((build or {}).get("trtexec_argv", [])) or "(not a TensorRT target)",
    )


def check_dist(dist: Path) -> None:
    """Refuse a --dist that is a file, or a folder that is neither empty nor an earlier bundle.

    Never delete a folder we did not make: `--dist ~` must not wipe a home directory.

    Args:
        dist: the bundle folder.
    Raises:
        UserError: naming the path.
    """
    if not dist.exists():
        if any(p.exists() and not p.is_dir() for p in dist.parents):
            raise UserError(f"--dist {dist}: a part of this path is a file, not a folder")
        return
    if not dist.is_dir():
        raise UserError(f"--dist {dist} is a file; give a folder (new, empty, or an earlier bundle)")
    if not any(dist.iterdir()):
        return
    m = dist / "manifest.json"
    if m.is_file():
        try:
            if read_json(m).get("format") == BUNDLE_FORMAT:
                return
        except (UserError, AttributeError):
            pass
    raise UserError(f"--dist {dist} exists and is not an edgepipe bundle; choose a new or empty folder")


def _swap(new: Path, dist: Path) -> None:
    """Put `new` at `dist`: rename the old bundle aside, rename the new one in, then delete the old."""
    old = None
    if dist.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dist.name}.old-", dir=dist.parent))
        dist.rename(old / "b")
    try:
        new.rename(dist)
    except OSError:
        if old is not None:
            (old / "b").rename(dist)  # put the old bundle back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    print(f"edgepipe: bundle for {dist.name} written to {dist}", file=sys.stderr)
