"""`edgepipe run`: run the pipeline for a target into a run folder."""

from __future__ import annotations

from pipeline.commands.common import add_output_options, emit_manifest


def register(sub) -> None:
    """Add the `run` subcommand."""
    p = sub.add_parser("run", help="run the pipeline (distill, prune, export, quantize, build, benchmark, report)",
                       description="Run every stage for TARGET into OUT, reusing stages whose inputs did not change.")
    p.add_argument("--config", required=True, help="pipeline YAML (see README: config reference)")
    p.add_argument("--target", default="cpu", help="target name from targets/ or a target file (default: cpu)")
    add_output_options(p, "run folder (default: runs/demo)", out_default="runs/demo")
    p.add_argument("--force", action="store_true", help="redo every stage even if cached")
    p.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                   help="train with N processes (DistributedDataParallel through torchrun: gloo on CPU, NCCL on "
                        "GPUs, one GPU per process); batch sizes stay global (default: 1)")
    p.set_defaults(func=_run)


def _positive_int(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--nproc {text!r}: allowed: an integer >= 1")
    return n


def _run(args) -> int:
    """Run the pipeline; print or write the manifest with --json. Returns the exit code."""
    import os

    from pipeline.run_loop import run_pipeline

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from pipeline.ranks import launch

        return launch(args.nproc, _argv_for_ranks(args))
    manifest = run_pipeline(args.config, target=args.target, out_dir=args.out, force=args.force, quiet=args.quiet)
    if os.environ.get("RANK", "0") != "0":
        return 0  # a training worker: rank 0 reports
    emit_manifest(manifest, args.json)
    return 0


def _argv_for_ranks(args) -> list[str]:
    """The same `run` command for every torchrun rank (without --nproc)."""
    argv = ["run", "--config", str(args.config), "--target", str(args.target), "--out", str(args.out)]
    argv += ["--force"] * bool(args.force) + ["--quiet"] * bool(args.quiet)
    return argv + (["--json", str(args.json)] if args.json else [])
