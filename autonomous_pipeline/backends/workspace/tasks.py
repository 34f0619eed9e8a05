"""Workspaces: the checkouts of a workspace's tasks, made, reset, collected and removed.

Each step checks what is already there first, so running it again after a crash at any point
converges to the same result. Sandboxes share one of these: it is git bookkeeping, and runs on
the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from autonomous_pipeline.backends.git import (
    GitError,
    drop_worktree,
    for_each_ref,
    git,
    repo_lock,
    rev_parse,
)
from autonomous_pipeline.backends.workspace import conflict
from autonomous_pipeline.backends.workspace.checkout import (
    Checkout,
    admin_dir,
    clean_at,
    new_worktree,
    open_checkout,
    quit_interrupted,
    reset_checkout,
    scrub_special_files,
)
from autonomous_pipeline.backends.workspace.clones import Clones
from autonomous_pipeline.backends.workspace.collect import Committed, collect
from autonomous_pipeline.backends.workspace.layout import Layout, TaskRef

# Checkouts kept per clone for reuse. A task's checkout is parked when it ends and taken by the
# next task: with N tasks at once a workspace holds about N checkouts, whatever the plan's size,
# and this many at most besides.
POOL_MAX = 8


async def _on_branch(co: Checkout, branch: str) -> bool:
    head = await co.git("symbolic-ref", "--quiet", "HEAD", check=False)
    return head.output.strip() == f"refs/heads/{branch}"


async def _recycled(co: Checkout, branch: str, base: str) -> bool:
    """A reused checkout on `branch` at `base` with nothing else in it: what git checks out anew
    is only what differs from the last task's files. True only when git then says it is clean,
    ignored files included: anything the last task left (or a crash interrupted) that survives
    the reset means a new checkout instead."""
    try:
        await reset_checkout(co, branch, base)
    except (GitError, OSError):
        return False
    return await clean_at(co, branch, base)


def _opened(clone: Path, wt: Path) -> Checkout | None:
    """`wt` as a checkout of `clone` by git's own records, its HEAD unread (no git call)."""
    admin = admin_dir(clone, wt) if wt.is_dir() else None
    if admin is None:
        return None
    co = Checkout(wt, admin, clone)
    return co if co.pointer_intact() else None


# Lock files tasks' checkouts are striped over (see Workspaces.task_lock): tasks that share one
# wait for each other's prepare, a fraction of a second, seldom.
TASK_LOCKS = 64


class Workspaces:
    def __init__(self, workspace: Path) -> None:
        self.layout = Layout(workspace)
        self.clones = Clones(self.layout)

    @property
    def root(self) -> Path:
        return self.layout.root

    async def prepare_run(
        self, repo: str, base_commit: str, target_branch: str
    ) -> tuple[str, bool]:
        return await self.clones.prepare_run(repo, base_commit, target_branch)

    async def checkout(self, task: TaskRef) -> Checkout | None:
        """The task's checkout as it is, if it is intact."""
        clone = await self.clones.find(task)
        if clone is None:
            return None
        return await open_checkout(clone, self.layout.worktree_dir(task))

    def task_lock(self, task: TaskRef) -> contextlib.AbstractAsyncContextManager[None]:
        """One prepare or removal of a task's checkout at a time on this disk: two attempts of
        a step that overlap (one timed out but lives on) would each build or drop the checkout
        the other is writing. Striped over a fixed set of lock files, which are never removed
        (removing a lock file someone waits on would let two hold it)."""
        digest = hashlib.sha256(f"{task.run_key}/{task.task_id}".encode()).digest()
        return repo_lock(self.layout.root / "locks" / f"task-{digest[0] % TASK_LOCKS:02d}.lock")

    async def prepare(
        self, task: TaskRef, repo: str, target_branch: str, fresh: bool = False
    ) -> tuple[str, Checkout]:
        async with self.task_lock(task):
            return await self._prepare(task, repo, target_branch, fresh)

    async def _prepare(
        self, task: TaskRef, repo: str, target_branch: str, fresh: bool
    ) -> tuple[str, Checkout]:
        """The task's checkout on its branch at the target's tip: (base commit, checkout).

        The base is recorded once (a ref in the clone); a second call returns it and the task's
        checkout as they are, rebuilding the checkout only if it is missing or broken. `fresh`:
        no agent of the task has run, so the checkout is returned clean at the base, checked so.
        """
        wt = self.layout.worktree_dir(task)
        clone = await self.clones.ensure_clone(repo)
        self.clones.remember(task, clone)
        base = await self._base(task, clone, repo, target_branch)
        async with self.clones.lock(clone):  # checked under the lock: a racing prepare built it
            co = await open_checkout(clone, wt)
            pooled = co is None
            if co is None:
                co = await self._take_pooled(clone, wt)
        # A checkout on the task's branch is the task's own, kept as it is (a resumed agent goes
        # on from it). Any other, a parked one (detached) or one a crash left half-taken with
        # the last task's files, is used only once it is exactly the base.
        if co is not None and (pooled or not await _on_branch(co, task.branch)):
            co = co if await _recycled(co, task.branch, base) else None
        elif co is not None and fresh:
            # The task's own, from a claim that crashed or a try before: no agent's work to
            # keep, and whatever is there goes.
            scrub_special_files(co.path)
            await quit_interrupted(co)
            if not await clean_at(co, task.branch, base):
                co = co if await _recycled(co, task.branch, base) else None
        if co is None:
            # No checkout to reuse, or one that would not come clean: a new one, all files
            # written (the one cost recycling saves).
            co = await new_worktree(clone, wt, task.branch, base, self.clones.lock(clone))
        assert co is not None
        return base, co

    async def _base(self, task: TaskRef, clone: Path, repo: str, target_branch: str) -> str:
        """The task's base: the target's tip when it was first asked for, recorded once."""
        tip_ref = f"refs/remotes/origin/{target_branch}"
        refs = await for_each_ref(clone, task.base_ref, tip_ref)
        if (base := refs.get(task.base_ref)) is not None:
            return base
        tip = refs.get(tip_ref)
        if tip is None:
            raise GitError(f"target branch {target_branch} does not exist in {repo}")
        # Recorded with "must not exist yet": a concurrent or repeated prepare keeps the first.
        made = await git("update-ref", task.base_ref, tip, "", cwd=clone, check=False)
        base = tip if made.ok else await rev_parse(task.base_ref, clone)
        if base is None:
            raise GitError(f"cannot record the base of task {task.task_id} in {clone}")
        return base

    async def _take_pooled(self, clone: Path, wt: Path) -> Checkout | None:
        """A parked checkout of `clone`, moved to `wt` (under the clone's lock: no two tasks get
        the same). Broken ones found on the way are removed. Its HEAD is not read here: the
        reset that follows fails on a broken one, which is then replaced."""
        pool = self.layout.pool_dir(clone)
        slots = sorted(pool.iterdir()) if pool.is_dir() else []
        for slot in slots:
            if (admin := admin_dir(clone, slot)) is not None and Checkout(
                slot, admin, clone
            ).pointer_intact():
                wt.parent.mkdir(parents=True, exist_ok=True)
                moved = await git("worktree", "move", str(slot), str(wt), cwd=clone, check=False)
                if moved.exit_code == 0 and (co := _opened(clone, wt)) is not None:
                    return co
            await drop_worktree(clone, slot if slot.exists() else wt)
        return None

    async def _park(self, clone: Path, wt: Path) -> bool:
        """Keep an ended task's checkout for the next task (hold the clone's lock). False when
        it cannot be kept: broken, or the pool holds enough already."""
        pool = self.layout.pool_dir(clone)
        if pool.is_dir() and len(list(pool.iterdir())) >= POOL_MAX:
            return False
        co = _opened(clone, wt)
        if co is None:
            return False
        # Off the task's branch, so that the branch can be deleted: HEAD written as the commit
        # it names (what `checkout --detach` does, without reading the index or any file).
        detached = await co.git("update-ref", "--no-deref", "HEAD", "HEAD", check=False)
        if detached.exit_code != 0:
            return False
        pool.mkdir(parents=True, exist_ok=True)
        slot = pool / f"slot-{uuid.uuid4().hex[:12]}"
        moved = await git("worktree", "move", str(wt), str(slot), cwd=clone, check=False)
        return moved.exit_code == 0

    async def reset(self, task: TaskRef, commit: str) -> Checkout:
        """The checkout on the task branch at `commit`, with nothing else in it."""
        clone = await self.clones.of(task)
        wt = self.layout.worktree_dir(task)
        co = await open_checkout(clone, wt)
        if co is None:
            return await new_worktree(clone, wt, task.branch, commit, self.clones.lock(clone))
        await reset_checkout(co, task.branch, commit)
        return co

    async def at_commit(self, task: TaskRef, commit: str) -> Checkout:
        """The checkout on the task branch at `commit` with no tracked change; untracked files
        (junk the commit left out) may stay. Cheaper than `reset` when it is already there."""
        co = await self.checkout(task)
        if co is not None:
            scrub_special_files(co.path)  # checks ran there: a FIFO would block git status
            if await clean_at(co, task.branch, commit, untracked=False):
                return co
        return await self.reset(task, commit)

    async def clean_at(self, task: TaskRef, commit: str) -> Checkout | None:
        """The checkout, if it is on the task branch at `commit` with nothing else in it (ignored
        files included): cheaper than `reset`, which rewrites the index and cleans."""
        co = await self.checkout(task)
        if co is None:
            return None
        # What git status does not show: special files, an interrupted rebase or cherry-pick.
        scrub_special_files(co.path)
        await quit_interrupted(co)
        return co if await clean_at(co, task.branch, commit) else None

    async def worktree_at(self, task: TaskRef, commit: str) -> Checkout | None:
        """The checkout as it is, if it is intact and its HEAD is or descends from `commit`.

        What a resumed agent continues from; None when it is gone or was moved elsewhere.
        """
        co = await self.checkout(task)
        if co is None:
            return None
        head = await co.head()
        if head is None or not await co.is_ancestor(commit, head):
            return None
        return co

    async def collect(
        self, task: TaskRef, base_commit: str, message: str, named: Iterable[str] = ()
    ) -> Committed:
        co = await self.checkout(task)
        if co is None:
            return Committed(rejected="the agent removed or corrupted the worktree's .git")
        return await collect(co, task, base_commit, message, named)

    async def remove(self, task: TaskRef, delete_branch: bool) -> tuple[bool, bool]:
        """(checkout removed, branch deleted) by this call; nothing there is not an error."""
        async with self.task_lock(task):
            return await self._remove(task, delete_branch)

    async def _remove(self, task: TaskRef, delete_branch: bool) -> tuple[bool, bool]:
        wt = self.layout.worktree_dir(task)
        private = self.layout.private_dirs(task)
        clone = await self.clones.find(task)
        deleted = False
        if clone is None:
            removed = wt.exists()
            await asyncio.to_thread(shutil.rmtree, wt, ignore_errors=True)
        else:
            async with self.clones.lock(clone):
                removed = await self._park(clone, wt) or await drop_worktree(clone, wt)
                if delete_branch:
                    refs = (f"refs/heads/{task.branch}", task.base_ref, task.conflict_ref)
                    there = await for_each_ref(clone, *refs)
                    deleted = refs[0] in there
                    if there:
                        drop = "".join(f"delete {ref}\n" for ref in there).encode()
                        await git("update-ref", "--stdin", cwd=clone, stdin=drop, check=False)
                    self.clones.forget(task)
        for folder in private:
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        for empty in (wt.parent, *(p.parent for p in private)):  # the run's, once it is empty
            with contextlib.suppress(OSError):
                empty.rmdir()
        return removed, deleted

    async def prepare_conflict(
        self, task: TaskRef, repo: str, target_branch: str, base_commit: str, commit: str
    ) -> tuple[str, list[str]]:
        """The task's change (base..commit, squashed) applied onto the target's current tip.

        Afterwards the checkout is on the task branch at the tip, with the change uncommitted in
        it and git's conflict markers in the files that conflict: (tip, conflicting paths). The
        next commit on the task branch is the change, resolved, as one commit on top of the tip.
        A second call for the same change returns the recorded answer, rebuilding the checkout
        from the record only if it no longer holds the change.
        """
        clone = await self.clones.ensure_clone(repo)  # fetches: the tip below is current
        self.clones.remember(task, clone)
        record = await conflict.read_record(clone, task.conflict_ref)
        if record is not None and (record.source, record.base) == (commit, base_commit):
            co = await self.checkout(task)
            if co is None or not await conflict.holds_change(co, record.tip):
                await self._apply_change(task, clone, record.tip, record.change)
            return record.tip, record.conflicts
        tip = await rev_parse(f"refs/remotes/origin/{target_branch}", clone)
        if tip is None:
            raise GitError(f"target branch {target_branch} does not exist in {repo}")
        change = await conflict.squash(clone, base_commit, commit)
        paths = await self._apply_change(task, clone, tip, change)
        # Recorded only once the checkout holds the change: a crash before leaves no record.
        record = conflict.ConflictRecord(commit, base_commit, tip, change, paths)
        await conflict.write_record(clone, task.conflict_ref, record)
        return tip, paths

    async def restore_conflict(self, task: TaskRef, tip: str) -> Checkout | None:
        """Rebuild a conflict fix's checkout on `tip` from its record; None: nothing recorded."""
        clone = await self.clones.find(task)
        if clone is None:
            return None
        record = await conflict.read_record(clone, task.conflict_ref)
        if record is None or record.tip != tip:
            return None
        await self._apply_change(task, clone, tip, record.change)
        return await self.checkout(task)

    async def _apply_change(self, task: TaskRef, clone: Path, tip: str, change: str) -> list[str]:
        """The checkout on the task branch at `tip`, `change` applied uncommitted: conflicts."""
        wt = self.layout.worktree_dir(task)
        co = await open_checkout(clone, wt)
        fresh = co is None
        if co is None:
            co = await new_worktree(clone, wt, task.branch, tip, self.clones.lock(clone))
        if not fresh:
            await reset_checkout(co, task.branch, tip)
        return await conflict.apply_change(co, change)

    @contextlib.asynccontextmanager
    async def detached(self, task: TaskRef, commit: str) -> AsyncIterator[Checkout]:
        """A throwaway checkout at `commit` of the task's clone (a check on the base), removed
        on exit."""
        clone = await self.clones.of(task)
        wt = self.layout.detached_dir()
        co = await new_worktree(clone, wt, None, commit, self.clones.lock(clone))
        try:
            yield co
        finally:
            async with self.clones.lock(clone):
                await drop_worktree(clone, wt)
