"""What of the worker's environment reaches agents, and which values are masked wherever they show.

Agents, reviewers and verification commands (which run code the agent wrote) get a minimal
environment: `BASE_ENV`, plus the variables a run names with `--agent-env` (their values are read
on the worker; only the names travel in workflow history). Everything else the worker has (cloud
keys, tokens, the API key of another backend) stays out.

Secret values are masked as `***` in transcripts, process output, logs, activity results,
failures and heartbeats. A value is secret when its variable's name looks like a credential
(`SECRET_NAME`) or is listed in `PIPELINE_SECRET_ENV` (comma-separated), and it is long enough
that masking it cannot garble ordinary text.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping

BASE_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
    "TZ",
)
SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|DSN", re.IGNORECASE
)
SECRET_ENV_SETTING = "PIPELINE_SECRET_ENV"
MASK = "***"
# Shorter values would mask ordinary words; a named secret is trusted a little shorter.
MIN_GUESSED = 8
MIN_NAMED = 6
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_names(text: str | Iterable[str] | None) -> list[str]:
    """Variable names from a comma/space-separated setting or a list; raises on a bad name."""
    if text is None:
        return []
    parts = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    names = [p.strip() for p in parts if p.strip()]
    for name in names:
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
    return list(dict.fromkeys(names))


def agent_env(
    names: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of an agent's process: the base allow-list plus `names`, where set."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in (*BASE_ENV, *names) if k in environ}


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values to mask, longest first (so a secret containing another is masked whole)."""
    environ = os.environ if environ is None else environ
    named = set(env_names(environ.get(SECRET_ENV_SETTING, "")))
    values = {
        value
        for key, value in environ.items()
        if key != SECRET_ENV_SETTING
        and (
            (key in named and len(value) >= MIN_NAMED)
            or (SECRET_NAME.search(key) and len(value) >= MIN_GUESSED)
        )
    }
    return sorted(values, key=len, reverse=True)


class Redactor:
    """Masks a fixed set of secret values in text and bytes."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        # In JSON (payloads) a value with quotes or backslashes appears escaped.
        forms = {s.encode() for s in self.secrets} | {
            json.dumps(s, ensure_ascii=False)[1:-1].encode() for s in self.secrets
        }
        self._raw = sorted(forms, key=len, reverse=True)
        # A secret split across two chunks of a stream is found if this much is held back.
        self.overlap = max((len(s) for s in self.secrets), default=1) - 1

    def __call__(self, text: str) -> str:
        for value in self.secrets:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def bytes(self, data: bytes) -> bytes:
        for value in self._raw:
            if value in data:
                data = data.replace(value, MASK.encode())
        return data

    def __bool__(self) -> bool:
        return bool(self.secrets)


@functools.lru_cache(maxsize=4)
def _cached(items: frozenset[tuple[str, str]]) -> Redactor:
    return Redactor(secret_values(dict(items)))


def redactor(extra: Mapping[str, str] | None = None) -> Redactor:
    """The worker's secrets (its environment), plus credential-like values of `extra`."""
    env = dict(os.environ) | dict(extra or {})
    return _cached(frozenset(env.items()))


def redact(text: str) -> str:
    return redactor()(text)
