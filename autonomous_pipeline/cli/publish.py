"""--publish pr: which remote and code host a run publishes to, checked before anything starts.

The run then works from the host's remote (`RunOptions.repo` is its URL): tasks start from the
target branch as the host has it, so each sees what the PRs before it merged there. The user's
checkout is only read, for the remote's URL.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from autonomous_pipeline.backends.forges import TOKEN_ENV, forge_token, make_forge
from autonomous_pipeline.backends.forges.base import ForgeError
from autonomous_pipeline.config import Settings
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.forge import ForgeConfig

# git@github.com:owner/name.git, https://github.example/owner/name, ssh://git@host/owner/name
_OWNER_NAME = re.compile(r"[:/]([^/:]+)/([^/]+?)(?:\.git)?/?$")


def remote_url(repo: Path, remote: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "remote", "get-url", "--", remote],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    url = out.stdout.strip()
    if out.returncode != 0 or not url:
        raise UsageError(
            f"--publish pr: {repo} has no remote {remote!r} to push task branches to "
            "(add one, or name another with --remote)"
        )
    if urlsplit(url).password is not None or re.match(r"^[a-z+]+://[^/@]+:[^/@]*@", url):
        # The URL goes into the run's input, which the pipeline acts on and never masks.
        raise UsageError(
            f"--publish pr: the URL of remote {remote!r} carries a password or token; the "
            "run would record it. Remove it from the URL and let git's credential helper "
            "give it (`gh auth setup-git`, or `git config credential.helper store`)"
        )
    return url


def repository_of(url: str) -> str | None:
    """owner/name from a remote's URL, when it has that shape."""
    m = _OWNER_NAME.search(url)
    return f"{m.group(1)}/{m.group(2)}" if m else None


async def forge_config(settings: Settings, repo: Path) -> tuple[str, ForgeConfig]:
    """(the remote's URL, the code host's settings), the token and its permission checked."""
    url = remote_url(repo, settings.remote)
    repository = settings.forge_repo or repository_of(url)
    if repository is None:
        raise UsageError(
            f"--publish pr: cannot tell the repository on the code host from {url!r}: "
            "name it with --forge-repo OWNER/NAME"
        )
    config = ForgeConfig(
        api_url=settings.forge_url,
        repository=repository,
        merge_method=settings.merge_method,
        require_checks=settings.require_checks,
        poll_s=settings.pr_poll,
    )
    token = forge_token()
    if token is None:
        raise UsageError(
            f"--publish pr: no token for the code host: set {TOKEN_ENV} (or `gh auth login`)"
        )
    try:
        refused = await make_forge(config, token).can_publish()
    except ForgeError as exc:
        refused = str(exc)
    if refused is not None:
        raise UsageError(f"--publish pr: {refused}")
    return url, config
