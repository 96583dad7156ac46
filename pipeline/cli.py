"""The `edgepipe` command line (also `python -m pipeline`).

Exit codes: 0 success; 1 a measured budget was exceeded (latency regression, accuracy budget);
2 a user error (bad config, missing file, wrong input); 130 interrupted.
Each subcommand lives with its feature and registers itself through `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import BudgetExceeded, UserError
from pipeline.version import __version__

# (module, description): each module has register(subparsers) that adds its subcommand(s)
# and sets `func(args) -> int` on the parser.
SUBCOMMAND_MODULES = (
    "pipeline.commands.run",
    "pipeline.commands.export",
    "pipeline.commands.quantize",
    "pipeline.commands.build",
    "pipeline.bench.cli",
    "pipeline.deploy.cli",
    "pipeline.commands.targets",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="edgepipe",
        description="Distill, prune, quantize, export, build and benchmark a PyTorch model for an edge target.",
    )
    parser.add_argument("--version", action="version", version=f"edgepipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in SUBCOMMAND_MODULES:
        mod = importlib.import_module(mod_name)
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point. Returns the process exit code (also used by `python -m pipeline`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from pipeline.ranks import record_exit_code

    rc = _dispatch(args)
    record_exit_code(rc)  # under `edgepipe run --nproc N`: the launcher returns rank 0's code
    return rc


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"edgepipe: error: {e}", file=sys.stderr)
        return e.exit_code
    except BudgetExceeded as e:
        print(f"edgepipe: budget exceeded: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgepipe: interrupted; finished stages are kept and reused on the next run", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
