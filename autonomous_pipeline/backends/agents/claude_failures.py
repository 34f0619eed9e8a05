"""How a Claude Code run failed: classifying what the CLI reports into the kinds the pipeline
acts on (`models.failure`), and when a usage limit lifts. Pure.

The backend hands the failure on as data (`AgentOutcome.failure`). Its error text reads
`"<kind>: <message>[ (resets at <unix>)]"` for people; `parse_failure` classifies error text from
elsewhere (a command agent's output), where no typed failure exists.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from autonomous_pipeline.models.failure import AgentFailure, FailureKind

MESSAGE_CHARS = 1000  # of a failure's message, in an outcome's error


_TEXT_KINDS: tuple[tuple[FailureKind, re.Pattern[str]], ...] = (
    (
        FailureKind.AUTH,
        re.compile(
            r"invalid api key|please run /login|not logged in|authentication[_ ](?:failed|error)"
            r"|failed to authenticate|oauth token (?:has )?(?:expired|revoked)|\b40[13]\b"
            r"|unauthori[sz]ed|credit balance (?:is )?too low|billing_error|disabled organization"
            r"|oauth_org_not_allowed",
            re.IGNORECASE,
        ),
    ),
    (
        FailureKind.OVERLOADED,
        re.compile(r"overloaded|\b529\b|experiencing high load|api is at capacity", re.IGNORECASE),
    ),
    (
        FailureKind.RATE_LIMIT,
        re.compile(
            r"usage limit|rate[ _-]?limit|\b429\b|too many requests|out of (?:extra )?usage"
            r"|(?:hit|reached) your [^.·\n]{0,40}limit",
            re.IGNORECASE,
        ),
    ),
    (FailureKind.MAX_TURNS, re.compile(r"maximum number of turns|max[_ ]turns", re.IGNORECASE)),
    (FailureKind.BUDGET, re.compile(r"maximum budget|max[_ ]budget", re.IGNORECASE)),
)
_SUBTYPE_KINDS = {
    "error_max_turns": FailureKind.MAX_TURNS,
    "error_max_budget_usd": FailureKind.BUDGET,
}
_STATUS_KINDS = {
    401: FailureKind.AUTH,
    403: FailureKind.AUTH,
    429: FailureKind.RATE_LIMIT,
    529: FailureKind.OVERLOADED,
}
# The `error` field of the CLI's synthetic assistant message for an API failure.
_API_ERROR_KINDS = {
    "authentication_failed": FailureKind.AUTH,
    "billing_error": FailureKind.AUTH,
    "oauth_org_not_allowed": FailureKind.AUTH,
    "rate_limit": FailureKind.RATE_LIMIT,
}


def failure_text(result: dict[str, Any]) -> str:
    """What a result line says went wrong (or its answer): `result`, else its `errors`."""
    text = result.get("result")
    if isinstance(text, str) and text.strip():
        return text
    errors = result.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    return str(result.get("subtype") or "")


def classify(result: dict[str, Any] | str, api_error: str | None = None) -> FailureKind:
    """The kind of a failed result line (or of a failure's text).

    Order: the error subtype, the HTTP status the CLI recorded, the text, then `api_error` (the
    `error` field of the assistant message the CLI made for the failure), else OTHER.
    """
    if isinstance(result, dict):
        subtype_kind = _SUBTYPE_KINDS.get(str(result.get("subtype")))
        if subtype_kind is not None:
            return subtype_kind
        status = result.get("api_error_status")
        if isinstance(status, int) and status in _STATUS_KINDS:
            return _STATUS_KINDS[status]
        text = failure_text(result)
    else:
        text = result
    for kind, pattern in _TEXT_KINDS:
        if pattern.search(text):
            return kind
    return _API_ERROR_KINDS.get(api_error or "", FailureKind.OTHER)


_PIPE_RESET = re.compile(r"\|\s*(\d{9,11})\b")
_UNIX_RESET = re.compile(r"resets at (\d{9,11}(?:\.\d+)?)\b")
_PHRASE_RESET = re.compile(
    r"resets\s+(?:at\s+)?(?:(?P<mon>[A-Z][a-z]{2})\s+(?P<day>\d{1,2}),?\s+(?:(?P<year>\d{4}),?\s+)?)?"
    r"(?:at\s+)?(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)"
    r"(?:\s*\((?P<tz>[^)]+)\))?",
    re.IGNORECASE,
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def reset_time(text: str, now: float | None = None) -> float | None:
    """When a usage limit lifts, as a unix time, from the failure's text; None if it does not say.

    Understands "Claude AI usage limit reached|1735689600" (the CLI's old form), "(resets at
    1735689600)" (this module's own encoding) and "You've hit your session limit · resets 3pm
    (Europe/Paris)" or "· resets Jan 5, 3:30pm (UTC)" (the CLI's form since 2.x: the next such
    moment after `now`, in the named zone, UTC when it names none or one this machine lacks).
    """
    for pattern in (_PIPE_RESET, _UNIX_RESET):
        found = pattern.search(text)
        if found:
            return float(found.group(1))
    found = _PHRASE_RESET.search(text)
    if not found:
        return None
    hour, minute = int(found["hour"]) % 12, int(found["minute"] or 0)
    if found["ampm"].lower().startswith("p"):
        hour += 12
    if minute > 59:
        return None
    try:
        zone = ZoneInfo((found["tz"] or "UTC").strip())
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    current = datetime.fromtimestamp(time.time() if now is None else now, zone)
    if found["mon"]:
        month_name = found["mon"].lower()
        if month_name not in _MONTHS:
            return None
        year = int(found["year"] or current.year)
        try:
            moment = datetime(year, _MONTHS.index(month_name) + 1, int(found["day"]), hour, minute)
        except ValueError:
            return None
        moment = moment.replace(tzinfo=zone)
        if not found["year"] and moment < current - timedelta(days=1):
            moment = moment.replace(year=year + 1)  # "Jan 2" said on Dec 30
        return moment.timestamp()
    moment = current.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if moment <= current:
        moment += timedelta(days=1)
    return moment.timestamp()


def describe(failure: AgentFailure) -> str:
    """A failure as an outcome's error text (for people; the failure itself travels typed)."""
    return format_failure(failure.kind, failure.message, failure.reset_at)


def format_failure(kind: FailureKind, message: str, reset_at: float | None = None) -> str:
    """`"rate_limit: You've hit your limit · resets 3pm (UTC) (resets at 1767279600)"`."""
    text = f"{kind.value}: {' '.join(message.split())[:MESSAGE_CHARS]}"
    if reset_at is not None:
        text += f" (resets at {int(reset_at)})"
    return text


_KIND_PREFIX = re.compile(r"^(" + "|".join(k.value for k in FailureKind) + r"): ")


def parse_failure(error: str) -> tuple[FailureKind, float | None]:
    """The kind and reset time encoded in an outcome's error; text from elsewhere is classified."""
    found = _KIND_PREFIX.match(error)
    kind = FailureKind(found.group(1)) if found else classify(error)
    reset = _UNIX_RESET.search(error)
    if reset:
        return kind, float(reset.group(1))
    if kind is FailureKind.RATE_LIMIT and not found:
        return kind, reset_time(error)
    return kind, None
