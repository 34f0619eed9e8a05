"""Fail loud before spending anything: the repository, the base, the target and the agent."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autonomous_pipeline.backends.agents.claude_cli import ClaudeCliAgent
from autonomous_pipeline.backends.base import AgentBackend
from autonomous_pipeline.backends.git import checked_out_branches, git
from autonomous_pipeline.backends.registry import (
    BackendLoadError,
    UnknownBackendError,
    make_agent,
    make_reviewer_agent,
)
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.run import AgentConfig, ReviewerConfig


@dataclass(frozen=True)
class RepoFacts:
    repo: str  # absolute path of the user's repository
    base_ref: str
    base_commit: str
    target_exists: bool


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "plan"


async def check_repo(
    path: Path, base: str | None, target_branch: str, writes_target: bool = True
) -> RepoFacts:
    """Refuse what cannot work, with a hint; never write anything to the user's repository.

    Read with the pipeline's own git (`backends.git`): a GIT_DIR or GIT_WORK_TREE inherited from
    a hook or a shell, or the user's configuration, must not change which repository is read."""
    if not path.is_dir():
        raise UsageError(f"--repo {path}: no such directory")
    where = await git(
        "rev-parse", "--is-bare-repository", "--absolute-git-dir", cwd=path, check=False
    )
    if where.exit_code != 0:
        raise UsageError(f"--repo {path}: not a git repository (git init, or point --repo at one)")
    bare_text, git_dir = where.output.split("\n")[:2]
    bare = bare_text == "true"
    if bare:
        top = Path(git_dir)
    elif path.resolve() == Path(git_dir).resolve():
        top = Path(git_dir).parent  # `--repo r/.git`: the repository at r
    else:
        top = Path(await _read(path, "rev-parse", "--show-toplevel") or path)
    if top.resolve() != path.resolve() and path.resolve() != Path(git_dir).resolve():
        raise UsageError(
            f"--repo {path}: this is inside the repository at {top}; plans name files from a "
            f"repository's top, so pass --repo {top}"
        )
    head = await _read(path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if not head and not await _read(path, "for-each-ref", "--count=1", "refs/heads"):
        # A detached HEAD (a CI checkout) has commits and no branch: that is not this.
        raise UsageError(
            f"--repo {path}: the repository has no commits yet; commit something first"
        )
    spec = base
    if base is None:
        # The checked-out branch by its full name: a tag may share its short one.
        spec = await _read(path, "symbolic-ref", "--quiet", "HEAD")
        base = spec.removeprefix("refs/heads/")
        if not base:
            raise UsageError(f"--repo {path}: HEAD is detached; pass --base BRANCH")
    base_commit = await _read(path, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if not base_commit:
        raise UsageError(f"--base {base}: no such branch or commit in {path}")
    if (
        not re.fullmatch(r"[A-Za-z0-9._/-]+", target_branch)
        or ".." in target_branch
        or target_branch.endswith("/")
    ):
        raise UsageError(f"--target-branch {target_branch!r} is not a valid branch name")
    checked_out = await checked_out_branches(path)
    # (With --publish pr the target is the code host's: this checkout's is never written.)
    if writes_target and target_branch in checked_out and not bare:
        raise UsageError(
            f"--target-branch {target_branch} is checked out in {checked_out[target_branch]}; the pipeline "
            "never writes to a checkout. Pick another --target-branch (the default is pipeline/<plan-name>) "
            "or check out a different branch there."
        )
    exists = bool(
        await _read(path, "rev-parse", "--verify", "--quiet", f"refs/heads/{target_branch}")
    )
    return RepoFacts(
        repo=str(top.resolve()), base_ref=base, base_commit=base_commit, target_exists=exists
    )


async def _read(repo: Path, *args: str) -> str:
    """A read-only git query's output, stripped; empty when git says no."""
    res = await git(*args, cwd=repo, check=False)
    return res.output.strip() if res.exit_code == 0 else ""


async def check_agents(
    agent: AgentConfig, reviewer: ReviewerConfig, isolated: bool = False, on_host: bool = True
) -> None:
    """The configured agent and reviewer must exist and be usable: a missing one is an error, never
    a substitution, and it is found before any task starts or any money is spent.

    `on_host`: some batch runs the worker's own programs (a worktree), so they must be here; in
    a container they are the image's. `isolated`: the agents get credentials only from the
    environment (a sandbox has a HOME of its own)."""
    # Built exactly as the worker builds them, so a bad option fails here and not mid-run.
    roles: list[tuple[str, str, list[str], Callable[[], AgentBackend | None]]] = [
        ("--agent", agent.backend, agent.command, lambda: make_agent(agent)),
        ("--reviewer", reviewer.backend, reviewer.command, lambda: make_reviewer_agent(reviewer)),
    ]
    for role, name, command, build in roles:
        try:
            backend = build()
        except (UnknownBackendError, BackendLoadError) as exc:
            raise UsageError(f"{role}: {exc}") from None
        if backend is None:  # --reviewer none
            continue
        if name == "command":
            flag = "--agent-command" if role == "--agent" else "--reviewer-command"
            if not command:
                raise UsageError(
                    f"{role} command needs {flag} 'PROGRAM ARGS...' ({{prompt_file}} is filled in)"
                )
            found = shutil.which(command[0]) is not None or Path(command[0]).is_file()
            if on_host and not found:
                raise UsageError(f"{flag}: {command[0]!r} not found on PATH")
        if isinstance(backend, ClaudeCliAgent):
            problem = await backend.preflight(isolated=isolated, on_host=on_host)
            if problem:
                raise UsageError(f"{role} claude: {problem}")
