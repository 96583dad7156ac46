"""`edgepipe run`: run the pipeline for a target into a run folder."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    """Add the `run` subcommand."""
    p = sub.add_parser("run", help="run the pipeline (distill, prune, export, quantize, build, benchmark, report)",
                       description="Run every stage for TARGET into OUT, reusing stages whose inputs did not change.")
    p.add_argument("--config", required=True, help="pipeline YAML (see README: config reference)")
    p.add_argument("--target", default="cpu", help="target name from targets/ or a target file (default: cpu)")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--force", action="store_true", help="redo every stage even if cached")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", metavar="FILE", help="also write the manifest here ('-' for stdout)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    """Run the pipeline; print or write the manifest with --json. Returns the exit code."""
    from pipeline.fileio import write_json
    from pipeline.run_loop import run_pipeline

    manifest = run_pipeline(args.config, target=args.target, out_dir=args.out, force=args.force, quiet=args.quiet)
    if args.json == "-":
        json.dump(manifest, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.json:
        write_json(args.json, manifest)
    return 0
