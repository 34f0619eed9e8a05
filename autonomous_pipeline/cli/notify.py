"""`--notify`: the receivers a run tells of its events, checked before anything starts."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from autonomous_pipeline.activities.notify import ENV_PREFIX
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.notify import NotifyConfig

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def notify_config(urls: list[str]) -> NotifyConfig | None:
    """The run's receivers; a URL that cannot be one is refused with why."""
    for url in urls:
        if url.startswith(ENV_PREFIX):
            if not ENV_NAME.fullmatch(url.removeprefix(ENV_PREFIX)):
                raise UsageError(f"--notify {url}: env: takes a variable name (env:SLACK_WEBHOOK)")
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--notify {url}: not an http(s) URL or env:NAME")
        if parts.username or parts.password:
            # The run's input is kept in its history, readable by whoever reads the server.
            raise UsageError(
                f"--notify: a URL with credentials in it would be kept in the run's history; "
                f"put it in the workers' environment and pass env:NAME ({parts.hostname})"
            )
    return NotifyConfig(urls=list(dict.fromkeys(urls))) if urls else None
