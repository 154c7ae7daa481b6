"""Atomic replacement: whole files, ordinary permissions, no temp files left."""

from __future__ import annotations

import json
import os
import stat

from training_data.atomic import sweep_temp_files, write_bytes_atomic, write_json_atomic


def test_replaces_whole_file_with_ordinary_permissions(tmp_path):
    target = tmp_path / "progress.json"
    target.write_text("old")
    mask = os.umask(0o022)
    os.umask(mask)
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


def test_sweep_removes_only_temp_files(tmp_path):
    (tmp_path / ".tmp-progress.json.abc").write_text("partial")
    write_bytes_atomic(tmp_path / "keep.bin", b"x")
    swept = sweep_temp_files(tmp_path)
    assert [p.name for p in swept] == [".tmp-progress.json.abc"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]
