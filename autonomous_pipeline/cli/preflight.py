"""Fail loud before spending anything: the repository, the base, the target and the agent."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git

from autonomous_pipeline.backends.agents.claude_cli import ClaudeCliAgent
from autonomous_pipeline.backends.base import AgentBackend
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


def check_repo(path: Path, base: str | None, target_branch: str) -> RepoFacts:
    """Refuse what cannot work, with a hint; never write anything to the user's repository."""
    if not path.exists():
        raise UsageError(f"--repo {path}: no such directory")
    try:
        repo = git.Repo(path, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UsageError(
            f"--repo {path}: not a git repository (git init, or point --repo at one)"
        ) from None
    try:
        repo.head.commit  # noqa: B018 - raises on an empty repository
    except ValueError:
        if not repo.heads:
            raise UsageError(
                f"--repo {path}: the repository has no commits yet; commit something first"
            ) from None
    if base is None:
        if repo.head.is_detached:
            raise UsageError(f"--repo {path}: HEAD is detached; pass --base BRANCH")
        base = repo.active_branch.name
    try:
        base_commit = repo.git.rev_parse("--verify", "--quiet", f"{base}^{{commit}}")
    except git.GitCommandError:
        raise UsageError(f"--base {base}: no such branch or commit in {path}") from None
    if (
        not re.fullmatch(r"[A-Za-z0-9._/-]+", target_branch)
        or ".." in target_branch
        or target_branch.endswith("/")
    ):
        raise UsageError(f"--target-branch {target_branch!r} is not a valid branch name")
    checked_out = _checked_out_branches(repo)
    if target_branch in checked_out and not repo.bare:
        raise UsageError(
            f"--target-branch {target_branch} is checked out in {checked_out[target_branch]}; the pipeline "
            "never writes to a checkout. Pick another --target-branch (the default is pipeline/<plan-name>) "
            "or check out a different branch there."
        )
    exists = any(h.name == target_branch for h in repo.heads)
    top = Path(repo.working_tree_dir or repo.git_dir).resolve()
    return RepoFacts(repo=str(top), base_ref=base, base_commit=base_commit, target_exists=exists)


def _checked_out_branches(repo: git.Repo) -> dict[str, str]:
    out: dict[str, str] = {}
    current = ""
    for line in repo.git.worktree("list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            current = line[len("worktree ") :]
        elif line.startswith("branch refs/heads/"):
            out[line[len("branch refs/heads/") :]] = current
    return out


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
