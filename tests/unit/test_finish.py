"""Finishing a task in one step (checks, merge, cleanup) on real repositories: the change is
checked once, where it lands; a failure is the task's to fix there; a retry after a merge that
landed does not check or merge again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from autonomous_pipeline.backends.finish import finish_task
from autonomous_pipeline.backends.git import is_ancestor
from autonomous_pipeline.models.activity_io import FinishOut
from tests.gitutil import isolate_git, sh
from tests.unit.test_merge import TARGET, Env


class Finish(Env):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.runs = tmp / "check-runs.log"  # one line per run of the counted check (PLAIN)

    def counted(self, command: str) -> str:
        """`command`, noting each run outside the worktree (the test sandbox confines nothing)."""
        return f"echo run >> {self.runs} && {command}"

    @property
    def clone(self) -> Path:
        return self.sb.layout.clone_dir(str(self.repo))

    def check_runs(self) -> int:
        return len(self.runs.read_text().splitlines()) if self.runs.exists() else 0

    async def finish(
        self,
        task_id: str,
        base: str,
        commit: str,
        retry: bool = False,
        commands: list[str] | None = None,
        after_agent: bool = False,
    ) -> FinishOut:
        job = self.job(task_id, base, commit, commands=commands)
        return await finish_task(job, attempts=5, retry=retry, after_agent=after_agent)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Finish:
    isolate_git(monkeypatch, tmp_path)
    return Finish(tmp_path)


async def test_a_change_on_a_moved_target_is_checked_once_where_it_lands(env: Finish) -> None:
    b1, c1 = await env.task("1.1", {"x.txt": "x\n"})
    b2, c2 = await env.task("1.2", {"y.txt": "y\n"})
    first = await env.finish("1.1", b1, c1, commands=[env.counted("test -f x.txt")])
    assert first.merge is not None and first.merge.merged and first.cleaned
    assert env.check_runs() == 1
    out = await env.finish("1.2", b2, c2, commands=[env.counted("test -f x.txt -a -f y.txt")])
    # Moved onto 1.1's merge before its check: checked there, and pushed without a second run.
    assert out.passed and out.merge is not None and out.merge.merged, out
    assert out.base_commit == first.merge.commit and out.commit != c2
    assert env.check_runs() == 2
    assert [c.passed for c in out.checks] == [True]
    assert env.target() == out.merge.commit == out.commit
    assert env.show("x.txt") == "x" and env.show("y.txt") == "y"
    assert out.cleaned and not env.wt("1.2").exists()  # put away, into the pool
    assert sh(env.repo, "log", "--format=%s", "-1", TARGET) == "Task 1.2"


async def test_a_check_failing_on_the_moved_target_is_the_tasks_to_fix_there(env: Finish) -> None:
    # Each change passes alone; together they break what the check enforces.
    check = ["! (test -f x.txt && test -f y.txt)"]
    b1, c1 = await env.task("1.1", {"x.txt": "x\n"})
    b2, c2 = await env.task("1.2", {"y.txt": "y\n"})
    assert (await env.finish("1.1", b1, c1, commands=check)).merge is not None
    tip = env.target()
    out = await env.finish("1.2", b2, c2, commands=check)
    assert not out.passed and out.merge is None and not out.cleaned
    assert [(c.passed, c.pre_existing) for c in out.checks] == [(False, False)]
    # The fix round goes on from the moved change, in the task's worktree, which is kept.
    assert out.base_commit == tip and await is_ancestor(tip, out.commit, env.clone)
    assert sh(env.wt("1.2"), "rev-parse", "HEAD") == out.commit
    assert env.target() == tip  # nothing merged


async def test_a_move_that_conflicts_is_left_to_the_merge_to_report(env: Finish) -> None:
    b1, c1 = await env.task("1.1", {"same.txt": "one\n"})
    b2, c2 = await env.task("1.2", {"same.txt": "two\n"})
    assert (await env.finish("1.1", b1, c1)).merge is not None
    out = await env.finish("1.2", b2, c2, commands=["true"])
    assert out.passed and out.merge is not None and not out.merge.merged
    assert out.merge.conflict_paths == ["same.txt"]
    assert (out.base_commit, out.commit) == (b2, c2) and not out.cleaned


async def test_a_retry_after_the_merge_landed_only_cleans_up(env: Finish) -> None:
    base, commit = await env.task("1.1", {"x.txt": "x\n"})
    check = [env.counted("test -f x.txt")]
    first = await env.finish("1.1", base, commit, commands=check)
    assert first.merge is not None and first.merge.merged
    # The step crashed after it merged, and runs again with the same input.
    again = await env.finish("1.1", base, commit, retry=True, commands=check)
    assert again.merge is not None and again.merge.already_merged and again.cleaned
    assert again.merge.commit == first.merge.commit == env.target()
    assert env.check_runs() == 1  # not checked again
    assert not env.wt("1.1").exists()


async def test_a_worktree_not_where_the_agent_step_left_it_is_made_so(env: Finish) -> None:
    # Trusted as the agent step left it only while its HEAD says so: moved, it is checked out
    # at the commit again before the checks run.
    base, commit = await env.task("1.1", {"x.txt": "x\n"})
    sh(env.wt("1.1"), "checkout", "-q", "--detach", base)
    seen = env.tmp / "seen.log"  # what the check found in the worktree
    check = f"if test -f x.txt; then echo x >> {seen}; else echo none >> {seen}; fi"
    out = await env.finish("1.1", base, commit, after_agent=True, commands=[check])
    assert out.passed and out.merge is not None and out.merge.merged, out
    assert seen.read_text() == "x\n"
    assert env.show("x.txt") == "x"


async def test_changes_finishing_together_are_each_checked_once(env: Finish) -> None:
    # Both wait for the target's merge lock before they move and check: the second is checked
    # once, on the first's merge, not once beside it and again under the lock.
    b1, c1 = await env.task("1.1", {"x.txt": "x\n"})
    b2, c2 = await env.task("1.2", {"y.txt": "y\n"})
    first, second = await asyncio.gather(
        env.finish("1.1", b1, c1, commands=[env.counted("true")]),
        env.finish("1.2", b2, c2, commands=[env.counted("true")]),
    )
    assert first.merge is not None and first.merge.merged
    assert second.merge is not None and second.merge.merged
    assert env.check_runs() == 2
    assert env.show("x.txt") == "x" and env.show("y.txt") == "y"


async def test_a_retry_beside_an_attempt_still_alive_finds_its_merge_under_the_lock(
    env: Finish,
) -> None:
    # The first attempt timed out for the server but lives on and pushes while the retry waits
    # for the merge lock: the retry finds that merge, and checks nothing again.
    base, commit = await env.task("1.1", {"x.txt": "x\n"})
    check = [env.counted("sleep 0.5")]
    first = asyncio.create_task(env.finish("1.1", base, commit, commands=check))
    while not env.check_runs():  # the first attempt holds the lock, in its checks
        await asyncio.sleep(0.02)
    again = await env.finish("1.1", base, commit, retry=True, commands=check)
    done = await first
    assert done.merge is not None and done.merge.merged
    assert again.merge is not None and again.merge.already_merged, again
    assert again.merge.commit == done.merge.commit == env.target()
    assert env.check_runs() == 1


async def test_a_merged_task_whose_worktree_could_not_be_removed_is_still_merged(
    env: Finish, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, commit = await env.task("1.1", {"x.txt": "x\n"})

    async def fails(*args: object, **kw: object) -> None:
        raise OSError("device busy")

    monkeypatch.setattr(env.sandbox, "destroy", fails)
    out = await env.finish("1.1", base, commit)
    assert out.merge is not None and out.merge.merged and out.merge.commit == env.target()
    assert not out.cleaned  # the task's own cleanup step tries again
