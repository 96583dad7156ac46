"""`edgepipe targets`: list the targets, or show one validated target as JSON."""

from __future__ import annotations

import json


def register(sub) -> None:
    """Add the `targets` subcommand."""
    p = sub.add_parser("targets", help="list targets or show one",
                       description="List targets, or validate and show one.")
    p.add_argument("name", nargs="?", help="target name or file to validate and print")
    p.set_defaults(func=_targets)


def _targets(args) -> int:
    from pipeline.targets import available_targets, load_target

    if args.name:
        print(json.dumps(load_target(args.name).model_dump(), indent=2))
        return 0
    for name in available_targets():
        t = load_target(name)
        print(f"{name:20s} {t.runtime:12s} {t.description}")
    return 0
