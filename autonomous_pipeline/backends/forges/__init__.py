"""Code hosts by name: built-ins and plugins, found the same way as agents.

A plugin registers a class taking (ForgeConfig, token):

    [project.entry-points."autonomous_pipeline.forges"]
    gitea = "my_package.gitea:GiteaForge"
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from importlib.metadata import entry_points
from typing import cast

from autonomous_pipeline.backends.forges.base import Forge, ForgeError
from autonomous_pipeline.models.forge import ForgeConfig

GROUP = "autonomous_pipeline.forges"
BUILTIN_FORGES = {"github": "autonomous_pipeline.backends.forges.github:GitHubForge"}
TOKEN_ENV = "GITHUB_TOKEN"


def forge_names() -> list[str]:
    return sorted({*BUILTIN_FORGES, *(ep.name for ep in entry_points(group=GROUP))})


def make_forge(config: ForgeConfig, token: str) -> Forge:
    targets = {ep.name: ep.value for ep in entry_points(group=GROUP)} | BUILTIN_FORGES
    target = targets.get(config.kind)
    if target is None:
        raise ForgeError(f"unknown forge {config.kind!r}; known: {', '.join(forge_names())}")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cast(Forge, cls(config, token))


def forge_token() -> str | None:
    """The code host's token: GITHUB_TOKEN, else what `gh auth token` prints. Put in the
    environment when found there, so it is masked like every secret of the worker's."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    gh = shutil.which("gh")
    if gh is None:
        return None
    try:
        out = subprocess.run(
            [gh, "auth", "token"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    token = out.stdout.strip()
    if out.returncode != 0 or not token:
        return None
    os.environ[TOKEN_ENV] = token
    return token
