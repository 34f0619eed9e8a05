"""The pipeline's bare clone of each repository: created once, fetched, pushed to by compare-and-swap.

The user's repository is only ever fetched from and pushed to. Operations that change a clone's
shared state (fetch, push, the worktree list) take the clone's lock; a second process sharing the
workspace waits on the same file lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import time
import uuid
from pathlib import Path

from autonomous_pipeline.backends.git import (
    GitError,
    PushResult,
    git,
    push_with_lease,
    refuse_checked_out,
    repo_lock,
    rev_parse,
)
from autonomous_pipeline.backends.workspace.layout import Layout, TaskRef

# What of a clone's configuration a sandbox sees (its real config names the user's repository,
# perhaps with credentials in the URL): only what git needs to read the objects.
_SANDBOX_CONFIG_SECTIONS = ("core.", "extensions.")


class Clones:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        # When the last fetch of each clone began (monotonic clock), to share fetches.
        self._fetch_started: dict[Path, float] = {}
        self._of_task: dict[TaskRef, Path] = {}

    def lock(self, clone: Path) -> contextlib.AbstractAsyncContextManager[None]:
        return repo_lock(clone.with_name(clone.name + ".lock"))

    def merge_lock(
        self, repo: str, target_branch: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """One merge into `target_branch` at a time among the workers of this workspace.

        Without it, merges race: each rebases and re-verifies onto a tip that another merge moves
        before it can push, and under load tasks ran out of attempts. The push's lease still
        guards against workers of other workspaces.
        """
        clone = self.layout.clone_dir(repo)
        digest = hashlib.sha1(target_branch.encode()).hexdigest()[:12]
        return repo_lock(clone.with_name(f"{clone.name}.merge-{digest}.lock"))

    @staticmethod
    def sandbox_config(clone: Path) -> Path:
        """The config file a sandbox sees in place of the clone's own (see ensure_clone)."""
        return clone.with_name(clone.name + ".sandbox-config")

    async def ensure_clone(self, repo: str) -> Path:
        """Create the bare clone once, then fetch every branch of `repo` into refs/remotes/origin."""
        clone = self.layout.clone_dir(repo)
        asked = time.monotonic()
        async with self.lock(clone):
            if self._fetch_started.get(clone, -1.0) > asked:
                # A fetch began after this call did, while it waited for the lock: its view of
                # the repository is as new as ours would be. Parallel tasks share one fetch.
                return clone
            if not (clone / "HEAD").is_file():
                await self._create(clone, repo)
            if not self.sandbox_config(clone).is_file():
                await self._write_sandbox_config(clone)
            # FETCH_HEAD is never read; not writing it leaves one less shared file to contend on.
            started = time.monotonic()
            await git("fetch", "--quiet", "--prune", "--no-write-fetch-head", "origin", cwd=clone)
            self._fetch_started[clone] = started
        return clone

    async def existing(self, repo: str) -> Path:
        """The clone of `repo` as it is, without a fetch; made (and fetched) if there is none."""
        clone = self.layout.clone_dir(repo)
        if (clone / "HEAD").is_file() and self.sandbox_config(clone).is_file():
            return clone
        return await self.ensure_clone(repo)

    async def _create(self, clone: Path, repo: str) -> None:
        # Built aside and renamed, so a crash never leaves a half-made clone in place.
        for old in clone.parent.glob(f"{clone.name}.tmp-*"):
            await asyncio.to_thread(shutil.rmtree, old, ignore_errors=True)
        clone.parent.mkdir(parents=True, exist_ok=True)
        tmp = clone.with_name(f"{clone.name}.tmp-{uuid.uuid4().hex[:8]}")
        await git("init", "--quiet", "--bare", str(tmp), cwd=self.layout.root)
        for key, value in (
            ("remote.origin.url", repo),
            ("remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"),
            ("core.packedRefsTimeout", "10000"),  # concurrent ref deletions wait, not fail
        ):
            await git("config", key, value, cwd=tmp)
        tmp.rename(clone)

    async def _write_sandbox_config(self, clone: Path) -> None:
        listing = await git("config", "--file", str(clone / "config"), "--list", cwd=clone)
        lines = ["# the pipeline's clone as a sandbox sees it: its core settings only"]
        for entry in listing.output.splitlines():
            key, _, value = entry.partition("=")
            if key.startswith(_SANDBOX_CONFIG_SECTIONS):
                section, _, name = key.rpartition(".")
                lines.append(f"[{section}]\n\t{name} = {value}")
        target = self.sandbox_config(clone)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(target)

    async def push_target(self, repo: str, commit: str, branch: str, expected: str) -> PushResult:
        """Compare-and-swap of the user's `branch` from `expected` ("" = absent) to `commit`."""
        await refuse_checked_out(repo, branch)
        clone = self.layout.clone_dir(repo)
        async with self.lock(clone):
            return await push_with_lease(clone, commit, branch, expected)

    async def prepare_run(
        self, repo: str, base_commit: str, target_branch: str
    ) -> tuple[str, bool]:
        """The target's tip, creating the target at `base_commit` when it does not exist yet."""
        clone = await self.ensure_clone(repo)
        tip = await rev_parse(f"refs/remotes/origin/{target_branch}", clone)
        if tip is not None:
            return tip, False
        if await rev_parse(base_commit, clone) is None:
            # Reachable only from a tag or a detached HEAD: ask for the commit itself.
            await git(
                "fetch", "--quiet", "--no-write-fetch-head", "origin", base_commit,
                cwd=clone, check=False,
            )  # fmt: skip
            if await rev_parse(base_commit, clone) is None:
                raise GitError(f"base commit {base_commit} is not in {repo}")
        created = await self.push_target(repo, base_commit, target_branch, "") == "updated"
        if not created:  # another run created it meanwhile: take theirs
            await self.ensure_clone(repo)
        tip = await rev_parse(f"refs/remotes/origin/{target_branch}", clone)
        if tip is None:
            raise GitError(f"target branch {target_branch} vanished from {repo}")
        return tip, created

    def remember(self, task: TaskRef, clone: Path) -> None:
        self._of_task[task] = clone

    def forget(self, task: TaskRef) -> None:
        self._of_task.pop(task, None)

    async def find(self, task: TaskRef) -> Path | None:
        """The clone holding the task's refs: the steps after `prepare` are given no repo."""
        if task not in self._of_task:
            refs = (task.base_ref, f"refs/heads/{task.branch}")
            for clone in sorted(self.layout.repos.glob("*.git")):
                if [ref for ref in refs if await rev_parse(ref, clone) is not None]:
                    self._of_task[task] = clone
                    break
        return self._of_task.get(task)

    async def of(self, task: TaskRef) -> Path:
        if (clone := await self.find(task)) is None:
            raise GitError(
                f"no workspace for task {task.task_id} of run {task.run_key}: prepare it first"
            )
        return clone
