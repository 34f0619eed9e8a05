"""Bad invocations of a run fail before anything starts: exit 2, a clear message, nothing written."""

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


def test_repo_that_does_not_exist(plan: Path, tmp_path: Path) -> None:
    r = run(plan, "--repo", str(tmp_path / "nope"), "--agent", "literal", workspace=tmp_path / "ws")
    assert_usage_error(r, "no such directory")
    assert not (tmp_path / "ws").exists()


def test_directory_that_is_not_a_repo(plan: Path, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    r = run(
        plan, "--repo", str(tmp_path / "plain"), "--agent", "literal", workspace=tmp_path / "ws"
    )
    assert_usage_error(r, "not a git repository")


def test_empty_repo(plan: Path, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "empty")], check=True)
    r = run(
        plan, "--repo", str(tmp_path / "empty"), "--agent", "literal", workspace=tmp_path / "ws"
    )
    assert_usage_error(r, "no commits yet")


def test_unknown_base(plan: Path, tmp_path: Path) -> None:
    repo = make_user_repo(tmp_path)
    r = run(
        plan,
        "--repo",
        str(repo),
        "--base",
        "no-such-branch",
        "--agent",
        "literal",
        workspace=tmp_path / "ws",
    )
    assert_usage_error(r, "--base no-such-branch")


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


def test_unknown_agent_backend(plan: Path, tmp_path: Path) -> None:
    repo = make_user_repo(tmp_path)
    r = run(plan, "--repo", str(repo), "--agent", "gpt-magic", workspace=tmp_path / "ws")
    assert_usage_error(r, "gpt-magic", "literal", "command")


def test_missing_agent_binary(plan: Path, tmp_path: Path) -> None:
    repo = make_user_repo(tmp_path)
    r = run(
        plan,
        "--repo",
        str(repo),
        "--agent",
        "command",
        "--agent-command",
        "no-such-agent-xyz {prompt_file}",
        workspace=tmp_path / "ws",
    )
    assert_usage_error(r, "no-such-agent-xyz", "not found")


def test_command_agent_needs_a_command(plan: Path, tmp_path: Path) -> None:
    repo = make_user_repo(tmp_path)
    r = run(plan, "--repo", str(repo), "--agent", "command", workspace=tmp_path / "ws")
    assert_usage_error(r, "--agent-command")


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


def test_bad_numbers(plan: Path, tmp_path: Path) -> None:
    r = run(plan, "--max-concurrent", "0", workspace=tmp_path / "ws")
    assert_usage_error(r, "max_concurrent")


def test_subcommand_needs_a_workflow_id() -> None:
    r = subprocess.run(
        [str(ROOT / ".venv/bin/python"), str(ROOT / "starter.py"), "status"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "workflow_id" in r.stderr


def test_claude_binary_missing(plan: Path, tmp_path: Path) -> None:
    repo = make_user_repo(tmp_path)
    r = run(
        plan,
        "--repo",
        str(repo),
        "--agent",
        "claude",
        "--claude-bin",
        str(tmp_path / "no-claude"),
        workspace=tmp_path / "ws",
    )
    assert_usage_error(r, "--agent claude", "not found")


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
