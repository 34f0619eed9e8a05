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
import re
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
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


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
    head, branch = await _head(co)
    # An agent that committed nothing left HEAD at the base: no ancestry to check.
    if head is None or (head != base_commit and not await co.is_ancestor(base_commit, head)):
        return Committed(
            rejected=f"HEAD {head or '(none)'} does not descend from the task's base "
            f"{base_commit[:12]}: the agent rewrote history (amend, reset or rebase)"
        )
    named = list(named)
    mask = redactor()  # what it says is written to the transcript: a name may hold a secret
    removed = [f"{shown(mask(p))} (not a file: removed)" for p in scrub_special_files(co.path)]
    plan = await _plan(co, named)
    committed: list[str] = []
    if head != base_commit:
        listing = await co.git("diff", "--name-only", "--no-renames", "-z", base_commit, head)
        committed = split_z(listing.output)
    paths = sorted({*plan.paths, *committed})
    # Encodings matter only to the secret scan: with no secret to look for, git is not asked.
    encodings = await _encodings(co, paths) if mask else {}
    if why := _refusal(co.path, paths, named, encodings):
        return Committed(rejected=why, left_out=removed)
    staged = await _stage(co, head, plan)
    left = await co.git("ls-files", "--others", "--exclude-standard", "--directory", "-z")
    left_out = removed + [
        f"{shown(mask(p))} ({junk_reason(p, co.path)})" for p in split_z(left.output)
    ]
    trailer = task_trailer(task.run_key, task.task_id)
    msg = with_trailer(message, trailer)
    if staged:
        new = await _commit_index(co, head, msg)
        if new is not None:
            head = new
        else:
            staged = False  # nothing differed from HEAD after all (a staged change undone)
    if head == base_commit:
        return Committed(left_out=left_out)
    raw = await co.git("diff", "--raw", "--no-renames", "-z", base_commit, head)
    changes = _raw_changes(raw.output)
    if not changes:  # changes that cancel out: a no-op
        return Committed(left_out=left_out)
    if not staged:
        # The agent committed everything itself: mark the task's tip so merges can find it.
        body = await co.git("show", "--no-patch", "--format=%B", head)
        if trailer not in body.output.splitlines():
            await co.git("commit", "--quiet", "--no-verify", "--allow-empty", "-m", msg)
            head = await co.head() or head
    if branch != f"refs/heads/{task.branch}":
        # The agent switched branches or detached HEAD: its work becomes the task branch.
        await co.git("update-ref", f"refs/heads/{task.branch}", head)
        await co.git("symbolic-ref", "HEAD", f"refs/heads/{task.branch}")
    deleted = [p for p, status in changes if status == "D" and not named_by(p, named)]
    return Committed(head, [p for p, _ in changes], deleted, left_out)


async def _head(co: Checkout) -> tuple[str | None, str]:
    """The checkout's HEAD commit (None: none) and what HEAD names ("HEAD" when detached), from
    one git call."""
    res = await co.git("rev-parse", "HEAD", "--symbolic-full-name", "HEAD", check=False)
    lines = res.output.split()
    if not res.ok or len(lines) != 2 or not _SHA.fullmatch(lines[0]):
        return None, ""
    return lines[0], lines[1]


def _raw_changes(output: str) -> list[tuple[str, str]]:
    """(path, status letter) from `git diff --raw -z`: ":modes shas STATUS", path, ..."""
    fields = split_z(output)
    return [
        (path, meta.split()[-1][:1]) for meta, path in zip(fields[::2], fields[1::2], strict=False)
    ]


@dataclass
class _Plan:
    """What staging will take, found without staging anything."""

    tracked: list[str]  # tracked paths whose file differs from HEAD (or whose index does)
    new: list[str]  # untracked files that are work: neither junk nor nested repositories
    named_files: list[str]  # untracked files the task names, added even when they look junk

    @property
    def paths(self) -> list[str]:
        """Every path the commit would change."""
        return sorted({*self.tracked, *self.new, *self.named_files})


async def _plan(co: Checkout, named: list[str]) -> _Plan:
    # Index or file differing from HEAD: what the agent changed, staged or not.
    status = await co.git(
        "status", "--porcelain=v2", "-z", "--untracked-files=no", "--no-renames",
        "--ignore-submodules=all",
    )  # fmt: skip
    tracked = [_status_path(entry) for entry in split_z(status.output) if entry[:1] in "1u"]
    specs = junk_pathspecs()
    others = split_z(
        (await co.git("ls-files", "--others", "--exclude-standard", "-z", "--", ".", *specs)).output
    )
    # A repository the agent cloned or created inside shows as "dir/": never committed (git
    # would make it a link to a repository nobody else has), named or not. A huge file is left
    # out before `git add`, which would hash it into the clone for good.
    files = [p for p in others if not p.endswith("/")]
    new = [p for p in files if not unwanted(p, "100644", co.path, named)]
    named_files: list[str] = []
    wanted = [n.strip("/") for n in named if n.strip("/")]
    if wanted and not _all_listed(co.path, wanted, set(files)):
        # Named files git did not list as work (junk, ignored, or a folder or glob to expand).
        listing = await co.git(
            "--literal-pathspecs", "ls-files", "--others", "-z", "--", *wanted, check=False
        )
        named_files = [p for p in split_z(listing.output) if not p.endswith("/")]
    return _Plan(tracked, new, named_files)


async def _commit_index(co: Checkout, head: str, message: str) -> str | None:
    """Commit what is staged on top of `head` and move HEAD (its branch, or itself when
    detached) there, by compare-and-swap: the new commit, or None when the index holds exactly
    `head`'s tree. Plumbing, not `git commit`, which would read every file's state once more
    (a tenth of a second on 50,000 files) for what `git add` has just written."""
    tree = (await co.git("write-tree")).output.strip()
    if tree == (await co.git("rev-parse", f"{head}^{{tree}}")).output.strip():
        return None
    made = await co.git(
        "commit-tree", tree, "-p", head, "-F", "-", stdin=_cleaned(message).encode()
    )
    new = made.output.strip()
    subject = message.strip().splitlines()[0] if message.strip() else "commit"
    await co.git("update-ref", "-m", f"commit: {subject}", "HEAD", new, head)
    return new


def _cleaned(message: str) -> str:
    """`message` as `git commit --cleanup=whitespace` stores it: trailing spaces and leading or
    trailing blank lines gone, runs of blank lines made one, a newline at the end."""
    lines = [line.rstrip() for line in message.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def _status_path(entry: str) -> str:
    """The path of a `git status --porcelain=v2` entry: after 8 fields ("1", changed) or 10
    ("u", unmerged); a path may hold spaces."""
    return entry.split(" ", 10 if entry.startswith("u") else 8)[-1]


def _all_listed(workdir: Path, wanted: list[str], listed: set[str]) -> bool:
    """Whether every named path is a file git listed as work already, or nothing at all: then
    asking git for the named ones would find nothing more. (A tracked file or a folder named
    is not known here: git is asked.)"""
    for name in wanted:
        if name in listed:
            continue
        try:
            os.lstat(workdir / name)
        except OSError:
            continue  # named, not made (or a glob, which git takes literally): nothing to add
        return False
    return True


async def _stage(co: Checkout, head: str, plan: _Plan) -> bool:
    """Stage every change of `plan`, by name: what the agent staged itself is replaced by
    what its files hold. Whether anything was staged."""
    work = sorted({*plan.tracked, *plan.new})
    if work:
        await co.git_paths("--literal-pathspecs", "add", "--all", paths=work)
    if plan.named_files:
        # Named paths go in even when they look like junk: the task asked for them. Files, not
        # folders: a repository inside a named folder stays out.
        # Not checked: git adds the others and says no to paths .gitignore excludes.
        await co.git_paths("--literal-pathspecs", "add", paths=plan.named_files, check=False)
    # A tracked file the agent replaced with a repository of its own would be staged as a link
    # to it (mode 160000): never. Only a path that is now a folder can be one.
    if any(_is_dir(co.path / p) for p in work):
        raw = await co.git(
            "diff", "--cached", "--raw", "--no-renames", "--diff-filter=A", "-z", head
        )
        fields = split_z(raw.output)  # ":old new sha sha A", path, ...
        drop = [path for meta, path in zip(fields[::2], fields[1::2], strict=False)
                if meta.split()[1] == "160000"]  # fmt: skip
        if drop:
            await co.git_paths("rm", "--cached", "-q", "-r", paths=drop)
    return bool(work or plan.named_files)


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


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
