"""Collect a task's change: commit what the agent left in its checkout, checked first.

The pipeline is the only committer. Tracked changes are committed; untracked files too, except
junk the task does not name (`changes`). The change is rejected, and nothing committed, when the
checkout's `.git` pointer is gone or rewritten, when HEAD no longer descends from the task's base
(the agent amended, reset or rebased it), when a symlink leads out of the repository or into
`.git`, or when a file holds the value of one of the worker's secrets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from backends.git import split_z, task_trailer, with_trailer
from backends.secrets import redactor
from backends.workspace.changes import (
    bad_symlink,
    junk_pathspecs,
    junk_reason,
    named_by,
    unwanted,
)
from backends.workspace.checkout import Checkout
from backends.workspace.layout import TaskRef

# Files larger than this are not read for secrets: they are generated data, and junk rules
# keep unnamed ones out anyway.
_SCAN_BYTES = 50 * 1024 * 1024


@dataclass
class Committed:
    """What `collect` made of the agent's leftovers."""

    commit: str | None = None  # the task's tip; None: nothing changed
    changed: list[str] = field(default_factory=list)  # since the base
    deleted: list[str] = field(default_factory=list)  # since the base, not named by the task
    left_out: list[str] = field(default_factory=list)  # untracked junk, with the reason
    rejected: str | None = None  # why the change cannot be taken (nothing was committed)


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
    trailer = task_trailer(task.run_key, task.task_id)
    msg = with_trailer(message, trailer)
    await _stage(co, head, named)
    left = await co.git("ls-files", "--others", "--exclude-standard", "--directory", "-z")
    left_out = [f"{p} ({junk_reason(p, co.path)})" for p in split_z(left.output)]
    staged = await co.git("diff", "--cached", "--name-only", "--no-renames", "-z", head)
    committed = await co.git("diff", "--name-only", "--no-renames", "-z", base_commit, head)
    touched = sorted(set(split_z(staged.output)) | set(split_z(committed.output)))
    if (why := _refusal(co.path, touched)) is not None:
        await co.git("reset", "--quiet")
        return Committed(rejected=why, left_out=left_out)
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


def _refusal(workdir: Path, paths: list[str]) -> str | None:
    """Why these changed paths cannot be committed: a bad symlink, or a secret in a file."""
    for path in paths:
        if (why := bad_symlink(workdir, path)) is not None:
            return why
    mask = redactor()
    if not mask:
        return None
    for path in paths:
        full = workdir / path
        try:
            if full.is_symlink() or not full.is_file() or full.stat().st_size > _SCAN_BYTES:
                continue
            data = full.read_bytes()
        except OSError:
            continue
        if mask.found(data):
            # The value is never said, nor its variable: the file is what the person must read.
            return f"{path} holds the value of one of the worker's secrets (plain or encoded)"
    return None


async def _stage(co: Checkout, head: str, named: list[str]) -> None:
    """Stage every tracked change and the untracked files that are work, not junk."""
    await co.git("add", "--update")
    specs = junk_pathspecs()
    others = await co.git("ls-files", "--others", "--exclude-standard", "-z", "--", ".", *specs)
    # A repository the agent cloned or created inside shows as "dir/": git would add it as a
    # submodule link, or refuse the whole add when it has no commit yet.
    untracked = split_z(others.output)
    nested = [p.rstrip("/") for p in untracked if p.endswith("/")]
    # A huge file is left out before `git add`, which would hash it into the clone for good.
    huge = [p for p in untracked if not p.endswith("/") and unwanted(p, "100644", co.path, ())]
    specs += [f":(exclude,literal){p}" for p in nested + huge if not named_by(p, named)]
    await co.git("add", "--all", "--", ".", *specs)
    # Named paths go in even when they look like junk: the task asked for them.
    wanted = [n.strip("/") for n in named if n.strip("/") and (co.path / n.strip("/")).exists()]
    if wanted:
        # Not checked: git adds the others and says no to paths .gitignore excludes.
        await co.git_paths("add", paths=wanted, check=False)
    raw = await co.git("diff", "--cached", "--raw", "--no-renames", "--diff-filter=A", "-z", head)
    fields = split_z(raw.output)  # ":old new sha sha A", path, ...
    drop = [
        path
        for meta, path in zip(fields[::2], fields[1::2], strict=False)
        if unwanted(path, meta.split()[1], co.path, named)
    ]
    if drop:
        await co.git_paths("rm", "--cached", "-q", "-r", paths=drop)
