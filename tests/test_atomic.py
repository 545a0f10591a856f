"""Atomic writes: all or nothing, no temporary file left, the mode an ordinary write gives."""

from __future__ import annotations

import json
import os

import pytest

from tessera_explore._atomic import atomic_target, write_json


def test_write_is_all_or_nothing_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "sub" / "a.json"
    write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with atomic_target(p) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("died mid-write")
    assert json.loads(p.read_text()) == {"a": 1}  # the old file, whole
    assert os.listdir(p.parent) == ["a.json"]


def test_new_files_follow_the_umask_and_old_files_keep_their_mode(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "new.json"
        write_json(p, [])
        assert (os.stat(p).st_mode & 0o777) == 0o644  # not mkstemp's 0600
        os.chmod(p, 0o600)
        write_json(p, [1])
        assert (os.stat(p).st_mode & 0o777) == 0o600
    finally:
        os.umask(old)
