"""Finish a task in one step: its change moved onto the target's tip, checked there, merged, and
its checkout put away.

What each part does is the same as the separate steps (`backends.verify`, `backends.merge`,
`Workspaces.remove`); done together they cost one round trip to the server instead of three. Two
things differ, on purpose:

- The change is moved onto the target's tip before it is checked, when the tip has moved since
  the task's base and the move is clean, and all of it under the target's merge lock: checked
  where it will land, it is checked once, where a check after the agent and a second one at
  the merge ran every check twice whenever another task had merged meanwhile (all the time,
  with agents in parallel). A failure found there is the task's to fix, on that tip. A move
  that conflicts is left to the merge, which reports it.
- Running it again after a crash is safe at any point: a merge that already landed is found
  first, and then only the cleanup is done again.
"""

from __future__ import annotations

import dataclasses
import logging

from autonomous_pipeline.backends.base import Role
from autonomous_pipeline.backends.git import is_ancestor, rev_parse
from autonomous_pipeline.backends.merge import MergeJob, find_merged, merge_task, rebase_onto
from autonomous_pipeline.backends.verify import checks_passed, run_checks
from autonomous_pipeline.backends.workspace.checkout import Checkout
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.activity_io import FinishOut, MergeOut
from autonomous_pipeline.models.results import CheckResult

log = logging.getLogger(__name__)


async def finish_task(
    m: MergeJob, attempts: int, retry: bool, after_agent: bool = False
) -> FinishOut:
    """`retry`: an earlier attempt of this step may have merged already (it crashed after).
    `after_agent`: the worktree is as the agent step left it (trusted on a first attempt)."""
    workspaces, task = m.workspaces, m.task
    at = _Checkout(workspaces, task, trusted=after_agent and not retry)
    m.beat(f"waiting for other merges into {m.target_branch}")
    # The merge lock first, then the move onto the tip, the checks and the push: taken after the
    # checks, a tip that moved meanwhile (with agents in parallel, always) meant checking again
    # under the lock, so every change was checked twice and once one at a time anyway.
    async with workspaces.clones.merge_lock(m.repo, m.target_branch):
        # Looked for under the lock: an earlier attempt that timed out but lives on may have
        # pushed while this one waited for it.
        if retry and (done := await _landed(m)):
            merged = MergeOut(merged=True, commit=done, already_merged=True, attempts=1)
            return FinishOut(
                base_commit=m.base_commit,
                commit=m.commit,
                passed=True,
                merge=merged,
                cleaned=await _put_away(m),
            )
        base, commit = await _onto_tip(at, m.repo, m.target_branch, m.base_commit, m.commit)
        checks: list[CheckResult] = []
        if m.commands:
            m.beat(f"checking {commit[:12]}: {len(m.commands)} command(s)")
            co = await at.at(commit)
            await m.sandbox.reap(task)
            checks = await run_checks(
                m.sandbox.runner(task, co, Role.CHECK), m.commands,
                timeout_s=m.verify_timeout_s, env=m.env,
                base=m.base_runner(base),  # a failure is compared on the base
            )  # fmt: skip
            if not checks_passed(checks):
                return FinishOut(base_commit=base, commit=commit, passed=False, checks=checks)
        moved = dataclasses.replace(m, base_commit=base, commit=commit)
        merge = await merge_task(moved, attempts, locked=True)
    cleaned = (merge.merged or merge.on_target) and await _put_away(m)
    return FinishOut(
        base_commit=base,
        commit=commit,
        passed=True,
        checks=merge.checks or checks,
        merge=merge,
        cleaned=cleaned,
    )


async def _put_away(m: MergeJob) -> bool:
    """The merged task's worktree removed; False (logged) when that failed. The change has
    landed: a failure here must not make the step fail, and the task's cleanup step tries again."""
    m.beat("putting the worktree away")
    try:
        await m.sandbox.destroy(m.task, True)
    except Exception as exc:
        log.warning("task %s merged; its worktree was not put away: %s", m.task.task_id, exc)
        return False
    return True


async def _landed(m: MergeJob) -> str | None:
    """The task's commit on the target, if an earlier attempt merged it (fetched first)."""
    clone = await m.workspaces.clones.ensure_clone(m.repo)
    tip = await rev_parse(m.tracking, clone)
    if tip is None:
        return None
    return await find_merged(clone, tip, m.base_commit, m.task.run_key, m.task.task_id)


class _Checkout:
    """The task's checkout at a commit: as the agent step left it when that is `trusted` and
    its HEAD says so, else made so (`Workspaces.at_commit`, which reads every file's state)."""

    def __init__(self, workspaces: Workspaces, task: TaskRef, trusted: bool) -> None:
        self.workspaces, self.task, self.trusted = workspaces, task, trusted

    async def at(self, commit: str) -> Checkout:
        if self.trusted:
            self.trusted = False  # once: what this step does to it next is checked again
            co = await self.workspaces.checkout(self.task)
            if co is not None and await co.head() == commit:
                return co
        return await self.workspaces.at_commit(self.task, commit)


async def _onto_tip(
    at: _Checkout, repo: str, target_branch: str, base_commit: str, commit: str
) -> tuple[str, str]:
    """(base, commit) of the change: moved onto the target's tip (as the clone knows it) when
    that has moved and the move is clean, else as it was."""
    clone = await at.workspaces.clones.existing(repo)
    tip = await rev_parse(f"refs/remotes/origin/{target_branch}", clone)
    if tip is None or tip == base_commit or await is_ancestor(tip, commit, clone):
        return base_commit, commit
    co = await at.at(commit)
    moved = await rebase_onto(co, base_commit, tip)
    if isinstance(moved, list) or moved == tip:
        # A conflict (the merge reports it, with its paths) or nothing left to move (the merge
        # finds the change on the target): the change stays as it was, to be checked there.
        return base_commit, commit
    at.trusted = True  # the rebase left it at `moved`, every file written by git
    return tip, moved
