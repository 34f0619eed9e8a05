"""Which leftovers of an agent become the task's change (backends.workspace.changes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from autonomous_pipeline.backends.workspace.changes import (
    bad_symlink,
    is_dot_git,
    junk_pathspecs,
    junk_reason,
    named_by,
    unwanted,
)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("src/__pycache__/", "a cache or build folder"),
        ("node_modules/", "a cache or build folder"),
        ("pkg.egg-info/", "a cache or build folder"),
        ("debug.log", "a cache, log or editor file"),
        (".main.py.swp", "a cache, log or editor file"),
        ("core.1234", "a cache, log or editor file"),
        ("core.py", "junk"),
    ],
)
def test_junk_reason(path: str, reason: str) -> None:
    assert junk_reason(path) == reason


def test_junk_pathspecs_leave_out_junk_but_not_lookalikes(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for name in (
        "src/core.py",
        "src/core.99",
        "src/__pycache__/m.pyc",
        "a/node_modules/x.js",
        "docs/logging.md",
        "x.egg-info/PKG-INFO",
        "keep.txt",
        "app.log",
    ):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x")
    subprocess.run(["git", "add", "--all", "--", ".", *junk_pathspecs()], cwd=repo, check=True)
    staged = subprocess.run(
        ["git", "diff", "--cached", "--name-only"], cwd=repo, capture_output=True, text=True
    ).stdout.split()
    assert sorted(staged) == ["docs/logging.md", "keep.txt", "src/core.py"]


def test_named_by_paths_folders_and_globs() -> None:
    named = ["src/app.py", "build/", "docs/*.md"]
    assert named_by("src/app.py", named)
    assert named_by("build/out/x.js", named)
    assert named_by("docs/a.md", named)
    assert not named_by("src/app.pyc", named) and not named_by("buildx/y", named)


def test_unwanted_nested_repos_and_huge_files(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"\0" * (11 * 1024 * 1024))
    (tmp_path / "small.txt").write_text("x")
    assert unwanted("vendor/lib", "160000", tmp_path, [])
    assert unwanted("big.bin", "100644", tmp_path, [])
    assert not unwanted("big.bin", "100644", tmp_path, ["big.bin"])
    assert not unwanted("small.txt", "100644", tmp_path, [])


def test_symlinks_out_of_the_repository_or_into_git_are_refused(tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    (wt / "sub").mkdir(parents=True)
    (wt / "a.txt").write_text("a")
    (wt / ".git").write_text("gitdir: /elsewhere\n")
    links = {
        "inside": "a.txt",
        "sub/up_inside": "../a.txt",
        "dangling_inside": "not-yet.txt",
        "up": "../..",
        "abs": "/etc/passwd",
        "abs_inside": str(wt / "a.txt"),  # right here, but not in the user's checkout
        "sub/dangling_out": "../../nowhere",
        "x": ".git/config",
        "y": ".git",
        "sub/z": "../.GIT/hooks",
        "ntfs": ".git./config",
        "hfs": ".g\u200cit",
    }
    for name, target in links.items():
        os.symlink(target, wt / name)
    (wt / "hop").symlink_to("up")  # inside, but leads to a link that leads out
    (wt / "hop_git").symlink_to("y")  # inside, but leads to a link into .git
    refused = {n for n in [*links, "hop", "hop_git"] if bad_symlink(wt, n) is not None}
    assert refused == set(links) - {"inside", "sub/up_inside", "dangling_inside"} | {
        "hop",
        "hop_git",
    }
    assert bad_symlink(wt, "a.txt") is None
    assert "into .git" in (bad_symlink(wt, "x") or "")


def test_dot_git_names_of_every_filesystem() -> None:
    for name in (".git", ".GIT", ".Git.", ".git ", "git~1", ".g\u200dit"):
        assert is_dot_git(name), name
    for name in ("git", ".gitignore", ".github", "x.git"):
        assert not is_dot_git(name), name
