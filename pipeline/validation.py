"""Turn pydantic validation errors and YAML/TOML parse errors into one clear UserError.

A config error names the field, the value given and what is allowed, e.g.
`config.yaml: prune.ratio = 1.5: Input should be less than 1 (allowed: 0 <= ratio < 1)`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

# Prefix of the tags that pick a union member (pydantic Tag): dropped from error locations.
UNION_TAG = "tag:"


def load_mapping(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Read a YAML or TOML file into a dict, with a UserError naming the path on any problem.

    Args:
        path: a `.yaml`, `.yml` or `.toml` file.
        what: what the file is, for messages ("pipeline config", "target file").
    Returns:
        The top-level mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError, tomllib.TOMLDecodeError
        raise UserError(f"{what} {p} could not be parsed: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{what} {p} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def format_validation_error(err: Any, source: str) -> str:
    """Render a pydantic ValidationError as one message per problem, each naming field and value.

    Args:
        err: a `pydantic.ValidationError`.
        source: the file (or object) being validated, prefixed to each line.
    Returns:
        A multi-line message (one line per problem).
    """
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if not _is_union_tag(x))
        typ = e.get("type", "")
        value = e.get("input")
        if typ == "extra_forbidden":
            parent_allowed = e.get("ctx", {}).get("allowed")
            msg = f"unknown key '{loc}'"
            if parent_allowed:
                msg += f" (allowed: {parent_allowed})"
            lines.append(f"{source}: {msg}")
            continue
        if typ == "missing":
            lines.append(f"{source}: missing required key '{loc}'")
            continue
        shown = _short(value)
        lines.append(f"{source}: {loc} = {shown}: {e.get('msg')}")
    return "\n".join(dict.fromkeys(lines))  # de-duplicate, keep order


def _is_union_tag(x: Any) -> bool:
    # pydantic puts union member names ("function-after[...]", "tagged-union[...]") and our tags into locations.
    return isinstance(x, str) and ("[" in x or x.startswith(("function-", UNION_TAG)))


def _short(value: Any, limit: int = 80) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def validate_model(model_cls: Any, data: dict[str, Any], source: str) -> Any:
    """Validate `data` into `model_cls`, listing allowed keys for unknown ones.

    Args:
        model_cls: a pydantic model class (configured with extra="forbid").
        data: the raw mapping.
        source: name used in messages.
    Returns:
        The validated model instance.
    Raises:
        UserError: with every problem named.
    """
    import pydantic

    try:
        return model_cls.model_validate(data)
    except pydantic.ValidationError as err:
        raise UserError(_with_allowed_keys(err, model_cls, source)) from None


def _with_allowed_keys(err: Any, model_cls: Any, source: str) -> str:
    lines = []
    for e in err.errors():
        if e.get("type") == "extra_forbidden":
            loc = [x for x in e.get("loc", ()) if not _is_union_tag(x)]
            allowed = _allowed_keys_at(model_cls, loc[:-1])
            key = ".".join(str(x) for x in loc)
            hint = f" (allowed here: {', '.join(sorted(allowed))})" if allowed else ""
            lines.append(f"{source}: unknown key '{key}'{hint}")
    rest = format_validation_error(_Filtered(err), source)
    return "\n".join(dict.fromkeys(lines + ([rest] if rest else [])))


class _Filtered:
    def __init__(self, err: Any):
        self._errs = [e for e in err.errors() if e.get("type") != "extra_forbidden"]

    def errors(self) -> list[dict]:
        return self._errs


def _allowed_keys_at(model_cls: Any, loc: list[Any]) -> list[str]:
    import typing

    cls = model_cls
    for part in loc:
        fields = getattr(cls, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        cls = _first_model(ann, typing)
        if cls is None:
            return []
    fields = getattr(cls, "model_fields", {})
    return [f.alias or name for name, f in fields.items()]


def _first_model(ann: Any, typing: Any) -> Any:
    if hasattr(ann, "model_fields"):
        return ann
    for a in typing.get_args(ann):
        m = _first_model(a, typing)
        if m is not None:
            return m
    return None
