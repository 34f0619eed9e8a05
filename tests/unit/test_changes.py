"""Which leftovers of an agent become the task's change (backends.sandboxes.changes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends.sandboxes.changes import escaping_symlink, junk_reason, named_by, split_untracked


@pytest.mark.parametrize(
    ("path", "junk"),
    [
        ("src/__pycache__/m.cpython-311.pyc", True),
        ("node_modules/left-pad/index.js", True),
        ("pkg.egg-info/PKG-INFO", True),
        ("debug.log", True),
        (".main.py.swp", True),
        ("core.1234", True),
        ("vendor/lib/", True),
        ("src/core/engine.py", False),
        ("docs/logging.md", False),
        ("src/new_module.py", False),
    ],
)
def test_junk_reason(path: str, junk: bool) -> None:
    assert (junk_reason(path, 10) is not None) is junk


def test_huge_files_are_junk_by_size() -> None:
    assert junk_reason("data/model.bin", 11 * 1024 * 1024) == "11 MB"
    assert junk_reason("data/model.bin", 1024) is None


def test_named_by_paths_folders_and_globs() -> None:
    named = ["src/app.py", "build/", "docs/*.md"]
    assert named_by("src/app.py", named)
    assert named_by("build/out/x.js", named)
    assert named_by("docs/a.md", named)
    assert not named_by("src/app.pyc", named) and not named_by("buildx/y", named)


def test_split_untracked_keeps_named_junk(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("x")
    keep, junk = split_untracked(tmp_path, ["app.log", "other.log", "new.py"], ["app.log"])
    assert keep == ["app.log", "new.py"]
    assert junk == ["other.log (a cache, log or editor file)"]


def test_escaping_symlinks(tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    (wt / "sub").mkdir(parents=True)
    (wt / "a.txt").write_text("a")
    links = {
        "inside": "a.txt",
        "sub/up_inside": "../a.txt",
        "up": "../..",
        "abs": "/etc/passwd",
        "sub/dangling_out": "../../nowhere",
    }
    for name, target in links.items():
        os.symlink(target, wt / name)
    (wt / "hop").symlink_to(wt / "up")  # inside, but leads to a link that leads out
    escaping = {name for name in [*links, "hop"] if escaping_symlink(wt, name) is not None}
    assert escaping == {"up", "abs", "sub/dangling_out", "hop"}
    assert escaping_symlink(wt, "a.txt") is None
