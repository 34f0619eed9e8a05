"""`--notify`: the receivers a run tells of its events, checked before anything starts.

A receiver's URL is recorded in the run's input, so in its history, readable by whoever reads
the server. A URL that is itself a credential (a chat service's incoming webhook, a user and
password, a token in its query) is refused, with the way to keep it out: `env:NAME`, the URL in
the workers' variable NAME."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from autonomous_pipeline.activities.notify import ENV_PREFIX
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.notify import NotifyConfig

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Services whose incoming-webhook URL is the only secret it takes.
SECRET_HOSTS = re.compile(
    r"(^|\.)(hooks\.slack(-gov)?\.com|discord(app)?\.com|webhook\.office\.com|"
    r"chat\.googleapis\.com|hooks\.zapier\.com|outlook\.office\.com)$",
    re.IGNORECASE,
)
SECRET_PARAM = re.compile(r"token|key|secret|sig|auth|code|pass", re.IGNORECASE)


def notify_config(urls: list[str]) -> NotifyConfig | None:
    """The run's receivers; a URL that cannot be one, or would put a secret in the history, is
    refused with why."""
    for url in urls:
        check_receiver(url)
    return NotifyConfig(urls=list(dict.fromkeys(urls))) if urls else None


def check_receiver(url: str) -> None:
    if url.startswith(ENV_PREFIX):
        if not ENV_NAME.fullmatch(url.removeprefix(ENV_PREFIX)):
            raise UsageError(f"--notify {url}: env: takes a variable name (env:SLACK_WEBHOOK_URL)")
        return
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise UsageError(f"--notify {url!r}: a URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is no number raises here, not at the first send)
    except ValueError as exc:
        raise UsageError(f"--notify {url}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--notify {url}: not an http(s) URL or env:NAME")
    keep_out = "put it in the workers' environment and pass --notify env:NAME"
    if parts.username or parts.password:
        raise UsageError(
            f"--notify: a URL with credentials in it would be kept in the run's history; {keep_out}"
        )
    if SECRET_HOSTS.search(parts.hostname):
        raise UsageError(
            f"--notify: a {parts.hostname} webhook URL is a credential and would be kept in the "
            f"run's history; {keep_out}"
        )
    if any(SECRET_PARAM.search(name) for name, _ in parse_qsl(parts.query)):
        raise UsageError(
            f"--notify: a URL with a token in its query would be kept in the run's history; "
            f"{keep_out}"
        )
