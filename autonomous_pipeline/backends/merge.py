"""Publish a task's commit on the target branch: rebase, re-verify, compare-and-swap.

The target is only ever moved forward, and only from the tip this attempt read: a push with an
expected old value. If someone else moved it in between, the attempt starts over from the new tip.
A merge that already happened (the run crashed after the push) is recognised by the task's trailer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


async def rebase_onto(co: Checkout, base_commit: str, tip: str) -> str | list[str]:
    """The task's commits replayed on `tip`: the new HEAD, or the conflicting paths."""
    if (one := await _replay_one(co, base_commit, tip)) is not None:
        return one
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


async def _replay_one(co: Checkout, base_commit: str, tip: str) -> str | None:
    """A change of one commit on `base_commit` replayed on `tip` without `git rebase`: the tree
    merged by `git merge-tree` (no checkout, no index), a commit of it with the original's
    author and message, and the checkout moved there, which writes only the files that differ.
    What rebase makes of it, for a third of the time on a large repository. None when it is not
    that case (several commits, a target that does not descend from the base, a conflict): the
    caller rebases, as it does when the change and the tip differ in .gitattributes."""
    listing = await co.git("rev-list", "--parents", f"{base_commit}..HEAD", check=False)
    lines = listing.output.split("\n")
    commits = [line.split() for line in lines if line.strip()]
    if not listing.ok or len(commits) != 1 or commits[0][1:] != [base_commit]:
        return None
    head = commits[0][0]
    if not await co.is_ancestor(base_commit, tip):
        return None
    # merge-tree reads merge attributes from this checkout (the change's files); rebase reads
    # them from the tip's. Only where the two agree is the result the same.
    attributes = await co.git(
        "diff", "--quiet", tip, head, "--", ":(glob)**/.gitattributes", check=False
    )
    if attributes.exit_code != 0:
        return None
    merged = await co.git("merge-tree", "--write-tree", tip, head, check=False)
    if merged.exit_code != 0:
        return None  # a conflict: rebase names the paths
    tree = merged.output.split()[0]
    meta = await co.git("log", "-1", "--date=raw", "--format=%an%x00%ae%x00%ad%x00%B", head)
    name, email, date, message = meta.output.split("\0", 3)
    message = message.rstrip("\n") + "\n"  # as stored: log adds a line end of its own
    tip_tree = (await co.git("rev-parse", f"{tip}^{{tree}}")).output.strip()
    if tree == tip_tree:
        new = tip  # the change is on the tip already: nothing of it is left, as with rebase
    else:
        author = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
        made = await git(
            "commit-tree", tree, "-p", tip, "-F", "-",
            cwd=co.path, stdin=message.encode(), env_extra=co.env | author,
        )  # fmt: skip
        new = made.output.strip()
    await co.git("reset", "--quiet", "--hard", new)  # moves the task's branch, or HEAD
    return new


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


@dataclass(frozen=True)
class MergeJob:
    """One task's change to publish on the target, as every step that publishes it needs it:
    the merge, and the finishing step that checks it first (`backends.finish`)."""

    workspaces: Workspaces
    sandbox: SandboxBackend
    task: TaskRef
    repo: str
    target_branch: str
    base_commit: str
    commit: str
    commands: list[str]
    verify_timeout_s: float
    env: Mapping[str, str]
    # Opens a runner on a checkout of a commit: where a failing check is run again.
    base_runner: Callable[[str], BaseRunner]
    beat: Callable[[str], None] = lambda _note: None  # the activity's progress note

    @property
    def tracking(self) -> str:
        return f"refs/remotes/origin/{self.target_branch}"


async def merge_task(m: MergeJob, attempts: int, locked: bool = False) -> MergeOut:
    """Publish `m.commit` on the target, in at most `attempts` tries of a lost race. `locked`:
    the caller holds the target's merge lock (`Clones.merge_lock`) already.

    The first attempt trusts the clone's record of the target, which this workspace's own
    merges keep current as they push: fetching first would cost every merge a round trip. When
    someone else moved the target, the push's lease says so (a merge of ours that landed before
    a crash shows then too) and the merge goes on from a fetch, that first attempt not counted.
    A conflict or a failed check is reported only against a fetched tip: against a stale one it
    may be gone already, and a fix round costs an agent run.
    """
    m.beat(f"waiting for other merges into {m.target_branch}")
    if locked:
        return await _merge(m, attempts)
    # One merge into the target at a time here: racing merges each rebased and re-verified
    # onto a tip another merge moved before they could push, and ran out of attempts.
    async with m.workspaces.clones.merge_lock(m.repo, m.target_branch):
        return await _merge(m, attempts)


async def _merge(m: MergeJob, attempts: int) -> MergeOut:
    """merge_task's attempts, with the merge lock held."""
    clones, repo = m.workspaces.clones, m.repo
    clone, fetched, attempt = await clones.existing(repo), False, 1
    while True:
        tip = await rev_parse(m.tracking, clone)
        if tip is None and not fetched:
            clone, fetched = await clones.ensure_clone(repo), True
            continue
        if tip is None:
            raise GitError(f"target branch {m.target_branch} does not exist in {repo}")
        out = await _attempt(m, clone, tip, attempt)
        if out is not None and (out.merged or fetched):
            return out
        if out is not None:  # a failure seen from the unfetched view: is it still one?
            clone, fetched = await clones.ensure_clone(repo), True
            if await rev_parse(m.tracking, clone) == tip:
                return out
            continue
        # The push found the target moved: counted only when this attempt's view was fetched.
        attempt += 1 if fetched else 0
        if attempt > max(1, attempts):
            return MergeOut(merged=False, error="target kept moving", attempts=attempt - 1)
        clone, fetched = await clones.ensure_clone(repo), True


async def _attempt(m: MergeJob, clone: Path, tip: str, attempt: int) -> MergeOut | None:
    """Merge onto `tip`: the outcome, or None when the push found the target moved."""
    task, commit, base_commit = m.task, m.commit, m.base_commit
    done = await find_merged(clone, tip, base_commit, task.run_key, task.task_id)
    if done is not None:
        return MergeOut(merged=True, commit=done, already_merged=True, attempts=attempt)
    checks: list[CheckResult] = []
    # Whether `tip` is known to be an ancestor of what is pushed: else it is checked below.
    forward = tip != base_commit and await is_ancestor(tip, commit, clone)
    if tip == base_commit or forward:
        new = commit  # exactly the commit that was verified: nothing to redo
    else:
        m.beat(f"rebasing onto {tip[:12]} (attempt {attempt})")
        # From the task's commit every time: an earlier attempt may have rebased elsewhere.
        co = await m.workspaces.at_commit(task, commit)
        rebased = await rebase_onto(co, base_commit, tip)
        if isinstance(rebased, list):
            return MergeOut(
                merged=False,
                conflict_paths=rebased,
                error=f"conflict rebasing onto {m.target_branch} at {tip[:12]}",
                attempts=attempt,
            )
        new = rebased
        if new == tip:
            # Every commit of the task's became empty on the tip: other work (another run, a
            # person) already made this change. Nothing of ours to publish.
            return MergeOut(
                merged=False,
                on_target=True,
                commit=await _carrier(clone, base_commit, commit, tip),
                attempts=attempt,
            )
        if m.commands:
            m.beat(f"re-verifying on {tip[:12]}")
            runner: Runner = m.sandbox.runner(task, co, Role.CHECK)
            checks = await run_checks(
                runner, m.commands, timeout_s=m.verify_timeout_s, env=m.env,
                base=m.base_runner(tip),
            )  # fmt: skip
            if not checks_passed(checks):
                return MergeOut(
                    merged=False,
                    checks=checks,
                    error=f"verification failed after rebasing onto {tip[:12]}",
                    attempts=attempt,
                )
    if not forward and not await is_ancestor(tip, new, clone):
        raise GitError(f"refusing to push {new}: not a fast-forward of {m.target_branch} at {tip}")
    m.beat(f"publishing {new[:12]} (attempt {attempt})")
    pushed = await m.workspaces.clones.push_target(m.repo, new, m.target_branch, expected=tip)
    if pushed == "moved":
        return None
    return MergeOut(merged=True, commit=new, checks=checks, attempts=attempt)
