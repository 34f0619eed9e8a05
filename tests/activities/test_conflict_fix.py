"""prepare_conflict_fix, then a fix round that resolves the markers, then a clean merge."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from autonomous_pipeline.activities.agent import AgentActivities
from autonomous_pipeline.activities.sandbox import SandboxActivities
from autonomous_pipeline.backends.merge import MergeJob, merge_task
from autonomous_pipeline.backends.registry import make_agent
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.activity_io import (
    ConflictFixIn,
    ConflictFixOut,
    FixRequest,
    MergeOut,
    RunAgentIn,
)
from autonomous_pipeline.models.run import AgentConfig
from tests.activities.conftest import RUN, TARGET, Workspace, activity_env, task
from tests.gitutil import commit_file, push_outside, sh
from tests.sandboxes import PLAIN, base_runner

RESOLVED = "one\nTASK TWO and OUTSIDE TWO\nthree\n"
# A fix agent that finds the markers where they should be and resolves them.
RESOLVER = f"""
from pathlib import Path
text = Path("a.txt").read_text()
assert "<<<<<<<" in text and "TASK TWO" in text and "OUTSIDE TWO" in text, text
Path("a.txt").write_text({RESOLVED!r})
print("resolved a.txt")
"""


async def conflicting_task(ws: Workspace) -> tuple[str, str, str]:
    """(base, task commit, target tip) where the task and the target both changed line two."""
    base, wt = await ws.prepare()
    (wt / "new.txt").write_text("added by the task\n")
    sh(wt, "add", "new.txt")
    commit = commit_file(wt, "a.txt", "one\nTASK TWO\nthree\n", "Task 1.1: two")
    tip = push_outside(ws.repo, TARGET, "a.txt", "one\nOUTSIDE TWO\nthree\n", ws.tmp)
    return base, commit, tip


async def prepare(ws: Workspace, base: str, commit: str) -> ConflictFixOut:
    acts = SandboxActivities(ws.sandboxes)
    inp = ConflictFixIn(
        run_key=RUN,
        task_id="1.1",
        repo=str(ws.repo),
        target_branch=TARGET,
        base_commit=base,
        commit=commit,
    )
    return await activity_env().run(acts.prepare_conflict_fix, inp)


def resolver(tmp: Path) -> AgentConfig:
    script = tmp / "resolve.py"
    script.write_text(RESOLVER)
    return AgentConfig(backend="command", command=[sys.executable, str(script)], timeout_s=30)


async def test_conflict_fix_round_trip(ws: Workspace) -> None:
    base, commit, tip = await conflicting_task(ws)
    merged = await merge(ws, base, commit)
    assert not merged.merged and merged.conflict_paths == ["a.txt"]

    prep = await prepare(ws, base, commit)
    assert prep == ConflictFixOut(base_commit=tip, conflict_paths=["a.txt"])
    wt = ws.wt()
    assert sh(wt, "rev-parse", "HEAD") == tip
    assert "<<<<<<<" in (wt / "a.txt").read_text()
    assert (wt / "new.txt").read_text() == "added by the task\n"
    assert (
        not (wt / ".git").is_dir()
        and sh(wt, "rev-parse", "-q", "--verify", "CHERRY_PICK_HEAD", check=False) == ""
    )

    # Again (a retry of the activity), with the target moved meanwhile: the recorded answer.
    push_outside(ws.repo, TARGET, "other.txt", "unrelated\n", ws.tmp)
    assert await prepare(ws, base, commit) == prep
    assert "<<<<<<<" in (wt / "a.txt").read_text() and sh(wt, "rev-parse", "HEAD") == tip

    # The fix round: a command agent (no sessions) must find the markers, not a reset worktree.
    inp = RunAgentIn(
        run_key=RUN,
        task=task(),
        base_commit=prep.base_commit,
        start_commit=prep.base_commit,
        agent=resolver(ws.tmp),
        fix=FixRequest(conflicts=prep.conflict_paths),
        session_id="0b7d5c3e-8f21-4a6b-9c4d-1e2f3a4b5c6d",
        resume=True,
    )
    out = await activity_env().run(AgentActivities(ws.sandboxes, make_agent).run_agent, inp)
    assert out.succeeded, out.error
    assert out.commit is not None and sorted(out.changed_files) == ["a.txt", "new.txt"]
    assert sh(wt, "rev-parse", "HEAD^") == tip
    assert sh(wt, "log", "-1", "--format=%s") == "Task 1.1: Say hello"
    # A late repeat of the preparation leaves the committed resolution alone.
    assert await prepare(ws, base, commit) == prep
    assert sh(wt, "rev-parse", "HEAD") == out.commit

    final = await merge(ws, prep.base_commit, out.commit)
    assert final.merged and final.conflict_paths == []
    target = sh(ws.repo, "rev-parse", TARGET)
    assert sh(ws.repo, "show", f"{target}:a.txt") == RESOLVED.rstrip("\n")
    assert sh(ws.repo, "show", f"{target}:other.txt") == "unrelated"
    assert sh(ws.repo, "show", f"{target}:new.txt") == "added by the task"


async def test_a_lost_worktree_is_rebuilt_from_the_record(ws: Workspace) -> None:
    base, commit, tip = await conflicting_task(ws)
    prep = await prepare(ws, base, commit)
    shutil.rmtree(ws.wt())
    inp = RunAgentIn(
        run_key=RUN,
        task=task(),
        base_commit=tip,
        start_commit=tip,
        agent=resolver(ws.tmp),
        fix=FixRequest(conflicts=prep.conflict_paths),
        resume=True,
    )
    out = await activity_env(attempt=2).run(
        AgentActivities(ws.sandboxes, make_agent).run_agent, inp
    )
    assert out.succeeded, out.error
    assert sh(ws.wt(), "rev-parse", "HEAD^") == tip
    assert (ws.wt() / "a.txt").read_text() == RESOLVED


async def test_a_change_that_applies_cleanly_has_no_conflicts(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    commit = commit_file(wt, "a.txt", "one\ntwo\nthree\nfour\n", "Task 1.1: four")
    tip = push_outside(ws.repo, TARGET, "b.txt", "b\n", ws.tmp)
    prep = await prepare(ws, base, commit)
    assert prep == ConflictFixOut(base_commit=tip, conflict_paths=[])
    assert sh(wt, "rev-parse", "HEAD") == tip
    assert (wt / "a.txt").read_text().endswith("four\n") and (wt / "b.txt").exists()


async def merge(ws: Workspace, base: str, commit: str) -> MergeOut:
    sandbox = ws.sandboxes.get(PLAIN)
    task = TaskRef(RUN, "1.1")
    job = MergeJob(
        ws.sb, sandbox, task, str(ws.repo), TARGET, base, commit, [],
        verify_timeout_s=30, env={},
        base_runner=lambda tip: lambda: base_runner(ws.sb, sandbox, task, tip),
    )  # fmt: skip
    return await merge_task(job, attempts=2)
