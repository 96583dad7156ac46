"""Atomic writes: a failure mid-write leaves the previous file untouched and no temp files."""

from __future__ import annotations

import pytest

from pipeline.errors import UserError
from pipeline.fileio import atomic_path, read_json, write_json


def test_failed_write_keeps_previous_content(tmp_path):
    dest = tmp_path / "a.json"
    write_json(dest, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert read_json(dest) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_read_json_names_missing_and_corrupt_paths(tmp_path):
    with pytest.raises(UserError, match="not found: .*nope.json"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
