"""Collect a task's change: commit what the agent left in its checkout, checked first.

The pipeline is the only committer. Tracked changes are committed; untracked files too, except
junk the task does not name (`changes`). The change is rejected, and nothing committed, when the
checkout's `.git` pointer is gone or rewritten, when HEAD no longer descends from the task's base
(the agent amended, reset or rebased it), when a symlink leads out of the repository or into
`.git`, when a file, a name or a link holds the value of one of the worker's secrets, or when a
file the task does not name is too large to be work.

Every check runs on the checkout's files before anything is staged: `git add` writes what it
stages into the clone, which every sandbox of the repository can read, so a rejected secret must
never reach it. What git could not read safely (FIFOs, sockets, device nodes: a FIFO named
.gitignore blocks every git command) is removed first; it is never work.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from autonomous_pipeline.backends.git import split_z, task_trailer, with_trailer
from autonomous_pipeline.backends.secrets import Redactor, redactor
from autonomous_pipeline.backends.workspace.changes import (
    MAX_UNNAMED_BYTES,
    bad_symlink,
    junk_pathspecs,
    junk_reason,
    named_by,
    unwanted,
)
from autonomous_pipeline.backends.workspace.checkout import Checkout, scrub_special_files
from autonomous_pipeline.backends.workspace.layout import TaskRef

_CHUNK = 4 * 1024 * 1024


@dataclass
class Committed:
    """What `collect` made of the agent's leftovers."""

    commit: str | None = None  # the task's tip; None: nothing changed
    changed: list[str] = field(default_factory=list)  # since the base
    deleted: list[str] = field(default_factory=list)  # since the base, not named by the task
    left_out: list[str] = field(default_factory=list)  # untracked junk, with the reason
    rejected: str | None = None  # why the change cannot be taken (nothing was committed)


def shown(path: str) -> str:
    """A path as a transcript line may hold it: a newline in a name cannot forge a line."""
    return path if path.isprintable() else path.encode("unicode_escape").decode()


async def collect(
    co: Checkout, task: TaskRef, base_commit: str, message: str, named: Iterable[str] = ()
) -> Committed:
    if not co.pointer_intact():
        return Committed(rejected="the agent removed or corrupted the worktree's .git")
    head = await co.head()
    if head is None or not await co.is_ancestor(base_commit, head):
        return Committed(
            rejected=f"HEAD {head or '(none)'} does not descend from the task's base "
            f"{base_commit[:12]}: the agent rewrote history (amend, reset or rebase)"
        )
    named = list(named)
    mask = redactor()  # what it says is written to the transcript: a name may hold a secret
    removed = [f"{shown(mask(p))} (not a file: removed)" for p in scrub_special_files(co.path)]
    plan = await _plan(co, head, named)
    committed = await co.git("diff", "--name-only", "--no-renames", "-z", base_commit, head)
    paths = sorted({*plan.paths, *split_z(committed.output)})
    if why := _refusal(co.path, paths, named, await _encodings(co, paths)):
        return Committed(rejected=why, left_out=removed)
    await _stage(co, head, plan)
    left = await co.git("ls-files", "--others", "--exclude-standard", "--directory", "-z")
    left_out = removed + [
        f"{shown(mask(p))} ({junk_reason(p, co.path)})" for p in split_z(left.output)
    ]
    staged = await co.git("diff", "--cached", "--name-only", "--no-renames", "-z", head)
    trailer = task_trailer(task.run_key, task.task_id)
    msg = with_trailer(message, trailer)
    if staged.output:
        await co.git("commit", "--quiet", "--no-verify", "--cleanup=whitespace", "-m", msg)
        head = await co.head() or head
    same = await co.git("diff", "--quiet", "--no-renames", base_commit, head, check=False)
    if same.exit_code == 0:  # nothing changed, or changes that cancel out: a no-op
        return Committed(left_out=left_out)
    body = await co.git("show", "--no-patch", "--format=%B", head)
    if trailer not in body.output.splitlines():
        # The agent committed everything itself: mark the task's tip so merges can find it.
        await co.git("commit", "--quiet", "--no-verify", "--allow-empty", "-m", msg)
        head = await co.head() or head
    if await co.current_branch() != f"refs/heads/{task.branch}":
        # The agent switched branches or detached HEAD: its work becomes the task branch.
        await co.git("update-ref", f"refs/heads/{task.branch}", head)
        await co.git("symbolic-ref", "HEAD", f"refs/heads/{task.branch}")
    diff = await co.git("diff", "--name-only", "--no-renames", "-z", base_commit, head)
    gone = await co.git(
        "diff", "--name-only", "--no-renames", "--diff-filter=D", "-z", base_commit, head
    )
    deleted = [p for p in split_z(gone.output) if not named_by(p, named)]
    return Committed(head, split_z(diff.output), deleted, left_out)


@dataclass
class _Plan:
    """What staging will take, found without staging anything."""

    paths: list[str]  # every path the commit would change (tracked changes and new files)
    excluded: list[str]  # pathspecs that leave junk, nested repositories and huge files out
    named_files: list[str]  # untracked files the task names, added even when they look junk


async def _plan(co: Checkout, head: str, named: list[str]) -> _Plan:
    tracked = await co.git("diff", "--name-only", "--no-renames", "-z", head)
    specs = junk_pathspecs()
    others = split_z(
        (await co.git("ls-files", "--others", "--exclude-standard", "-z", "--", ".", *specs)).output
    )
    # A repository the agent cloned or created inside shows as "dir/": never committed (git
    # would make it a link to a repository nobody else has), named or not.
    nested = [p.rstrip("/") for p in others if p.endswith("/")]
    # A huge file is left out before `git add`, which would hash it into the clone for good.
    huge = [p for p in others if not p.endswith("/") and unwanted(p, "100644", co.path, ())]
    specs += [f":(exclude,literal){p}" for p in nested]
    specs += [f":(exclude,literal){p}" for p in huge if not named_by(p, named)]
    wanted = [f":(literal){n.strip('/')}" for n in named if n.strip("/")]
    named_files: list[str] = []
    if wanted:
        listing = await co.git("ls-files", "--others", "-z", "--", *wanted, check=False)
        named_files = [p for p in split_z(listing.output) if not p.endswith("/")]
    new = [p for p in others if not p.endswith("/") and (p not in huge or named_by(p, named))]
    return _Plan(sorted({*split_z(tracked.output), *new, *named_files}), specs, named_files)


async def _stage(co: Checkout, head: str, plan: _Plan) -> None:
    """Stage every tracked change and the untracked files that are work, not junk."""
    await co.git("add", "--update")
    await co.git("add", "--all", "--", ".", *plan.excluded)
    if plan.named_files:
        # Named paths go in even when they look like junk: the task asked for them. Files, not
        # folders: a repository inside a named folder stays out.
        # Not checked: git adds the others and says no to paths .gitignore excludes.
        await co.git_paths("add", paths=plan.named_files, check=False)
    raw = await co.git("diff", "--cached", "--raw", "--no-renames", "--diff-filter=A", "-z", head)
    fields = split_z(raw.output)  # ":old new sha sha A", path, ...
    drop = [path for meta, path in zip(fields[::2], fields[1::2], strict=False)
            if meta.split()[1] == "160000"]  # fmt: skip
    if drop:
        await co.git_paths("rm", "--cached", "-q", "-r", paths=drop)


async def _encodings(co: Checkout, paths: list[str]) -> dict[str, str]:
    """The paths whose `working-tree-encoding` attribute (set by any .gitattributes, the
    agent's too) makes `git add` re-encode them: a secret written as UTF-16 is stored as UTF-8."""
    if not paths:
        return {}
    listing = b"".join(os.fsencode(p) + b"\0" for p in paths)
    res = await co.git("check-attr", "-z", "--stdin", "working-tree-encoding", stdin=listing)
    fields = split_z(res.output)  # path, attribute, value, ...
    return {
        path: value
        for path, value in zip(fields[::3], fields[2::3], strict=False)
        if value not in ("unspecified", "unset", "set")
    }


def _refusal(
    workdir: Path, paths: list[str], named: list[str], encodings: dict[str, str]
) -> str | None:
    """Why these paths cannot be committed: a bad symlink, a secret, a file too large."""
    mask = redactor()
    for path in paths:
        full = workdir / path
        try:
            info = os.lstat(full)
        except OSError:
            continue  # deleted: nothing to read
        # First: the reasons below name the path and a link's target, which may hold it.
        if mask and (encoding := encodings.get(path)) and stat.S_ISREG(info.st_mode):
            # Scanned as git will store it, too.
            try:
                stored = full.read_bytes().decode(encoding).encode()
            except (LookupError, ValueError, OSError):
                return f"{shown(mask(path))} is declared {mask(encoding)}, which cannot be read"
            if mask.found(stored):
                return f"{shown(mask(path))} holds the value of one of the worker's secrets " + (
                    f"(in {mask(encoding)})"
                )
        if mask and _holds_secret(full, path, info, mask):
            # The value is never said, nor its variable: the file is what the person must read.
            return f"{shown(mask(path))} holds the value of one of the worker's secrets " + (
                "(plain or encoded)"
            )
        if (why := bad_symlink(workdir, path)) is not None:
            return why
        if info.st_size > MAX_UNNAMED_BYTES and not named_by(path, named):
            mb = info.st_size // (1024 * 1024)
            return f"{shown(path)} is {mb} MB: too large to commit unless the task names it"
    return None


def _holds_secret(full: Path, path: str, info: os.stat_result, mask: Redactor) -> bool:
    """In the file's name, a link's target, or the file itself (read in chunks, not followed)."""
    if mask.found(os.fsencode(path)):
        return True
    if stat.S_ISLNK(info.st_mode):
        return mask.found(os.fsencode(os.readlink(full)))
    if not stat.S_ISREG(info.st_mode):
        return False
    keep = max(mask.overlap, 1)
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        tail = b""
        while chunk := fh.read(_CHUNK):
            if mask.found(tail + chunk):
                return True
            tail = chunk[-keep:]
    return False
