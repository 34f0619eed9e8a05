"""Merging tasks into the user's target branch: round trip, races, conflicts, re-verification."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from autonomous_pipeline.backends.git import GitError, PushResult
from autonomous_pipeline.backends.merge import MergeJob, merge_task
from autonomous_pipeline.backends.workspace.checkout import Checkout
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.activity_io import MergeOut
from tests.gitutil import (
    commit_file,
    fsck,
    isolate_git,
    log_subjects,
    make_dirty,
    make_user_repo,
    push_outside,
    sh,
    snapshot,
)
from tests.sandboxes import base_runner, sandbox

TARGET = "pipeline/out"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = make_user_repo(tmp)
        self.main = sh(self.repo, "rev-parse", "main")
        self.sb = Workspaces(tmp / "ws")
        self.sandbox = sandbox(self.sb)

    async def task(
        self, task_id: str, files: dict[str, str], target: str = TARGET
    ) -> tuple[str, str]:
        """Prepare a task, let a pretend agent write `files`, commit: (base, commit)."""
        await self.sb.prepare_run(str(self.repo), self.main, target)
        base, co = await self.sb.prepare(TaskRef("r1", task_id), str(self.repo), target)
        for path, text in files.items():
            (co.path / path).parent.mkdir(parents=True, exist_ok=True)
            (co.path / path).write_text(text)
        commit = (await self.sb.collect(TaskRef("r1", task_id), base, f"Task {task_id}")).commit
        assert commit is not None
        return base, commit

    def job(
        self,
        task_id: str,
        base: str,
        commit: str,
        target: str = TARGET,
        commands: list[str] | None = None,
    ) -> MergeJob:
        task = TaskRef("r1", task_id)
        return MergeJob(
            self.sb, self.sandbox, task, str(self.repo), target, base, commit, commands or [],
            verify_timeout_s=30, env={"PATH": "/usr/bin:/bin"},
            base_runner=lambda tip: lambda: base_runner(self.sb, self.sandbox, task, tip),
        )  # fmt: skip

    async def merge(
        self,
        task_id: str,
        base: str,
        commit: str,
        target: str = TARGET,
        commands: list[str] | None = None,
        attempts: int = 5,
    ) -> MergeOut:
        return await merge_task(self.job(task_id, base, commit, target, commands), attempts)

    def wt(self, task_id: str) -> Path:
        return self.sb.layout.worktree_dir(TaskRef("r1", task_id))

    def target(self) -> str:
        return sh(self.repo, "rev-parse", f"refs/heads/{TARGET}")

    def show(self, path: str) -> str:
        return sh(self.repo, "show", f"refs/heads/{TARGET}:{path}")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    isolate_git(monkeypatch, tmp_path)
    return Env(tmp_path)


async def test_round_trip_leaves_a_dirty_user_checkout_byte_for_byte(env: Env) -> None:
    make_dirty(env.repo)
    before = snapshot(env.repo)
    base, commit = await env.task("1.1", {"hello.txt": "hello\n"})
    out = await env.merge("1.1", base, commit)
    assert (out.merged, out.commit, out.already_merged, out.attempts) == (True, commit, False, 1)
    assert env.target() == commit and env.show("hello.txt") == "hello"
    assert snapshot(env.repo) == before
    assert await env.sb.remove(TaskRef("r1", "1.1"), delete_branch=True) == (True, True)
    assert snapshot(env.repo) == before
    fsck(env.repo)
    fsck(env.sb.layout.clone_dir(str(env.repo)))


async def test_parallel_tasks_both_merge_exactly_once(env: Env) -> None:
    make_dirty(env.repo)
    before = snapshot(env.repo)
    (b1, c1), (b2, c2) = await asyncio.gather(
        env.task("1.1", {"one.txt": "1\n"}), env.task("1.2", {"two.txt": "2\n"})
    )
    assert b1 == b2 == env.main
    outs = await asyncio.gather(env.merge("1.1", b1, c1), env.merge("1.2", b2, c2))
    assert all(o.merged and not o.already_merged for o in outs)
    # One went first; the other was rebased onto it (a new commit) after its push was refused.
    assert {outs[0].commit, outs[1].commit} & {c1, c2} and outs[0].commit != outs[1].commit
    assert env.target() in {o.commit for o in outs}
    assert env.show("one.txt") == "1" and env.show("two.txt") == "2"
    subjects = log_subjects(env.repo, TARGET)
    assert subjects.count("Task 1.1") == 1 and subjects.count("Task 1.2") == 1
    body = sh(env.repo, "log", "--format=%B", TARGET)
    assert body.count("Pipeline-Task: r1/1.1") == 1 and body.count("Pipeline-Task: r1/1.2") == 1
    assert snapshot(env.repo) == before
    fsck(env.repo)
    fsck(env.sb.layout.clone_dir(str(env.repo)))


async def test_target_moving_between_fetch_and_push_is_retried(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, commit = await env.task("1.1", {"hello.txt": "hello\n"})
    real = env.sb.clones.push_target
    outside: list[str] = []

    async def racing_push(repo: str, new: str, branch: str, expected: str) -> PushResult:
        if len(outside) < 2:  # someone else publishes right before each of our first two pushes
            name = f"theirs{len(outside)}.txt"
            outside.append(push_outside(env.repo, TARGET, name, "theirs\n", env.tmp))
        return await real(repo, new, branch, expected)

    monkeypatch.setattr(env.sb.clones, "push_target", racing_push)
    out = await env.merge("1.1", base, commit, commands=["test -f hello.txt"])
    # The first push went from the clone's unfetched record of the target: meeting a moved
    # target there is not a race lost, and is not counted. The second, from a fetch, lost one.
    assert out.merged and out.attempts == 2 and out.commit != commit
    assert out.checks and out.checks[0].passed  # re-verified on the new base
    assert sh(env.repo, "rev-parse", f"{TARGET}^") == outside[1]
    assert env.show("hello.txt") == "hello" and env.show("theirs1.txt") == "theirs"


async def test_a_target_that_keeps_moving_runs_out_of_attempts(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, commit = await env.task("1.1", {"hello.txt": "hello\n"})
    real = env.sb.clones.push_target

    async def always_raced(repo: str, new: str, branch: str, expected: str) -> PushResult:
        push_outside(env.repo, TARGET, "theirs.txt", f"{new}\n", env.tmp)
        return await real(repo, new, branch, expected)

    monkeypatch.setattr(env.sb.clones, "push_target", always_raced)
    out = await env.merge("1.1", base, commit, attempts=2)
    assert (out.merged, out.error, out.attempts) == (False, "target kept moving", 2)
    assert "Pipeline-Task: r1/1.1" not in sh(env.repo, "log", "--format=%B", TARGET)


async def test_conflict_returns_paths_and_leaves_the_target(env: Env) -> None:
    b1, c1 = await env.task("1.1", {"a.txt": "mine\n"})
    b2, c2 = await env.task("1.2", {"a.txt": "yours\n", "other.txt": "o\n"})
    first = await env.merge("1.1", b1, c1)
    assert first.merged
    out = await env.merge("1.2", b2, c2)
    assert (out.merged, out.conflict_paths) == (False, ["a.txt"])
    assert env.target() == first.commit
    wt = env.wt("1.2")
    assert sh(wt, "rev-parse", "HEAD") == c2  # back where it was, no rebase in progress
    assert sh(wt, "status", "--porcelain") == ""


async def test_a_second_merge_finds_the_first(env: Env) -> None:
    base, commit = await env.task("1.1", {"hello.txt": "hello\n"})
    first = await env.merge("1.1", base, commit)
    push_outside(env.repo, TARGET, "later.txt", "later\n", env.tmp)  # work merged after ours
    tip = env.target()
    again = await env.merge("1.1", base, commit)
    assert (again.merged, again.already_merged, again.commit) == (True, True, first.commit)
    assert env.target() == tip


async def test_only_the_exact_trailer_counts_as_merged(env: Env) -> None:
    base, commit = await env.task("1.1", {"hello.txt": "hello\n"})
    for lookalike in ("Pipeline-Task: r1/1x1", "Pipeline-Task: r1/1.10", "x Pipeline-Task: r1/1.1"):
        push_outside(env.repo, TARGET, "n.txt", lookalike, env.tmp, message=f"other\n\n{lookalike}")
    out = await env.merge("1.1", base, commit)
    assert out.merged and not out.already_merged and out.attempts == 1


async def test_reverification_failure_after_rebase_blocks_the_merge(env: Env) -> None:
    # Each task alone is fine; together they break the rule the check enforces.
    check = ["! (test -f x.txt && test -f y.txt)"]
    b1, c1 = await env.task("1.1", {"x.txt": "x\n"})
    b2, c2 = await env.task("1.2", {"y.txt": "y\n"})
    first = await env.merge("1.1", b1, c1, commands=check)
    assert first.merged and first.checks == []  # its base did not move: nothing re-run
    out = await env.merge("1.2", b2, c2, commands=check)
    assert not out.merged and "verification failed" in (out.error or "")
    assert [(c.passed, c.pre_existing) for c in out.checks] == [(False, False)]
    assert env.target() == first.commit


async def test_a_failure_already_on_the_new_base_does_not_block(env: Env) -> None:
    b1, c1 = await env.task("1.1", {"x.txt": "x\n"})
    b2, c2 = await env.task("1.2", {"y.txt": "y\n"})
    await env.merge("1.1", b1, c1)
    out = await env.merge("1.2", b2, c2, commands=["test -f never.txt", "test -f y.txt"])
    assert out.merged
    assert [(c.passed, c.pre_existing) for c in out.checks] == [(False, True), (True, False)]
    assert list((env.tmp / "ws" / "worktrees" / "_detached").glob("*")) == []  # base checkout gone


async def test_a_push_that_is_not_a_fast_forward_is_refused(env: Env) -> None:
    base, _ = await env.task("1.1", {"hello.txt": "hello\n"})
    wt = env.wt("1.1")
    sh(wt, "checkout", "-q", "--detach", f"{base}~1")
    side = commit_file(wt, "side.txt", "side\n", "unrelated")
    with pytest.raises(GitError, match="not a fast-forward"):
        await env.merge("1.1", base, side)
    assert env.target() == env.main


async def test_a_branch_checked_out_by_the_user_is_never_pushed(env: Env) -> None:
    # With updateInstead, git itself would accept the push and rewrite the user's files.
    sh(env.repo, "config", "receive.denyCurrentBranch", "updateInstead")
    before = snapshot(env.repo)
    base, commit = await env.task("1.1", {"hello.txt": "hello\n"}, target="main")
    with pytest.raises(GitError, match="checked out"):
        await env.merge("1.1", base, commit, target="main", attempts=2)
    assert snapshot(env.repo) == before


async def test_a_change_other_work_already_made_is_on_target_with_its_commit(env: Env) -> None:
    # Two runs (or a run and a person) make the same change: the second has nothing to publish,
    # and must not report the other's commit as its own merge.
    base, commit = await env.task("1.1", {"same.txt": "same\n"})
    push_outside(env.repo, TARGET, "same.txt", "same\n", env.tmp, message="someone else")
    carrier = env.target()
    push_outside(env.repo, TARGET, "later.txt", "later\n", env.tmp)  # and work after it
    tip = env.target()
    out = await env.merge("1.1", base, commit)
    assert (out.merged, out.on_target, out.already_merged) == (False, True, False)
    assert out.commit == carrier  # the commit that carries the change, not the tip
    assert env.target() == tip  # nothing was pushed
    assert "Task 1.1" not in log_subjects(env.repo, TARGET)


async def test_a_failure_seen_on_a_stale_record_of_the_target_is_checked_on_a_fetched_one(
    env: Env,
) -> None:
    # A merge starts from the clone's own record of the target, unfetched. What fails there (a
    # check here) must not be reported when the target has moved on to where it passes.
    check = ["! (test -f x.txt && test -f y.txt)"]
    b1, c1 = await env.task("1.1", {"x.txt": "x\n"})
    b2, c2 = await env.task("1.2", {"y.txt": "y\n"})
    assert (await env.merge("1.1", b1, c1)).merged  # the clone's record holds x.txt now
    person = env.tmp / "person"
    sh(env.tmp, "clone", "-q", "--branch", TARGET, str(env.repo), str(person))
    sh(person, "rm", "-q", "x.txt")
    sh(person, "commit", "-qm", "x.txt goes")
    sh(person, "push", "-q", "origin", f"HEAD:refs/heads/{TARGET}")
    out = await env.merge("1.2", b2, c2, commands=check)
    assert out.merged and out.attempts == 1, out
    assert out.checks and out.checks[0].passed  # verified on the fetched tip, without x.txt
    assert env.show("y.txt") == "y"
    assert sh(env.repo, "log", "-1", "--format=%s", f"{TARGET}^") == "x.txt goes"


async def test_a_one_commit_change_is_replayed_as_rebase_would_replay_it(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    b1, c1 = await env.task("1.1", {"x.txt": "x\n"})
    b2, c2 = await env.task("1.2", {"y.txt": "y\n"})
    assert (await env.merge("1.1", b1, c1)).merged
    tip = env.target()
    used: list[str] = []
    real = Checkout.git

    async def spied(self: Checkout, *args: str, **kw: Any) -> Any:
        used.append(args[0])
        return await real(self, *args, **kw)

    monkeypatch.setattr(Checkout, "git", spied)
    out = await env.merge("1.2", b2, c2)
    assert out.merged and out.commit is not None
    assert "merge-tree" in used and "rebase" not in used, used
    # What `git rebase` makes of the same commit, in a clone of its own.
    other = env.tmp / "by-rebase"
    sh(env.tmp, "clone", "-q", str(env.sb.layout.clone_dir(str(env.repo))), str(other))
    sh(other, "checkout", "-q", "-B", "t", c2)
    sh(other, "rebase", "-q", "--onto", tip, b2)
    fields = "%T%n%P%n%an <%ae> %ad%n%B"
    assert sh(env.repo, "log", "-1", f"--format={fields}", out.commit) == sh(
        other, "log", "-1", f"--format={fields}", "HEAD"
    )


async def test_merge_attributes_the_change_brings_do_not_merge_it_where_rebase_would_not(
    env: Env,
) -> None:
    # Rebase reads the target's .gitattributes; a merge of trees in the task's checkout would
    # read the task's. A change that declares its own file `merge=union` conflicts all the same.
    b0, c0 = await env.task("1.0", {"f.txt": "one\n"})
    assert (await env.merge("1.0", b0, c0)).merged
    base, commit = await env.task(
        "1.1", {"f.txt": "TASK\n", ".gitattributes": "f.txt merge=union\n"}
    )
    push_outside(env.repo, TARGET, "f.txt", "TIP\n", env.tmp)
    out = await env.merge("1.1", base, commit)
    assert not out.merged and out.conflict_paths == ["f.txt"], out
    assert env.show("f.txt") == "TIP"
