"""Git, run the pipeline's way: no hooks, no prompts, no signing, a fixed identity.

Every git call of the pipeline goes through `git()`, so that the user's own configuration (hooks,
autostash, signing, an editor) never changes what an unattended step does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import shutil
import weakref
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Literal

from autonomous_pipeline.backends import secrets
from autonomous_pipeline.backends._proc import ProcResult, run_process
from autonomous_pipeline.errors import PipelineError

_CONFIG = (
    *("-c", "core.hooksPath=/dev/null"),
    *("-c", "commit.gpgsign=false"),
    *("-c", "tag.gpgsign=false"),
    *("-c", "advice.detachedHead=false"),
    # A user's rebase defaults would make a merge rebase squash, stash or move other branches.
    *("-c", "rebase.autoSquash=false"),
    *("-c", "rebase.autoStash=false"),
    *("-c", "rebase.updateRefs=false"),
    # A repository an agent made inside its checkout (at a submodule's path, say) has a config of
    # its own: git must never step into it, nor run what a config names. Options given with -c
    # reach git's child processes too.
    *("-c", "core.fsmonitor=false"),
    *("-c", "diff.ignoreSubmodules=all"),
    *("-c", "status.submoduleSummary=false"),
    *("-c", "submodule.recurse=false"),
    *("-c", "fetch.recurseSubmodules=false"),
)
# Inherited from a calling hook or shell, these would point git at the user's repository instead.
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
# Outputs are parsed (file lists, logs): keep them whole, not just a tail.
_OUTPUT_CAP = 10_000_000
ERROR_TAIL = 2000
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


class GitError(PipelineError):
    """A git command failed, or the repository is not in a state the pipeline can work with."""

    def __init__(
        self,
        message: str,
        *,
        argv: tuple[str, ...] = (),
        exit_code: int | None = None,
        output: str = "",
    ) -> None:
        self.argv = tuple(redact(a) for a in argv)
        self.exit_code = exit_code
        self.output = redact(output[-ERROR_TAIL:])
        tail = f"\n{self.output.strip()}" if self.output.strip() else ""
        super().__init__(redact(f"{message}{tail}"))


def redact(text: str) -> str:
    """Hide the worker's secrets, and the credentials of URLs like https://user:token@host/repo
    (errors reach the Web UI)."""
    return _USERINFO.sub(r"\1***@", secrets.redact(text))


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    name = os.environ.get("PIPELINE_GIT_NAME") or "Autonomous Pipeline"
    email = os.environ.get("PIPELINE_GIT_EMAIL") or "pipeline@autonomous-pipeline.invalid"
    env |= {
        "GIT_EDITOR": "true",
        "GIT_SEQUENCE_EDITOR": "true",
        "GIT_MERGE_AUTOEDIT": "no",
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
    return env | dict(extra or {})


async def git(
    *args: str,
    cwd: Path,
    check: bool = True,
    timeout_s: float = 300,
    env_extra: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> ProcResult:
    """Run `git args...` in `cwd`; with `check`, a failure or timeout raises GitError."""
    argv = ("git", *_CONFIG, *args)
    res = await run_process(
        argv,
        cwd=cwd,
        env=git_env(env_extra),
        timeout_s=timeout_s,
        tail_chars=_OUTPUT_CAP,
        stdin=stdin,
        # Short-lived, and an orphan only finishes its one command: no parent-death signal,
        # which would cost a slow fork of the whole worker for every git call.
        die_with_parent=False,
        # Its output is data (paths, refs), checked for secrets where it matters (collect);
        # masked, a path holding a secret would read as another path. Errors are masked.
        mask=False,
    )
    if check and not res.ok:
        what = f"timed out after {timeout_s:g}s" if res.timed_out else f"exit {res.exit_code}"
        raise GitError(
            f"git {' '.join(args)} failed ({what}) in {cwd}",
            argv=argv,
            exit_code=res.exit_code,
            output=res.output,
        )
    return res


async def git_paths(
    *args: str,
    paths: list[str],
    cwd: Path,
    check: bool = True,
    env_extra: dict[str, str] | None = None,
) -> ProcResult:
    """`git args...` on `paths`, given on stdin: any number of them, any name."""
    listing = b"".join(p.encode() + b"\0" for p in paths)
    return await git(
        *args, "--pathspec-from-file=-", "--pathspec-file-nul",
        cwd=cwd, check=check, stdin=listing, env_extra=env_extra,
    )  # fmt: skip


async def rev_parse(ref: str, cwd: Path, env_extra: dict[str, str] | None = None) -> str | None:
    """The commit `ref` names, or None when there is no such commit."""
    res = await git(
        "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}",
        cwd=cwd, check=False, env_extra=env_extra,
    )  # fmt: skip
    return res.output.strip() if res.ok else None


async def for_each_ref(cwd: Path, *refs: str) -> dict[str, str]:
    """{ref: the object it names} of those of `refs` that exist, from one git call."""
    res = await git("for-each-ref", "--format=%(refname) %(objectname)", *refs, cwd=cwd)
    found = dict(line.split(" ", 1) for line in res.output.splitlines() if " " in line)
    return {ref: found[ref] for ref in refs if ref in found}


async def is_ancestor(
    ancestor: str, descendant: str, cwd: Path, env_extra: dict[str, str] | None = None
) -> bool:
    res = await git(
        "merge-base", "--is-ancestor", ancestor, descendant,
        cwd=cwd, check=False, env_extra=env_extra,
    )  # fmt: skip
    if res.exit_code in (0, 1):
        return res.exit_code == 0
    raise GitError(
        f"cannot compare {ancestor} with {descendant}",
        argv=res.argv,
        exit_code=res.exit_code,
        output=res.output,
    )


def split_z(output: str) -> list[str]:
    """Paths from a `-z` listing (NUL-separated, so any file name survives)."""
    return [p for p in output.split("\0") if p]


def task_trailer(run_key: str, task_id: str) -> str:
    """The line that marks a task's commit; merges find an earlier merge of the task by it."""
    return f"Pipeline-Task: {run_key}/{task_id}"


def grep_pattern(line: str) -> str:
    """A basic regular expression (git log --grep) that matches exactly `line`, a whole line."""
    return "^" + "".join("\\" + c if c in ".[]*^$\\" else c for c in line) + "$"


def with_trailer(message: str, trailer: str) -> str:
    """`message` ending with the `trailer` line, exactly once."""
    lines = message.rstrip().splitlines()
    if trailer in lines:
        return message.rstrip() + "\n"
    last = message.rstrip().rsplit("\n\n", 1)[-1].splitlines()
    # Join an existing trailer block rather than starting a second one.
    in_block = len(lines) > 1 and all(": " in ln and " " not in ln.split(": ")[0] for ln in last)
    return message.rstrip() + ("\n" if in_block else "\n\n") + trailer + "\n"


# What a compare-and-swap push did: moved the ref, found it already there, or found it moved.
PushResult = Literal["updated", "unchanged", "moved"]


async def push_with_lease(cwd: Path, commit: str, branch: str, expected: str) -> PushResult:
    """Set `origin`'s `branch` to `commit` only if it is still `expected` ("" = must not exist).

    "moved": someone else changed it (re-read and try again). GitError for anything else: no
    permission, a hook said no, the network.
    """
    dst = f"refs/heads/{branch}"
    res = await git(
        "push", "--porcelain", "--no-verify", "origin", f"{commit}:{dst}",
        f"--force-with-lease={dst}:{expected}", cwd=cwd, check=False,
    )  # fmt: skip
    for line in res.output.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1].endswith(f":{dst}"):
            flag, summary = parts[0].strip(), parts[2]
            if flag == "=":  # git reports "up to date" before it looks at the lease
                return "unchanged"
            if flag != "!":
                return "updated"
            if "remote rejected" not in summary and (
                "stale info" in summary or "fetch first" in summary or "non-fast-forward" in summary
            ):
                return "moved"
            raise GitError(f"push to {dst} rejected: {summary}", argv=res.argv, output=res.output)
    raise GitError(
        f"push to {dst} failed", argv=res.argv, exit_code=res.exit_code, output=res.output
    )


async def drop_worktree(clone: Path, wt: Path) -> bool:
    """Unregister and delete `wt`; True if anything was there. Hold the clone's lock."""
    listing = await git("worktree", "list", "--porcelain", cwd=clone)
    registered = any(
        line.startswith("worktree ") and Path(line[9:]).resolve() == wt.resolve()
        for line in listing.output.splitlines()
    )
    if registered:
        # Twice forced: also a worktree whose creation crashed and left it locked.
        await git("worktree", "remove", "--force", "--force", str(wt), cwd=clone, check=False)
    existed = registered or wt.exists()
    if wt.exists():
        await asyncio.to_thread(shutil.rmtree, wt, ignore_errors=True)
    await git("worktree", "prune", cwd=clone)
    return existed


async def checked_out_branches(repo: Path) -> dict[str, str]:
    """{branch: the working tree it is checked out in} of a local repository. Read-only."""
    res = await git("worktree", "list", "--porcelain", cwd=repo, check=False)
    found: dict[str, str] = {}
    tree = ""
    for line in res.output.splitlines():
        if line.startswith("worktree "):
            tree = line.removeprefix("worktree ")
        elif line.startswith("branch refs/heads/"):
            found[line.removeprefix("branch refs/heads/")] = tree
    return found


async def refuse_checked_out(repo: str, branch: str) -> None:
    """Raise if a local repository has `branch` checked out in one of its working trees.

    Read-only. git refuses such a push by default, but with `receive.denyCurrentBranch=updateInstead`
    it would rewrite the user's files.
    """
    path = Path(repo)
    if not (path.is_absolute() and path.is_dir()):
        return  # a URL: no working tree of the user's on this machine
    if branch in await checked_out_branches(path):
        raise GitError(
            f"{branch} is checked out in {repo}: the pipeline never moves a branch under"
            " someone's working tree; choose another target branch"
        )


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def repo_lock(lock_file: Path) -> AsyncIterator[None]:
    """Exclusive use of a shared repository's refs and worktree list.

    The asyncio lock queues the coroutines of this process; the flock excludes other processes that
    share the workspace. flock (unlike lockf) also excludes a second descriptor in this process, so
    two sandbox objects stay correct; polling keeps the event loop free and the wait cancellable.
    """
    locks = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    async with locks.setdefault(lock_file, asyncio.Lock()):
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.02)
            yield
        finally:
            os.close(fd)  # releases the flock
