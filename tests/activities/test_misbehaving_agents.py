"""Agents that misbehave, run through the real run_agent activity on real repositories.

Each test gives the `command` backend a shell script that does one bad thing, and checks that the
task's outcome says so and that nothing outside the task's worktree changed: the user's
repository, the pipeline's clone and other tasks' worktrees. They run in the worktree sandbox
(namespaces and Landlock) unless they say otherwise; `tests/activities/test_sandbox_attacks.py`
has the attacks on the sandbox itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from autonomous_pipeline.activities.agent import ERROR_CHARS, AgentActivities
from autonomous_pipeline.backends import confine
from autonomous_pipeline.backends.registry import make_agent
from autonomous_pipeline.models.activity_io import RunAgentIn, RunAgentOut
from autonomous_pipeline.models.plan import FileRef
from autonomous_pipeline.models.run import AgentConfig
from autonomous_pipeline.models.sandbox import SandboxConfig
from tests.activities.conftest import RUN, Workspace, activity_env, task
from tests.gitutil import sh, snapshot
from tests.sandboxes import ISOLATED, PLAIN, needs_bwrap

needs_landlock = pytest.mark.skipif(
    not confine.available(), reason="Landlock is not available on this kernel"
)
# Landlock alone, as with --no-isolation.
LANDLOCK = SandboxConfig(isolation=False, confine=True)
pytestmark = needs_bwrap


def agent(script: str, timeout_s: float = 30) -> AgentConfig:
    return AgentConfig(backend="command", command=["sh", "-c", script], timeout_s=timeout_s)


async def run(
    ws: Workspace, script: str, base: str, sandbox: SandboxConfig = ISOLATED, **kw: object
) -> RunAgentOut:
    fields = {k: kw.pop(k) for k in ("timeout_s",) if k in kw}
    inp = RunAgentIn(
        run_key=RUN,
        task=task(**kw),  # type: ignore[arg-type]
        base_commit=base,
        agent=agent(script, **fields),  # type: ignore[arg-type]
        sandbox=sandbox,
    )
    return await activity_env().run(AgentActivities(ws.sandboxes, make_agent).run_agent, inp)


def processes_with(marker: str) -> list[int]:
    """Host pids of running processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] != "Z" and marker in (entry / "cmdline").read_text():
                    found.append(int(entry.name))
    return found


def wait_gone(marker: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def tree_digest(root: Path, skip: Path | None = None) -> str:
    """Every file's path and bytes under `root` (but `skip`): what must not change."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if skip is not None and p.is_relative_to(skip):
            continue
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def clone_of(ws: Workspace) -> Path:
    (clone,) = (ws.tmp / "ws" / "repos").glob("*.git")
    return clone


def fsck(repo: Path) -> None:
    assert sh(repo, "fsck", "--strict", "--no-progress", "--no-dangling") == ""


def outside_state(ws: Workspace) -> tuple[object, str, str, str]:
    """The user's checkout, the clone's config and refs (but the task's own branch, which the
    pipeline moves), the other task's worktree."""
    clone = clone_of(ws)
    refs = sh(clone, "for-each-ref", "--format=%(refname) %(objectname)")
    return (
        snapshot(ws.repo),
        (clone / "config").read_text() + (clone / "HEAD").read_text(),
        "\n".join(r for r in refs.splitlines() if "/task-1.1 " not in r),
        tree_digest(ws.wt("1.2")),
    )


def objects(clone: Path) -> set[str]:
    return {str(p.relative_to(clone)) for p in (clone / "objects").rglob("*") if p.is_file()}


@pytest.mark.parametrize("sandbox", [ISOLATED, LANDLOCK], ids=["namespaces", "landlock-only"])
async def test_a_hang_is_killed_with_its_grandchildren(
    ws: Workspace, sandbox: SandboxConfig
) -> None:
    base, _ = await ws.prepare()
    marker = f"300.{os.getpid()}{time.monotonic_ns() % 10**6}"
    script = f"sleep {marker} & trap '' TERM; sleep {marker}"
    started = time.monotonic()
    out = await run(ws, script, base, sandbox, timeout_s=2)
    assert time.monotonic() - started < 20
    assert not out.succeeded and out.timed_out and out.commit is None
    assert "timed out after 2 s" in (out.error or "")
    assert wait_gone(marker) == []


async def test_a_crash_fails_the_task_with_the_signal(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    out = await run(ws, "echo half done > half.txt; kill -SEGV $$", base)
    assert not out.succeeded and out.commit is None
    assert out.error is not None and "killed by signal 11" in out.error, out.error
    assert sh(wt, "rev-parse", "HEAD") == base  # nothing committed for it


async def test_an_output_flood_is_capped_on_disk_and_in_the_result(ws: Workspace) -> None:
    base, _ = await ws.prepare()
    # 20 MB on one line without a newline, then 20 MB of lines, then failure.
    script = "head -c 20000000 /dev/zero | tr '\\0' x; yes flood | head -c 20000000; exit 3"
    out = await run(ws, script, base)
    assert not out.succeeded and out.exit_code == 3
    transcript = Path(out.transcript or "")
    assert 4_000_000 < transcript.stat().st_size < 5_200_000
    assert "[transcript truncated" in transcript.read_text(errors="replace")
    # What goes into workflow history stays small.
    assert len(out.model_dump_json()) < ERROR_CHARS + 3000


@needs_landlock
async def test_writes_outside_the_worktree_fail_and_change_nothing(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    await ws.prepare("1.2")
    clone = clone_of(ws)
    before, stored = outside_state(ws), objects(clone)
    script = f"""
        echo 1 > ../escape.txt
        echo 2 > {ws.repo}/owned.txt
        echo 3 >> {ws.repo}/README.md
        echo 4 > {clone}/refs/heads/main
        rm -rf {clone}/objects
        echo 5 > {ws.wt("1.2")}/a.txt
        echo 6 > "$HOME/agent-was-here"
        git -C {ws.repo} commit -q --allow-empty -m sneaky
        echo inside > inside.txt
        """
    out = await run(ws, script, base)
    assert out.succeeded, out.error
    assert out.changed_files == ["inside.txt"]
    assert not (wt.parent / "escape.txt").exists()
    assert not (Path(os.environ["HOME"]) / "agent-was-here").exists()
    assert outside_state(ws) == before
    assert stored <= objects(clone)
    fsck(clone)
    fsck(ws.repo)


async def test_a_symlink_out_of_the_worktree_rejects_the_change(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    script = "ln -s ../../.. up; ln -s a.txt fine; echo x > inside.txt"
    out = await run(ws, script, base)
    assert not out.succeeded and out.commit is None
    assert out.error is not None and "up is a symlink to ../../.., outside" in out.error
    assert sh(wt, "rev-parse", "HEAD") == base
    assert sh(wt, "diff", "--cached", "--name-only") == ""  # nothing left staged


@pytest.mark.parametrize(
    "script",
    ["rm -rf .git; echo x > x.txt", "echo 'gitdir: /nowhere' > .git; echo x > x.txt"],
    ids=["deleted", "corrupted"],
)
async def test_a_broken_dot_git_fails_the_task_and_spares_the_clone(
    ws: Workspace, script: str
) -> None:
    base, wt = await ws.prepare()
    clone = clone_of(ws)
    out = await run(ws, script, base)
    assert not out.succeeded and out.commit is None
    assert "removed or corrupted the worktree's .git" in (out.error or "")
    fsck(clone)
    # The next attempt starts from a worktree rebuilt at the base.
    again = await run(ws, "echo y > y.txt", base)
    assert again.succeeded and again.changed_files == ["y.txt"]
    assert sh(wt, "rev-parse", "HEAD^") == base


@needs_landlock
async def test_a_confined_agent_cannot_commit_and_the_pipeline_commits_for_it(
    ws: Workspace,
) -> None:
    base, wt = await ws.prepare()
    script = "echo mine > mine.txt; git add mine.txt && git commit -qm mine; echo rc=$?"
    out = await run(ws, script, base)
    assert out.succeeded and out.changed_files == ["mine.txt"]
    assert "rc=" in out.summary and out.summary != "rc=0"
    assert sh(wt, "rev-parse", "HEAD^") == base
    assert sh(wt, "log", "-1", "--format=%s") == "Task 1.1: Say hello"
    assert sh(wt, "log", "-1", "--format=%an") == "Autonomous Pipeline"


@pytest.mark.parametrize(
    "script",
    [
        "git reset -q --hard HEAD~1; echo x > x.txt; git add x.txt; git commit -qm rewritten",
        "echo x >> a.txt; git commit -qa --amend -m amended",
    ],
    ids=["reset-below-base", "amend-base"],
)
async def test_an_unconfined_agent_rewriting_the_base_is_rejected(
    ws: Workspace, script: str
) -> None:
    base, _wt = await ws.prepare()
    out = await run(ws, script, base, PLAIN)
    assert not out.succeeded and out.commit is None
    assert "rewrote history" in (out.error or "")


async def test_an_unconfined_agents_own_commits_are_kept_under_the_pipelines_marker(
    ws: Workspace,
) -> None:
    base, wt = await ws.prepare()
    out = await run(ws, "echo x > x.txt; git add x.txt; git commit -qm mine", base, PLAIN)
    assert out.succeeded and out.changed_files == ["x.txt"]
    assert sh(wt, "log", "--format=%s", f"{base}..HEAD").splitlines() == [
        "Task 1.1: Say hello",
        "mine",
    ]


async def test_deleting_files_the_task_does_not_name_is_counted(ws: Workspace) -> None:
    base, _wt = await ws.prepare()
    named = [FileRef(action="delete", path="a.txt", line=2)]
    out = await run(ws, "rm a.txt src/lib.py README.md", base, files=named)
    assert out.succeeded
    assert sorted(out.changed_files) == ["README.md", "a.txt", "src/lib.py"]
    assert sorted(out.unasked_deletions) == ["README.md", "src/lib.py"]
    assert out.unasked_deletions_total == 2


async def test_untracked_junk_is_left_out_unless_the_task_names_it(ws: Workspace) -> None:
    base, _wt = await ws.prepare()
    named = [FileRef(action="create", path="notes.log", line=2)]
    script = """
        mkdir -p src/__pycache__ node_modules/x pkg.egg-info new
        echo c > src/__pycache__/lib.cpython-311.pyc
        echo m > node_modules/x/index.js
        echo e > pkg.egg-info/PKG-INFO
        echo l > debug.log
        echo s > .notes.txt.swp
        head -c 11000000 /dev/zero > big.bin
        git init -q vendor/lib
        echo n > notes.log
        echo w > new/work.py
        """
    out = await run(ws, script, base, files=named)
    assert out.succeeded, out.error
    assert sorted(out.changed_files) == ["new/work.py", "notes.log"]
    assert sorted(out.left_out) == [
        ".notes.txt.swp (a cache, log or editor file)",
        "big.bin (10 MB)",
        "debug.log (a cache, log or editor file)",
        "node_modules/ (a cache or build folder)",
        "pkg.egg-info/ (a cache or build folder)",
        "src/__pycache__/ (a cache or build folder)",
        "vendor/ (holds a nested git repository)",
    ]
    assert "left out of the commit" in Path(out.transcript or "").read_text()


async def test_the_agent_gets_only_the_allow_list_and_the_named_variables(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = await ws.prepare()
    monkeypatch.setenv("CLOUD_SECRET_KEY", "cloud-secret-value-123")
    monkeypatch.setenv("DEPLOY_TARGET", "staging-eu-1")
    monkeypatch.setenv("SERVICE_TOKEN", "service-token-value-456")
    script = f"env > {ws.logs}/env.txt; echo token=$SERVICE_TOKEN"
    inp = RunAgentIn(
        run_key=RUN,
        task=task(),
        base_commit=base,
        agent=agent(script).model_copy(update={"env": ["DEPLOY_TARGET", "SERVICE_TOKEN"]}),
    )
    out = await activity_env().run(AgentActivities(ws.sandboxes, make_agent).run_agent, inp)
    assert out.succeeded
    seen = dict(line.split("=", 1) for line in (ws.logs / "env.txt").read_text().splitlines())
    assert seen["DEPLOY_TARGET"] == "staging-eu-1"
    assert seen["SERVICE_TOKEN"] == "service-token-value-456"  # named: the agent has it
    assert "CLOUD_SECRET_KEY" not in seen
    # ... but its value is masked in what the pipeline reports and keeps.
    assert out.summary == "token=***"
    transcript = Path(out.transcript or "").read_text()
    assert "service-token-value-456" not in transcript and "token=***" in transcript
    assert "service-token-value-456" not in json.dumps(out.model_dump(mode="json"))
