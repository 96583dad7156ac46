"""Importing a user's module named in a config (`factory: "models:make_net"`, `eval: "metrics:map50"`).

A module file beside the config is loaded from that file, under a name unique to its path, even when another
module of the same name was imported earlier in the process (two projects' `models.py` in one test session);
otherwise the module is imported normally (an installed package such as `mypkg.nets`). The config's folder is
put on `sys.path` so the user's module can import its siblings.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import UserError


def import_user_module(mod_name: str, base: Path | None, spec: str, field: str) -> Any:
    """Import `mod_name`, preferring `base/<mod_name>.py` (or a package folder there).

    Args:
        mod_name: the dotted module name (the part of `spec` before ":").
        base: the config's folder (None: a normal import only).
        spec: the whole "module:function" string, for messages.
        field: the config field or option that named it (e.g. "teacher.factory", "eval"), for messages.
    Returns:
        The module.
    Raises:
        UserError: the file fails to import, or no such module exists (the message names the file or module).
    """
    if base is not None:
        base = Path(base)
        if str(base) not in sys.path:
            sys.path.insert(0, str(base))
        rel = Path(*mod_name.split("."))
        for cand in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
            if cand.is_file():
                unique = f"_edgepipe_user_{abs(hash(str(cand.resolve())))}_{mod_name.replace('.', '_')}"
                loader_spec = importlib.util.spec_from_file_location(unique, cand)
                mod = importlib.util.module_from_spec(loader_spec)
                sys.modules[unique] = mod
                try:
                    loader_spec.loader.exec_module(mod)
                except Exception as e:
                    del sys.modules[unique]
                    raise UserError(f"{field} = {spec!r}: importing {cand} failed: {type(e).__name__}: {e}") from None
                return mod
    try:
        return importlib.import_module(mod_name)
    except Exception as e:
        raise UserError(f"{field} = {spec!r}: cannot import module {mod_name!r} ({type(e).__name__}: {e})") from None
