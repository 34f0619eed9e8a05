"""Publish a task's commit on the target branch: rebase, re-verify, compare-and-swap.

The target is only ever moved forward, and only from the tip this attempt read: a push with an
expected old value. If someone else moved it in between, the attempt starts over from the new tip.
A merge that already happened (the run crashed after the push) is recognised by the task's trailer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from autonomous_pipeline.backends.base import Role, Runner, SandboxBackend
from autonomous_pipeline.backends.git import (
    GitError,
    git,
    grep_pattern,
    is_ancestor,
    rev_parse,
    split_z,
    task_trailer,
)
from autonomous_pipeline.backends.verify import BaseRunner, checks_passed, run_checks
from autonomous_pipeline.backends.workspace.checkout import Checkout
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.activity_io import MergeOut
from autonomous_pipeline.models.results import CheckResult


async def find_merged(
    clone: Path, tip: str, base_commit: str, run_key: str, task_id: str
) -> str | None:
    """The newest commit after `base_commit` on `tip` that carries the task's trailer line."""
    res = await git(
        "log", "-n1", "--format=%H", f"--grep={grep_pattern(task_trailer(run_key, task_id))}",
        tip, f"^{base_commit}", "--",
        cwd=clone,
    )  # fmt: skip
    return res.output.strip() or None


async def _rebase(co: Checkout, base_commit: str, tip: str) -> str | list[str]:
    """The task's commits replayed on `tip`: the new HEAD, or the conflicting paths."""
    res = await co.git("rebase", "--quiet", "--onto", tip, base_commit, check=False)
    if res.ok:
        head = await co.head()
        if head is None:
            raise GitError(f"no HEAD in {co.path} after rebase")
        return head
    unmerged = await co.git("diff", "--name-only", "-z", "--diff-filter=U", check=False)
    await co.git("rebase", "--abort", check=False)
    conflicts = sorted(set(split_z(unmerged.output)))
    if not conflicts:
        raise GitError(f"rebase onto {tip} failed", argv=res.argv, output=res.output)
    return conflicts


# Paths a carrier search names at most (each is an argument of one git command).
CARRIER_PATHS = 2000


async def _carrier(clone: Path, base_commit: str, commit: str, tip: str) -> str:
    """The newest commit on `tip` since `base_commit` that touched what the task changed."""
    names = await git("diff", "--name-only", "-z", base_commit, commit, cwd=clone)
    paths = split_z(names.output)
    if not paths or len(paths) > CARRIER_PATHS:
        return tip  # too many to name on one command line: the tip carries them all
    # The agent chose these names: taken literally, never as globs or pathspec magic.
    res = await git(
        "--literal-pathspecs", "log", "-n1", "--format=%H", tip, f"^{base_commit}", "--", *paths,
        cwd=clone, check=False,
    )  # fmt: skip
    return res.output.strip() or tip


async def merge_task(
    workspaces: Workspaces,
    sandbox: SandboxBackend,
    *,
    task: TaskRef,
    repo: str,
    target_branch: str,
    base_commit: str,
    commit: str,
    commands: list[str],
    verify_timeout_s: float,
    attempts: int,
    env: Mapping[str, str],
    base_runner: Callable[[str], BaseRunner],
    heartbeat: Callable[[str], None] | None = None,
) -> MergeOut:
    """`base_runner(commit)` opens a runner on a checkout of `commit` (re-verification's base)."""
    beat = heartbeat or (lambda _note: None)
    beat(f"waiting for other merges into {target_branch}")
    clones = workspaces.clones
    # One merge into the target at a time here: racing merges each rebased and re-verified
    # onto a tip another merge moved before they could push, and ran out of attempts.
    async with clones.merge_lock(repo, target_branch):
        checks: list[CheckResult] = []
        for attempt in range(1, max(1, attempts) + 1):
            # Fetched every time: merging onto a stale tip would waste a rebase and a re-verification.
            clone = await clones.ensure_clone(repo)
            tip = await rev_parse(f"refs/remotes/origin/{target_branch}", clone)
            if tip is None:
                raise GitError(f"target branch {target_branch} does not exist in {repo}")
            done = await find_merged(clone, tip, base_commit, task.run_key, task.task_id)
            if done is not None:
                return MergeOut(merged=True, commit=done, already_merged=True, attempts=attempt)
            if tip == base_commit or await is_ancestor(tip, commit, clone):
                new = commit  # exactly the commit that was verified: nothing to redo
            else:
                beat(f"rebasing onto {tip[:12]} (attempt {attempt})")
                # From the task's commit every time: an earlier attempt may have rebased elsewhere.
                co = await workspaces.at_commit(task, commit)
                rebased = await _rebase(co, base_commit, tip)
                if isinstance(rebased, list):
                    return MergeOut(
                        merged=False,
                        conflict_paths=rebased,
                        error=f"conflict rebasing onto {target_branch} at {tip[:12]}",
                        attempts=attempt,
                    )
                new = rebased
                if new == tip:
                    # Every commit of the task's became empty on the tip: other work (another
                    # run, a person) already made this change. Nothing of ours to publish.
                    return MergeOut(
                        merged=False,
                        on_target=True,
                        commit=await _carrier(clone, base_commit, commit, tip),
                        attempts=attempt,
                    )
                if commands:
                    beat(f"re-verifying on {tip[:12]}")
                    runner: Runner = sandbox.runner(task, co, Role.CHECK)
                    checks = await run_checks(
                        runner, commands, timeout_s=verify_timeout_s, env=env,
                        base=base_runner(tip),
                    )  # fmt: skip
                    if not checks_passed(checks):
                        return MergeOut(
                            merged=False,
                            checks=checks,
                            error=f"verification failed after rebasing onto {tip[:12]}",
                            attempts=attempt,
                        )
            if not await is_ancestor(tip, new, clone):
                raise GitError(
                    f"refusing to push {new}: not a fast-forward of {target_branch} at {tip}"
                )
            beat(f"publishing {new[:12]} (attempt {attempt})")
            if await clones.push_target(repo, new, target_branch, expected=tip) != "moved":
                return MergeOut(merged=True, commit=new, checks=checks, attempts=attempt)
        return MergeOut(
            merged=False, error="target kept moving", checks=checks, attempts=max(1, attempts)
        )
