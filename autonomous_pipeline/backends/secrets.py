"""What of the worker's environment reaches agents, and which values are masked wherever they show.

Agents, reviewers and verification commands (which run code the agent wrote) get a minimal
environment: `BASE_ENV`, plus the variables a run names with `--agent-env` (their values are read
on the worker; only the names travel in workflow history). Everything else the worker has (cloud
keys, tokens, the API key of another backend) stays out.

Secret values are masked as `***` in transcripts, process output, logs, activity results,
failures and heartbeats, as they are and in the encodings an agent might print them in (base64 at
any alignment, hex). A value is secret when its variable is listed in `PIPELINE_SECRET_ENV`
(comma-separated), or when its name looks like a credential (`SECRET_NAME`) and the value looks
like one too: long enough, and not a plain word (`POSTGRES_PASSWORD=postgres` is a default, and
masking "postgres" everywhere would garble the text it appears in).
"""

from __future__ import annotations

import base64
import builtins
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

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


def _looks_like_a_credential(value: str) -> bool:
    """Long enough, and made of at least two kinds of character (letters, digits, others)."""
    kinds = (str.isalpha, str.isdigit, lambda c: not c.isalnum())
    return len(value) >= MIN_GUESSED and sum(any(k(c) for c in value) for k in kinds) >= 2


def secret_items(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{value: variable name} of every secret in `environ`."""
    environ = os.environ if environ is None else environ
    named = set(env_names(environ.get(SECRET_ENV_SETTING, "")))
    return {
        value: key
        for key, value in environ.items()
        if key != SECRET_ENV_SETTING
        and (
            (key in named and len(value) >= MIN_NAMED)
            or (SECRET_NAME.search(key) and _looks_like_a_credential(value))
        )
    }


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values to mask, longest first (so a secret containing another is masked whole)."""
    return sorted(secret_items(environ), key=len, reverse=True)


def encoded_forms(secret: str) -> set[str]:
    """How `secret` may look once an agent encodes it: reversed, hex, and base64 and base32 at
    each alignment it can have inside a longer encoded text (only the characters that depend on
    the secret's bytes alone, so the form is found whatever surrounds it). What is compressed,
    encrypted or cut in pieces is not found: no scan can find everything an agent that holds a
    secret can do with it; this finds what an agent does by accident or by habit."""
    raw = secret.encode()
    forms = {secret[::-1], raw.hex(), raw.hex().upper()}
    for encode, group, bits in ((base64.b64encode, 3, 6), (base64.b32encode, 5, 5)):
        for pad in range(group):
            full = encode(b"\0" * pad + raw).decode()
            start, end = -(-8 * pad // bits), 8 * (pad + len(raw)) // bits
            if end - start >= MIN_NAMED:
                forms.add(full[start:end])
    return forms


class Redactor:
    """Masks a fixed set of secret values in text and bytes."""

    def __init__(self, secrets: Iterable[str]) -> None:
        plain = {s for s in secrets if s}
        # Encoded forms are masked like the value itself: base64 of a key is the key.
        self.secrets = sorted(
            plain | {f for s in plain for f in encoded_forms(s)}, key=len, reverse=True
        )
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

    def found(self, data: builtins.bytes) -> bool:
        """Whether `data` holds a secret, in any of the forms masked."""
        return any(value in data for value in self._raw)

    def deep(self, value: Any) -> Any:
        """`value` with every string in it masked, keys too, however deep (a payload's JSON, a
        log line's fields). Numbers stay numbers: a secret of digits replaced inside one would
        leave a payload nobody can decode. Anything else is masked as the text it is written
        as, where that holds a secret."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.deep(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        text = value.decode(errors="replace") if isinstance(value, builtins.bytes) else str(value)
        return self(text) if self.found(text.encode()) else value

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
