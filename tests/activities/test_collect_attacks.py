"""Agents that try to get something past the collection of their change, and fail.

The pipeline commits what an agent leaves, on the host, outside the sandbox: whatever git runs
there, or reads, is a way out. Each test is one attack, through the real run_agent activity.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.activities.conftest import Workspace
from tests.activities.test_sandbox_attacks import run
from tests.gitutil import sh
from tests.sandboxes import needs_bwrap

pytestmark = needs_bwrap


def committed(wt: Path) -> list[str]:
    return sh(wt, "show", "--name-only", "--format=", "HEAD").split("\n")


async def test_a_nested_repository_runs_nothing_on_the_host(ws: Workspace, tmp_path: Path) -> None:
    # git runs a repository's core.fsmonitor (and hooks) when it looks inside it: a nested
    # repository the agent made is never looked into, and never committed.
    marker = tmp_path / "ran-on-the-host"
    script = f"""
        git init -q sub && git -C sub config core.fsmonitor 'touch {marker}; false'
        echo x > sub/file.txt
        git -C sub config core.hooksPath . && printf '#!/bin/sh\\ntouch {marker}\\n' > sub/pre-commit
        echo work > work.txt
        """
    base, wt = await ws.prepare()
    out = await run(ws, script, base)
    assert out.succeeded, out.error
    assert not marker.exists()
    assert committed(wt) == ["work.txt"]
    assert "sub/" in " ".join(out.left_out)


async def test_a_fifo_or_socket_cannot_hang_the_collection(ws: Workspace) -> None:
    # A FIFO named .gitignore blocks every git command that reads it; neither it nor a socket
    # is work.
    script = """
        mkfifo .gitignore && mkfifo pipe
        python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'
        echo work > work.txt
        """
    base, wt = await ws.prepare()
    out = await run(ws, script, base, timeout_s=30)
    assert out.succeeded, out.error
    assert committed(wt) == ["work.txt"]
    assert {".gitignore (not a file: removed)", "pipe (not a file: removed)"} <= set(out.left_out)
    assert not (wt / ".gitignore").exists() and not (wt / "sock").exists()


@pytest.mark.parametrize(
    "where", ["name", "link", "chunk boundary", "newline name", "working-tree-encoding"]
)
async def test_a_secret_is_found_wherever_it_hides(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    secret = "dpl-" + os.urandom(10).hex()
    monkeypatch.setenv("DEPLOY_TOKEN", secret)
    # Files are read in 4 MiB chunks: the secret straddles two of them.
    boundary = 4 * 1024 * 1024 - len(secret) // 2
    script = {
        "name": 'echo x > "leak-$DEPLOY_TOKEN.txt"',
        "link": 'ln -s "/nowhere/$DEPLOY_TOKEN" inside-link',
        "chunk boundary": f'{{ head -c {boundary} /dev/zero; printf %s "$DEPLOY_TOKEN"; }} > big.bin',
        "newline name": 'printf %s "$DEPLOY_TOKEN" > "$(printf "a\\nb.txt")"',
        # git add would store the UTF-16 file as UTF-8: the bytes on disk never hold the value.
        "working-tree-encoding": "echo 'c.txt working-tree-encoding=UTF-16LE' > .gitattributes; "
        'printf %s "$DEPLOY_TOKEN" | iconv -f UTF-8 -t UTF-16LE > c.txt',
    }[where]
    base, wt = await ws.prepare()
    out = await run(ws, f"{script}; echo work > work.txt", base, env=["DEPLOY_TOKEN"])
    assert not out.succeeded and out.commit is None, committed(wt)
    assert "the value of one of the worker's secrets" in (out.error or ""), out.error
    assert secret not in (out.error or "")
    assert sh(wt, "rev-parse", "HEAD") == base


async def test_a_secret_in_the_name_of_what_is_left_out_is_masked(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Left out, never committed: but the list of what was left out goes into the transcript.
    secret = "dpl-" + os.urandom(10).hex()
    monkeypatch.setenv("DEPLOY_TOKEN", secret)
    script = 'git init -q "repo-$DEPLOY_TOKEN"; mkfifo "fifo-$DEPLOY_TOKEN"; echo w > w.txt'
    base, wt = await ws.prepare()
    out = await run(ws, script, base, env=["DEPLOY_TOKEN"])
    assert out.succeeded, out.error
    assert committed(wt) == ["w.txt"]
    assert secret not in " ".join(out.left_out) and len(out.left_out) == 2, out.left_out
    assert secret not in Path(out.transcript or "").read_text()


async def test_a_huge_file_is_left_out_unless_the_task_names_it(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    out = await run(ws, "head -c 11000000 /dev/zero > dump.bin; echo work > work.txt", base)
    assert out.succeeded, out.error
    assert committed(wt) == ["work.txt"]
    assert any(line.startswith("dump.bin") for line in out.left_out), out.left_out
    # Left out before `git add`: never hashed into the clone, where it would stay for good.
    blob = sh(wt, "hash-object", "dump.bin")
    stored = subprocess.run(["git", "-C", str(wt), "cat-file", "-e", blob], capture_output=True)
    assert stored.returncode != 0, "the left-out file was written into the clone's objects"


async def test_a_loop_of_links_is_refused_not_a_crash(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    out = await run(ws, "ln -s b a; ln -s a b; echo work > work.txt", base)
    assert not out.succeeded and out.commit is None
    assert "a loop" in (out.error or ""), out.error
    assert sh(wt, "rev-parse", "HEAD") == base
