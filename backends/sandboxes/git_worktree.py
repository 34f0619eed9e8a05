"""One git worktree per task, cut from a bare clone the pipeline owns.

The user's repository is only ever fetched from and pushed to. Everything else happens in
`<workspace>/repos/<name>.git` (a bare clone) and `<workspace>/worktrees/<run>/<task>/`. Operations
that change the clone's shared state (fetch, push, the worktree list) take the clone's lock; work
inside a task's own worktree needs none. Each step checks what is already there first, so running it
again after a crash at any point converges to the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from backends import confine
from backends.git import (
    GitError,
    PushResult,
    drop_worktree,
    git,
    git_paths,
    is_ancestor,
    push_with_lease,
    refuse_checked_out,
    repo_lock,
    rev_parse,
    split_z,
    task_trailer,
    with_trailer,
    worktree_ok,
)
from backends.sandboxes import conflict
from backends.sandboxes.changes import (
    escaping_symlink,
    junk_pathspecs,
    junk_reason,
    named_by,
    unwanted,
)

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _checked(kind: str, value: str) -> str:
    # Both end up in paths and ref names: refuse what git or the filesystem would misread.
    if not _NAME.match(value) or ".." in value or value.endswith((".lock", ".")):
        raise ValueError(f"{kind} {value!r} is not a safe name (letters, digits, '.', '_', '-')")
    return value


@dataclass
class Committed:
    """What `commit_all` made of the agent's leftovers."""

    commit: str | None = None  # the task's tip; None: nothing changed
    changed: list[str] = field(default_factory=list)  # since the base
    deleted: list[str] = field(default_factory=list)  # since the base
    left_out: list[str] = field(default_factory=list)  # untracked junk, with the reason
    rejected: str | None = None  # why the change cannot be taken (nothing was committed)


class GitWorktreeSandbox:
    name = "git_worktree"

    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace).resolve()
        self._clones: dict[tuple[str, str], Path] = {}
        # When the last fetch of each clone began (monotonic clock), to share fetches.
        self._fetch_started: dict[Path, float] = {}
        self._warned_unconfined = False

    def clone_dir(self, repo: str) -> Path:
        repo = repo.rstrip("/") or repo
        tail = re.split(r"[/:\\]", repo)[-1].removesuffix(".git")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", tail)[:40].lstrip(".") or "repo"
        digest = hashlib.sha1(repo.encode()).hexdigest()[:10]
        return self.workspace / "repos" / f"{safe}-{digest}.git"

    def worktree_dir(self, run_key: str, task_id: str) -> Path:
        run_dir = self.workspace / "worktrees" / _checked("run key", run_key)
        return run_dir / _checked("task id", task_id)

    def transcript_path(self, run_key: str, task_id: str) -> Path:
        d = self.workspace / "transcripts" / _checked("run key", run_key)
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{_checked('task id', task_id)}.log"

    def tmp_dir(self, run_key: str, task_id: str) -> Path:
        """The task's private temporary directory (TMPDIR of its confined processes)."""
        return self.workspace / "tmp" / _checked("run key", run_key) / _checked("task id", task_id)

    def writable(
        self, run_key: str, task_id: str, workdir: Path, wanted: bool
    ) -> list[Path] | None:
        """Where a process working in `workdir` may write, or None to leave it unconfined.

        The worktree, its own index and HEAD in the clone (so `git status` and `git restore`
        work; objects and refs stay read-only, so an agent cannot commit or rewrite branches),
        the task's temporary directory, and the worker's PIPELINE_AGENT_WRITABLE.
        """
        if not wanted:
            return None
        if not confine.available():
            if not self._warned_unconfined:
                self._warned_unconfined = True
                log.warning("Landlock is not available: agents and checks run unconfined")
            return None
        tmp = self.tmp_dir(run_key, task_id)
        tmp.mkdir(parents=True, exist_ok=True)
        paths = [workdir, tmp, *confine.extra_writable()]
        git_file = str(workdir / ".git")
        for pointer in (self.workspace / "repos").glob("*.git/worktrees/*/gitdir"):
            with contextlib.suppress(OSError):
                if pointer.read_text().strip() == git_file:
                    paths.append(pointer.parent)
        return paths

    @staticmethod
    def task_branch(run_key: str, task_id: str) -> str:
        return f"pipeline/{_checked('run key', run_key)}/task-{_checked('task id', task_id)}"

    @staticmethod
    def _base_ref(run_key: str, task_id: str) -> str:
        return f"refs/pipeline-base/{run_key}/{task_id}"

    @staticmethod
    def _conflict_ref(run_key: str, task_id: str) -> str:
        return f"refs/pipeline-conflict/{run_key}/{task_id}"

    def merge_lock(
        self, repo: str, target_branch: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """One merge into `target_branch` at a time among the workers of this workspace.

        Without it, merges race: each rebases and re-verifies onto a tip that another merge moves
        before it can push, and under load tasks ran out of attempts. The push's lease still
        guards against workers of other workspaces.
        """
        clone = self.clone_dir(repo)
        digest = hashlib.sha1(target_branch.encode()).hexdigest()[:12]
        return repo_lock(clone.with_name(f"{clone.name}.merge-{digest}.lock"))

    def _lock(self, clone: Path) -> contextlib.AbstractAsyncContextManager[None]:
        return repo_lock(clone.with_name(clone.name + ".lock"))

    async def ensure_clone(self, repo: str) -> Path:
        """Create the bare clone once, then fetch every branch of `repo` into refs/remotes/origin."""
        clone = self.clone_dir(repo)
        asked = time.monotonic()
        async with self._lock(clone):
            if self._fetch_started.get(clone, -1.0) > asked:
                # A fetch began after this call did, while it waited for the lock: its view of
                # the repository is as new as ours would be. Parallel tasks share one fetch.
                return clone
            if not (clone / "HEAD").is_file():
                # Built aside and renamed, so a crash never leaves a half-made clone in place.
                for old in clone.parent.glob(f"{clone.name}.tmp-*"):
                    await asyncio.to_thread(shutil.rmtree, old, ignore_errors=True)
                tmp = clone.with_name(f"{clone.name}.tmp-{uuid.uuid4().hex[:8]}")
                await git("init", "--quiet", "--bare", str(tmp), cwd=self.workspace)
                for key, value in (
                    ("remote.origin.url", repo),
                    ("remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"),
                    ("core.packedRefsTimeout", "10000"),  # concurrent ref deletions wait, not fail
                ):
                    await git("config", key, value, cwd=tmp)
                tmp.rename(clone)
            # FETCH_HEAD is never read; not writing it leaves one less shared file to contend on.
            started = time.monotonic()
            await git("fetch", "--quiet", "--prune", "--no-write-fetch-head", "origin", cwd=clone)
            self._fetch_started[clone] = started
        return clone

    async def push_target(self, repo: str, commit: str, branch: str, expected: str) -> PushResult:
        """Compare-and-swap of the user's `branch` from `expected` ("" = absent) to `commit`."""
        await refuse_checked_out(repo, branch)
        clone = self.clone_dir(repo)
        async with self._lock(clone):
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
                "fetch",
                "--quiet",
                "--no-write-fetch-head",
                "origin",
                base_commit,
                cwd=clone,
                check=False,
            )
            if await rev_parse(base_commit, clone) is None:
                raise GitError(f"base commit {base_commit} is not in {repo}")
        created = await self.push_target(repo, base_commit, target_branch, "") == "updated"
        if not created:  # another run created it meanwhile: take theirs
            await self.ensure_clone(repo)
        tip = await rev_parse(f"refs/remotes/origin/{target_branch}", clone)
        if tip is None:
            raise GitError(f"target branch {target_branch} vanished from {repo}")
        return tip, created

    async def _find_clone(self, run_key: str, task_id: str) -> Path | None:
        """The clone holding the task's refs: the steps after `prepare` are given no repo."""
        key = (run_key, task_id)
        if key not in self._clones:
            refs = (self._base_ref(*key), f"refs/heads/{self.task_branch(*key)}")
            for clone in sorted((self.workspace / "repos").glob("*.git")):
                if [ref for ref in refs if await rev_parse(ref, clone) is not None]:
                    self._clones[key] = clone
                    break
        return self._clones.get(key)

    async def _clone_of(self, run_key: str, task_id: str) -> Path:
        if (clone := await self._find_clone(run_key, task_id)) is None:
            raise GitError(f"no workspace for task {task_id} of run {run_key}: prepare it first")
        return clone

    async def _new_worktree(self, clone: Path, wt: Path, branch: str, commit: str) -> None:
        """(Re)create `wt` on `branch` at `commit`. Hold the clone's lock."""
        await drop_worktree(clone, wt)
        wt.parent.mkdir(parents=True, exist_ok=True)
        await git("worktree", "add", "--quiet", "-B", branch, str(wt), commit, cwd=clone)

    async def prepare(
        self, run_key: str, task_id: str, repo: str, target_branch: str
    ) -> tuple[str, Path]:
        """The task's worktree on its branch at the target's tip: (base commit, workdir).

        The base is recorded once (a ref in the clone); a second call returns it and the worktree
        as they are, rebuilding the worktree only if it is missing or broken.
        """
        wt, branch = self.worktree_dir(run_key, task_id), self.task_branch(run_key, task_id)
        clone = await self.ensure_clone(repo)
        self._clones[(run_key, task_id)] = clone
        base_ref = self._base_ref(run_key, task_id)
        base = await rev_parse(base_ref, clone)
        if base is None:
            tip = await rev_parse(f"refs/remotes/origin/{target_branch}", clone)
            if tip is None:
                raise GitError(f"target branch {target_branch} does not exist in {repo}")
            # Recorded with "must not exist yet": a concurrent or repeated prepare keeps the first.
            await git("update-ref", base_ref, tip, "", cwd=clone, check=False)
            base = await rev_parse(base_ref, clone)
            if base is None:
                raise GitError(f"cannot record the base of task {task_id} in {clone}")
        async with self._lock(clone):  # checked under the lock: a racing prepare built it already
            if not await worktree_ok(clone, wt):
                await self._new_worktree(clone, wt, branch, base)
        return base, wt

    async def reset(self, run_key: str, task_id: str, base_commit: str) -> Path:
        """The worktree on the task branch at `base_commit`, with nothing else in it."""
        clone = await self._clone_of(run_key, task_id)
        wt, branch = self.worktree_dir(run_key, task_id), self.task_branch(run_key, task_id)
        if not await worktree_ok(clone, wt):
            async with self._lock(clone):
                await self._new_worktree(clone, wt, branch, base_commit)
            return wt
        await self.reset_worktree(wt, branch, base_commit)
        return wt

    async def at_commit(self, run_key: str, task_id: str, commit: str) -> Path:
        """The worktree on the task branch at `commit` with no tracked change; untracked files
        (junk the commit left out) may stay. Cheaper than `reset` when it is already there."""
        clone = await self._clone_of(run_key, task_id)
        wt, branch = self.worktree_dir(run_key, task_id), self.task_branch(run_key, task_id)
        if await worktree_ok(clone, wt):
            head = await git(
                "rev-parse", "HEAD", "--symbolic-full-name", "HEAD", cwd=wt, check=False
            )
            if head.output.split() == [commit, f"refs/heads/{branch}"]:
                dirty = await git("status", "--porcelain", "--untracked-files=no", cwd=wt)
                if not dirty.output.strip():
                    return wt
        return await self.reset(run_key, task_id, commit)

    async def worktree_at(self, run_key: str, task_id: str, commit: str) -> Path | None:
        """The task's worktree as it is, if it is intact and its HEAD is or descends from `commit`.

        What a resumed agent continues from; None when it is gone or was moved elsewhere.
        """
        clone = await self._find_clone(run_key, task_id)
        wt = self.worktree_dir(run_key, task_id)
        if clone is None or not await worktree_ok(clone, wt):
            return None
        head = await rev_parse("HEAD", wt)
        if head is None or not await is_ancestor(commit, head, wt):
            return None
        return wt

    async def commit_all(
        self,
        run_key: str,
        task_id: str,
        base_commit: str,
        message: str,
        named: Iterable[str] = (),
    ) -> Committed:
        """Commit what the agent left, checked against the recorded base.

        Tracked changes are committed; untracked files too, except junk the task does not name
        (`changes.split_untracked`). The change is rejected, and nothing committed, when the
        worktree's .git is gone or corrupt, when HEAD no longer descends from the base (the agent
        amended, reset or rebased it), or when a symlink leads out of the worktree.
        """
        clone = await self._clone_of(run_key, task_id)
        wt, branch = self.worktree_dir(run_key, task_id), self.task_branch(run_key, task_id)
        if not await worktree_ok(clone, wt):
            return Committed(rejected="the agent removed or corrupted the worktree's .git")
        head = await rev_parse("HEAD", wt)
        if head is None or not await is_ancestor(base_commit, head, wt):
            return Committed(
                rejected=f"HEAD {head or '(none)'} does not descend from the task's base "
                f"{base_commit[:12]}: the agent rewrote history (amend, reset or rebase)"
            )
        named = list(named)
        trailer = task_trailer(run_key, task_id)
        msg = with_trailer(message, trailer)
        await self._stage(wt, head, named)
        left = await git("ls-files", "--others", "--exclude-standard", "--directory", "-z", cwd=wt)
        left_out = [f"{p} ({junk_reason(p, wt)})" for p in split_z(left.output)]
        staged = await git("diff", "--cached", "--name-only", "--no-renames", "-z", head, cwd=wt)
        committed = await git(
            "diff", "--name-only", "--no-renames", "-z", base_commit, head, cwd=wt
        )
        for path in sorted(set(split_z(staged.output)) | set(split_z(committed.output))):
            if (target := escaping_symlink(wt, path)) is not None:
                await git("reset", "--quiet", cwd=wt)
                return Committed(
                    rejected=f"{path} is a symlink to {target}, outside the worktree",
                    left_out=left_out,
                )
        if staged.output:
            await git("commit", "--quiet", "--no-verify", "--cleanup=whitespace", "-m", msg, cwd=wt)
            head = await rev_parse("HEAD", wt) or head
        same = await git("diff", "--quiet", "--no-renames", base_commit, head, cwd=wt, check=False)
        if same.exit_code == 0:  # nothing changed, or changes that cancel out: a no-op
            return Committed(left_out=left_out)
        body = await git("show", "--no-patch", "--format=%B", head, cwd=wt)
        if trailer not in body.output.splitlines():
            # The agent committed everything itself: mark the task's tip so merges can find it.
            await git("commit", "--quiet", "--no-verify", "--allow-empty", "-m", msg, cwd=wt)
            head = await rev_parse("HEAD", wt) or head
        current = await git("symbolic-ref", "--quiet", "HEAD", cwd=wt, check=False)
        if current.output.strip() != f"refs/heads/{branch}":
            # The agent switched branches or detached HEAD: its work becomes the task branch.
            await git("update-ref", f"refs/heads/{branch}", head, cwd=wt)
            await git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=wt)
        diff = await git("diff", "--name-only", "--no-renames", "-z", base_commit, head, cwd=wt)
        gone = await git(
            "diff",
            "--name-only",
            "--no-renames",
            "--diff-filter=D",
            "-z",
            base_commit,
            head,
            cwd=wt,
        )
        deleted = [p for p in split_z(gone.output) if not named_by(p, named)]
        return Committed(head, split_z(diff.output), deleted, left_out)

    @staticmethod
    async def _stage(wt: Path, head: str, named: list[str]) -> None:
        """Stage every tracked change and the untracked files that are work, not junk."""
        await git("add", "--update", cwd=wt)
        specs = junk_pathspecs()
        others = await git(
            "ls-files", "--others", "--exclude-standard", "-z", "--", ".", *specs, cwd=wt
        )
        # A repository the agent cloned or created inside shows as "dir/": git would add it as a
        # submodule link, or refuse the whole add when it has no commit yet.
        nested = [p.rstrip("/") for p in split_z(others.output) if p.endswith("/")]
        specs += [f":(exclude,literal){p}" for p in nested if not named_by(p, named)]
        await git("add", "--all", "--", ".", *specs, cwd=wt)
        # Named paths go in even when they look like junk: the task asked for them.
        wanted = [n.strip("/") for n in named if n.strip("/") and (wt / n.strip("/")).exists()]
        if wanted:
            # Not checked: git adds the others and says no to paths .gitignore excludes.
            await git_paths("add", paths=wanted, cwd=wt, check=False)
        raw = await git(
            "diff", "--cached", "--raw", "--no-renames", "--diff-filter=A", "-z", head, cwd=wt
        )
        fields = split_z(raw.output)  # ":old new sha sha A", path, ...
        drop = [
            path
            for meta, path in zip(fields[::2], fields[1::2], strict=False)
            if unwanted(path, meta.split()[1], wt, named)
        ]
        if drop:
            await git_paths("rm", "--cached", "-q", "-r", paths=drop, cwd=wt)

    async def remove(self, run_key: str, task_id: str, delete_branch: bool) -> tuple[bool, bool]:
        """(worktree removed, branch deleted) by this call; nothing there is not an error."""
        wt, branch = self.worktree_dir(run_key, task_id), self.task_branch(run_key, task_id)
        clone = await self._find_clone(run_key, task_id)
        if clone is None:
            removed = wt.exists()
            for gone in (wt, self.tmp_dir(run_key, task_id)):
                await asyncio.to_thread(shutil.rmtree, gone, ignore_errors=True)
            return removed, False
        deleted = False
        async with self._lock(clone):
            removed = await drop_worktree(clone, wt)
            if delete_branch:
                deleted = await rev_parse(f"refs/heads/{branch}", clone) is not None
                for ref in (
                    f"refs/heads/{branch}",
                    self._base_ref(run_key, task_id),
                    self._conflict_ref(run_key, task_id),
                ):
                    await git("update-ref", "-d", ref, cwd=clone, check=False)
                self._clones.pop((run_key, task_id), None)
        tmp = self.tmp_dir(run_key, task_id)
        await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)
        for empty in (wt.parent, tmp.parent):  # the run's folders, once its last task is gone
            with contextlib.suppress(OSError):
                empty.rmdir()
        return removed, deleted

    async def prepare_conflict(
        self,
        run_key: str,
        task_id: str,
        repo: str,
        target_branch: str,
        base_commit: str,
        commit: str,
    ) -> tuple[str, list[str]]:
        """The task's change (base..commit, squashed) applied onto the target's current tip.

        Afterwards the worktree is on the task branch at the tip, with the change uncommitted in
        it and git's conflict markers in the files that conflict: (tip, conflicting paths). The
        next commit on the task branch is the change, resolved, as one commit on top of the tip.
        A second call for the same change returns the recorded answer, rebuilding the worktree
        from the record only if the worktree no longer holds the change.
        """
        clone = await self.ensure_clone(repo)  # fetches: the tip below is current
        self._clones[(run_key, task_id)] = clone
        wt, branch = self.worktree_dir(run_key, task_id), self.task_branch(run_key, task_id)
        ref = self._conflict_ref(run_key, task_id)
        record = await conflict.read_record(clone, ref)
        if record is not None and (record.source, record.base) == (commit, base_commit):
            if not (await worktree_ok(clone, wt) and await conflict.holds_change(wt, record.tip)):
                await self._apply_change(clone, wt, branch, record.tip, record.change)
            return record.tip, record.conflicts
        tip = await rev_parse(f"refs/remotes/origin/{target_branch}", clone)
        if tip is None:
            raise GitError(f"target branch {target_branch} does not exist in {repo}")
        change = await conflict.squash(clone, base_commit, commit)
        paths = await self._apply_change(clone, wt, branch, tip, change)
        # Recorded only once the worktree holds the change: a crash before leaves no record.
        record = conflict.ConflictRecord(commit, base_commit, tip, change, paths)
        await conflict.write_record(clone, ref, record)
        return tip, paths

    async def restore_conflict(self, run_key: str, task_id: str, tip: str) -> Path | None:
        """Rebuild a conflict fix's worktree on `tip` from its record; None: nothing recorded."""
        clone = await self._find_clone(run_key, task_id)
        if clone is None:
            return None
        record = await conflict.read_record(clone, self._conflict_ref(run_key, task_id))
        if record is None or record.tip != tip:
            return None
        wt, branch = self.worktree_dir(run_key, task_id), self.task_branch(run_key, task_id)
        await self._apply_change(clone, wt, branch, tip, record.change)
        return wt

    async def _apply_change(
        self, clone: Path, wt: Path, branch: str, tip: str, change: str
    ) -> list[str]:
        """The worktree on `branch` at `tip`, `change` applied uncommitted: conflicting paths."""
        async with self._lock(clone):
            fresh = not await worktree_ok(clone, wt)
            if fresh:
                await self._new_worktree(clone, wt, branch, tip)
        if not fresh:
            await self.reset_worktree(wt, branch, tip)
        return await conflict.apply_change(wt, change)

    @staticmethod
    async def reset_worktree(wt: Path, branch: str, commit: str) -> None:
        """An intact worktree on `branch` at `commit` with nothing else in it."""
        # Leftovers of an interrupted rebase or cherry-pick would survive a plain reset.
        await git("rebase", "--quit", cwd=wt, check=False)
        await git("cherry-pick", "--quit", cwd=wt, check=False)
        await git("checkout", "--quiet", "--force", "-B", branch, commit, cwd=wt)
        await git("reset", "--quiet", "--hard", commit, cwd=wt)
        await git("clean", "-ffdxq", cwd=wt)  # -ff: nested repositories an agent made go too

    def worktree_repo(self, run_key: str, task_id: str) -> str:
        """The pipeline's clone behind a task's worktree; `checkout_detached` accepts it as repo."""
        wt = self.worktree_dir(run_key, task_id)
        if (cached := self._clones.get((run_key, task_id))) is not None:
            return str(cached)
        repos = self.workspace / "repos"
        with contextlib.suppress(OSError, IndexError):  # "gitdir: <clone>/worktrees/<id>"
            pointer = wt.joinpath(".git").read_text().removeprefix("gitdir: ").strip()
            if (clone := Path(pointer).parents[1]).parent == repos:
                return str(clone)
        # Its .git is gone: the clone still lists the worktree (worktrees/<id>/gitdir).
        for gitdir in sorted(repos.glob("*.git/worktrees/*/gitdir")):
            if Path(gitdir.read_text().strip()).parent == wt:
                return str(gitdir.parents[2])
        raise GitError(f"no workspace for task {task_id} of run {run_key}: prepare it first")

    @contextlib.asynccontextmanager
    async def checkout_detached(self, repo: str, commit: str) -> AsyncIterator[Path]:
        """A temporary worktree at `commit` (e.g. to run a check on the base), removed on exit.

        `repo` is the user's repository, or the clone itself (`worktree_repo`).
        """
        own = Path(repo).parent == self.workspace / "repos"
        clone = Path(repo) if own else self.clone_dir(repo)
        if not (clone / "HEAD").is_file():
            if own:
                raise GitError(f"no clone at {clone}")
            await self.ensure_clone(repo)
        wt = self.workspace / "worktrees" / "_detached" / uuid.uuid4().hex[:12]
        async with self._lock(clone):
            wt.parent.mkdir(parents=True, exist_ok=True)
            await git("worktree", "add", "--quiet", "--detach", str(wt), commit, cwd=clone)
        try:
            yield wt
        finally:
            async with self._lock(clone):
                await drop_worktree(clone, wt)
