"""What every command that writes a manifest shares: the output options and how the manifest is emitted."""

from __future__ import annotations

import json
import sys
from typing import Any

TARGET_HELP = "target name from targets/ or a target file (default: cpu)"


def add_output_options(p: Any, out_help: str = "output folder", out_default: str | None = None) -> None:
    """Add --out, --quiet and --json to a subcommand's parser.

    Args:
        p: the subcommand's argparse parser.
        out_help: what --out is for this command.
        out_default: a default folder (None: --out is required).
    """
    if out_default is None:
        p.add_argument("--out", required=True, help=out_help)
    else:
        p.add_argument("--out", default=out_default, help=out_help)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", metavar="FILE", help="also write the manifest here ('-' for stdout)")


def emit_manifest(manifest: dict, dest: str | None) -> None:
    """Write the manifest where --json asked: '-' is stdout (nothing else is printed there), else a file.

    Args:
        manifest: the command's manifest.
        dest: the --json value (None: nothing to do).
    """
    if dest == "-":
        json.dump(manifest, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif dest:
        from pipeline.fileio import write_json

        write_json(dest, manifest)
