"""A task's checkout: a git worktree of the pipeline's clone, and git run on it the safe way.

Every git command the pipeline runs in a checkout names its git directories explicitly
(GIT_DIR, GIT_COMMON_DIR, GIT_WORK_TREE). The checkout's `.git` file is the agent's to break: it
lies in the writable worktree, and a pointer to a directory of the agent's making would hand
host-side git a configuration of its choosing (`core.fsmonitor` runs a program). Pinned, git on
the host never reads it; it only checks, as text, that the pointer is still what git wrote.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from autonomous_pipeline.backends._proc import ProcResult
from autonomous_pipeline.backends.git import drop_worktree, git, git_paths, is_ancestor, rev_parse


@dataclass(frozen=True)
class Checkout:
    path: Path  # the working tree
    admin: Path  # <clone>/worktrees/<name>: the checkout's HEAD and index
    clone: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "GIT_DIR": str(self.admin),
            "GIT_COMMON_DIR": str(self.clone),
            "GIT_WORK_TREE": str(self.path),
        }

    async def git(self, *args: str, check: bool = True, stdin: bytes | None = None) -> ProcResult:
        return await git(*args, cwd=self.path, check=check, stdin=stdin, env_extra=self.env)

    async def git_paths(self, *args: str, paths: list[str], check: bool = True) -> ProcResult:
        return await git_paths(*args, paths=paths, cwd=self.path, check=check, env_extra=self.env)

    async def rev_parse(self, ref: str) -> str | None:
        return await rev_parse(ref, self.path, env_extra=self.env)

    async def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return await is_ancestor(ancestor, descendant, self.path, env_extra=self.env)

    def pointer_intact(self) -> bool:
        """The worktree's `.git` file still points where git made it point."""
        text = read_small(self.path / ".git")
        if text is None or not text.startswith("gitdir: "):
            return False
        points_to = Path(text.strip().removeprefix("gitdir: "))
        return points_to.resolve() == self.admin.resolve() and (self.admin / "HEAD").is_file()

    async def head(self) -> str | None:
        return await self.rev_parse("HEAD")

    async def current_branch(self) -> str:
        res = await self.git("symbolic-ref", "--quiet", "HEAD", check=False)
        return res.output.strip()


def read_small(path: Path, limit: int = 4096) -> str | None:
    """The text of a small regular file the agent could have replaced, or None. Never follows a
    link, never waits on a FIFO, never reads a huge file: all of which an agent can leave."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def admin_dir(clone: Path, wt: Path) -> Path | None:
    """The clone's administrative folder of worktree `wt`, found by the back-pointer git wrote.

    The clone is read-only to every sandbox, so these pointers are git's own. The checkout's own
    `.git` is never resolved: the agent may have made it a link (to itself, say).
    """
    wanted = wt.resolve() / ".git"
    for pointer in (clone / "worktrees").glob("*/gitdir"):
        with contextlib.suppress(OSError):
            named = Path(pointer.read_text().strip())
            if named.parent.resolve() / named.name == wanted:
                return pointer.parent
    return None


async def open_checkout(clone: Path, wt: Path) -> Checkout | None:
    """`wt` as a working checkout of `clone`, or None when it is gone or broken."""
    if not wt.is_dir() or (admin := admin_dir(clone, wt)) is None:
        return None
    co = Checkout(wt, admin, clone)
    if not co.pointer_intact() or await co.head() is None:
        return None
    return co


async def new_worktree(
    clone: Path,
    wt: Path,
    branch: str | None,
    commit: str,
    lock: contextlib.AbstractAsyncContextManager[object],
) -> Checkout:
    """(Re)create `wt` at `commit`, on `branch` (None: detached). `lock` (the clone's, not held)
    is taken only to register it: its files are written after, so that several tasks' new
    checkouts are written at once, not one after the other under the lock. Detached until its
    files are all there and on `branch` last: a crash leaves one that is reset before use."""
    async with lock:
        if os.path.lexists(wt) or admin_dir(clone, wt) is not None:
            await drop_worktree(clone, wt)  # what a crash left there (git asked only then)
        wt.parent.mkdir(parents=True, exist_ok=True)
        await git("worktree", "add", "--quiet", "--no-checkout", "--detach", str(wt), commit,
                  cwd=clone)  # fmt: skip
        admin = admin_dir(clone, wt)
    if admin is None:
        raise OSError(f"git made no administrative folder for {wt} in {clone}")
    co = Checkout(wt, admin, clone)
    await co.git("read-tree", "-u", "--reset", "HEAD")
    if branch is not None:
        await co.git("update-ref", f"refs/heads/{branch}", commit)
        await co.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
    return co


# What an interrupted rebase, cherry-pick, revert or merge leaves in a checkout's git folder: a
# plain reset would leave them (and the next git command would take up the operation again).
_INTERRUPTED = ("rebase-merge", "rebase-apply", "CHERRY_PICK_HEAD", "REVERT_HEAD", "sequencer")


async def quit_interrupted(co: Checkout) -> None:
    """Forget an interrupted rebase or cherry-pick, as `--quit` does (files kept as they are).
    Asked of git only when one of its state files is there: most checkouts have none."""
    if any(os.path.lexists(co.admin / name) for name in _INTERRUPTED):
        await co.git("rebase", "--quit", check=False)
        await co.git("cherry-pick", "--quit", check=False)
        await co.git("revert", "--quit", check=False)


async def reset_checkout(co: Checkout, branch: str, commit: str) -> None:
    """An intact checkout on `branch` at `commit` with nothing else in it.

    Cleaned while detached and put on `branch` last: a crash at any point leaves a checkout that
    is either detached (and so reset again before use) or clean."""
    scrub_special_files(co.path)  # a FIFO an agent left would block git clean
    await quit_interrupted(co)  # its leftovers would survive a plain reset
    await co.git("checkout", "--quiet", "--force", "--detach", commit)
    await co.git("clean", "-ffdxq")  # -ff: nested repositories an agent made go too
    # The files are `commit`'s already: set the branch and HEAD, no second checkout.
    await co.git("update-ref", f"refs/heads/{branch}", commit)
    await co.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")


async def clean_at(co: Checkout, branch: str, commit: str, untracked: bool = True) -> bool:
    """Whether the checkout is on `branch` at `commit` with nothing else in it, ignored files
    included (`untracked=False`: no tracked change; untracked files may stay): one `git
    status`, which names the branch and its commit too."""
    others = ["--ignored", "--untracked-files=all"] if untracked else ["--untracked-files=no"]
    res = await co.git("status", "--porcelain=v2", "--branch", "-z", *others, check=False)
    if not res.ok:
        return False
    heads = {"# branch.oid": commit, "# branch.head": branch}
    for entry in res.output.split("\0"):
        if not entry:
            continue
        key, _, value = entry.rpartition(" ")
        if key in heads:
            if value != heads.pop(key):
                return False
        elif not entry.startswith("# "):
            return False  # a change, an untracked or an ignored file
    return not heads


# Folders found clean of special files by the last scrub of each checkout (by path): a folder's
# inode and change time, and the folders in it. An entry made, removed or renamed in a folder
# changes its change time, which no process can set back (utimes sets it to now): the same
# inode with the same change time holds the same entries, so the next scrub stats it and goes
# on into its subfolders without reading it. Folders changed less than a second ago are not
# kept: a change in the same clock tick would not move the time.
_SCRUBBED: OrderedDict[str, dict[str, tuple[int, int, tuple[str, ...]]]] = OrderedDict()
_SETTLED_NS = 1_000_000_000
_SCRUBBED_MAX = 64  # checkouts remembered (the most recent): a worker's memory stays bounded


def scrub_special_files(root: Path) -> list[str]:
    """Remove what is neither a file, a folder nor a link (FIFOs, sockets, device nodes) from
    an agent's checkout, outside git's own folders: host-side git would block on a FIFO, and
    none of them can be committed. The paths removed, relative to `root`.

    Types come from the directory entries (no stat per file, which on a 50,000-file checkout
    is most of the cost); a filesystem that does not report them is stat'ed by `os.scandir`.
    Folders unchanged since the last scrub of this checkout are not read again (_SCRUBBED)."""
    removed: list[str] = []
    top = str(root)
    known = _SCRUBBED.get(top, {})
    seen: dict[str, tuple[int, int, tuple[str, ...]]] = {}
    now = time.time_ns()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder, follow_symlinks=False)
        except OSError:
            continue
        stamp = (info.st_ino, info.st_ctime_ns)
        if (last := known.get(folder)) is not None and last[:2] == stamp:
            seen[folder] = last
            stack.extend(last[2])
            continue
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        subfolders: list[str] = []
        clean = True
        for entry in entries:
            if folder == top and entry.name == ".git":
                continue  # the checkout's own pointer: checked as text elsewhere
            try:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.path)
                    continue
                if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    continue
                os.unlink(entry.path)
            except OSError:
                clean = False  # not removed: read again next time
                continue
            removed.append(os.path.relpath(entry.path, top))
        stack.extend(subfolders)
        if (
            clean
            and not _removed_here(removed, folder, top)
            and now - info.st_ctime_ns > _SETTLED_NS
        ):
            seen[folder] = (*stamp, tuple(subfolders))
    _SCRUBBED[top] = seen
    _SCRUBBED.move_to_end(top)
    while len(_SCRUBBED) > _SCRUBBED_MAX:
        _SCRUBBED.popitem(last=False)
    return sorted(removed)


def _removed_here(removed: list[str], folder: str, top: str) -> bool:
    """Whether this scrub removed an entry of `folder` (its change time moved by that)."""
    rel = os.path.relpath(folder, top)
    return any(os.path.dirname(r) == ("" if rel == "." else rel) for r in removed)
