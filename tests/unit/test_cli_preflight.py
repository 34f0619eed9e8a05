"""Refusals through the real entry point (`starter.py` as a process): exit 2, a clear message, nothing
written. The full corpus of bad inputs runs in-process in test_bad_input_corpus.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.gitutil import make_dirty, make_user_repo, snapshot
from tests.unit.test_cli_dry_run import starter

PLAN = "## Batch 1: b\n### Task 1.1: t\nCreate `a.txt`:\n```\nhello\n```\n"


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    p = tmp_path / "plan.md"
    p.write_text(PLAN)
    return p


def run(plan: Path, *args: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    return starter("--plan", str(plan), "--workspace", str(workspace), *args)


def assert_usage_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def test_target_checked_out_in_the_users_checkout(plan: Path, tmp_path: Path) -> None:
    repo = make_user_repo(tmp_path)
    make_dirty(repo)
    before = snapshot(repo)
    r = run(
        plan,
        "--repo",
        str(repo),
        "--target-branch",
        "main",
        "--agent",
        "literal",
        workspace=tmp_path / "ws",
    )
    assert_usage_error(r, "checked out", "--target-branch")
    assert snapshot(repo) == before


def test_unreachable_address(plan: Path, tmp_path: Path) -> None:
    repo = make_user_repo(tmp_path)
    r = run(
        plan,
        "--repo",
        str(repo),
        "--agent",
        "literal",
        "--address",
        "127.0.0.1:1",
        workspace=tmp_path / "ws",
    )
    assert_usage_error(r, "cannot reach Temporal at 127.0.0.1:1")


def test_subcommand_needs_a_workflow_id() -> None:
    r = subprocess.run(
        [str(ROOT / ".venv/bin/python"), str(ROOT / "starter.py"), "status"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "required: RUN" in r.stderr


def test_claude_without_credentials_fails_before_anything_starts(
    plan: Path, tmp_path: Path
) -> None:
    repo = make_user_repo(tmp_path)
    stub = ROOT / "tests" / "fixtures" / "claude" / "stub_claude.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env["HOME"] = str(tmp_path / "empty-home")
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "starter.py"),
            "--plan",
            str(plan),
            "--repo",
            str(repo),
            "--agent",
            "claude",
            "--claude-bin",
            str(stub),
            "--workspace",
            str(tmp_path / "ws"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert_usage_error(r, "--agent claude")
    assert "credential" in r.stderr.lower() or "log" in r.stderr.lower()
    assert not (tmp_path / "ws").exists()  # nothing started, no server, no clone


def test_help_lists_every_subcommand_and_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    from autonomous_pipeline.cli.main import SUBCOMMANDS

    python = str(ROOT / ".venv/bin/python")
    helped = subprocess.run(
        [python, str(ROOT / "starter.py"), "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0
    for name, what in SUBCOMMANDS.items():
        assert f"  {name} " in helped.stdout and what in helped.stdout, name
    shown = subprocess.run(
        [python, str(ROOT / "starter.py"), "--version"], capture_output=True, text=True
    )
    assert shown.stdout.strip() == f"starter.py {version('autonomous-pipeline')}"


async def test_repositories_as_git_finds_them(tmp_path: Path) -> None:
    from autonomous_pipeline.cli.preflight import check_repo
    from autonomous_pipeline.errors import UsageError
    from tests.gitutil import sh

    repo = make_user_repo(tmp_path)
    main = sh(repo, "rev-parse", "main")
    # A tag named like the branch: the base is still the branch, by its own name.
    sh(repo, "tag", "main", "main~1")
    facts = await check_repo(repo, None, "pipeline/x")
    assert (facts.base_ref, facts.base_commit, facts.repo) == ("main", main, str(repo.resolve()))
    # Its .git folder names the same repository.
    assert (await check_repo(repo / ".git", None, "pipeline/x")).repo == str(repo.resolve())
    # A detached checkout with no branch at all (a CI checkout) has commits: --base says which.
    ci = tmp_path / "ci"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(ci)], check=True)
    sh(ci, "checkout", "-q", "--detach", main)
    sh(ci, "branch", "-D", "main")
    assert (await check_repo(ci, "HEAD", "pipeline/x")).base_commit == main
    with pytest.raises(UsageError, match="HEAD is detached"):
        await check_repo(ci, None, "pipeline/x")
    # A folder inside the repository is refused with the top to pass.
    (repo / "sub").mkdir()
    with pytest.raises(UsageError, match=f"pass --repo {repo}"):
        await check_repo(repo / "sub", None, "pipeline/x")
