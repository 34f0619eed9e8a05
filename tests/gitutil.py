"""Throwaway repositories for git tests, and a byte-for-byte snapshot of a user's checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "user@example.invalid",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "user@example.invalid",
}


def isolate_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No global or system git config of whoever runs the tests leaks in (hooks, signing...)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig-global"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "PIPELINE_GIT_NAME"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "gitconfig-global").write_text("[init]\n\tdefaultBranch = main\n")


def sh(cwd: Path, *args: str, check: bool = True) -> str:
    """Run git synchronously (tests only) and return its stripped stdout."""
    res = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **IDENTITY},
        capture_output=True,
        text=True,
        check=False,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {res.stderr}")
    return res.stdout.strip()


def commit_file(repo: Path, path: str, text: str, message: str | None = None) -> str:
    """Write `path` (relative to `repo`), commit it, return the new HEAD."""
    f = repo / path
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    sh(repo, "add", path)
    sh(repo, "commit", "-q", "-m", message or f"edit {path}")
    return sh(repo, "rev-parse", "HEAD")


def make_user_repo(root: Path, name: str = "user") -> Path:
    """A non-bare repository with `main` checked out and three commits."""
    repo = root / name
    repo.mkdir(parents=True)
    sh(repo, "init", "-q", "-b", "main")
    commit_file(repo, "README.md", "# demo\n", "readme")
    commit_file(repo, "a.txt", "one\ntwo\nthree\n", "a")
    commit_file(repo, "src/lib.py", "def f():\n    return 1\n", "lib")
    return repo


def make_dirty(repo: Path) -> None:
    """A stash, an uncommitted edit, a staged edit and an untracked file: a user mid-work."""
    (repo / "a.txt").write_text("stashed edit\n")
    sh(repo, "stash", "push", "-q", "-m", "user stash")
    (repo / "a.txt").write_text("one\ntwo\nthree\nuncommitted\n")
    (repo / "README.md").write_text("# demo, staged\n")
    sh(repo, "add", "README.md")
    (repo / "notes.txt").write_text("untracked notes\n")


def push_outside(
    repo: Path, branch: str, path: str, text: str, tmp: Path, message: str | None = None
) -> str:
    """Move `branch` of `repo` by a commit made in a separate clone, as another person would."""
    other = tmp / f"outside-{len(list(tmp.glob('outside-*')))}"
    sh(tmp, "clone", "-q", "--branch", branch, str(repo), str(other))
    new = commit_file(other, path, text, message or f"outside change to {path}")
    sh(other, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
    return new


def snapshot(repo: Path) -> dict[str, object]:
    """Everything of the user's checkout that the pipeline must never change, read-only.

    (No `git status`: it would refresh the index itself.)
    """
    files = {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    gitdir = repo / ".git"
    return {
        "files": files,
        "index": (gitdir / "index").read_bytes(),
        "HEAD": (gitdir / "HEAD").read_text(),
        "head_commit": sh(repo, "rev-parse", "HEAD"),
        "stash": sh(repo, "stash", "list", "--format=%H %gs"),
        "main": sh(repo, "rev-parse", "refs/heads/main"),
    }


def log_subjects(repo: Path, ref: str) -> list[str]:
    return sh(repo, "log", "--format=%s", ref).splitlines()


def fsck(repo: Path) -> None:
    res = subprocess.run(
        ["git", "fsck", "--strict", "--no-progress"], cwd=repo, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "error" not in res.stderr.lower(), res.stderr
