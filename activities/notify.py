"""Tell people of an event: a POST of the notice to each webhook of the run (--notify).

Slack's incoming webhooks (hooks.slack.com) get Slack's JSON (`text`, in Slack's link markup);
any other URL gets the notice as plain JSON, which carries `text` too (Mattermost, Rocket.Chat
and Discord-style bridges read that). Each receiver is told once per event: the receivers that
took it are recorded in the heartbeat, so a retry after one of them failed (or after the worker
died) sends only to the rest. A receiver whose answer was lost may see the event twice; its
`id` (also the `Idempotency-Key` header) says it is the same one.
"""

from __future__ import annotations

import hashlib
import os
import re
from urllib.parse import urlsplit

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.models.activity_refs import NOTIFY
from autonomous_pipeline.models.notify import Notice, NotifyIn, NotifyOut

ENV_PREFIX = "env:"
SLACK_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})
TIMEOUT_S = 10.0
NOT_DELIVERABLE = "NotificationRefused"


class MissingVariable(LookupError):
    """An `env:NAME` receiver on a worker without NAME."""


def resolve(url: str) -> str:
    """The URL to post to: `env:NAME` is the worker's variable NAME."""
    if not url.startswith(ENV_PREFIX):
        return url
    name = url.removeprefix(ENV_PREFIX)
    value = os.environ.get(name, "").strip()
    if not value:
        raise MissingVariable(f"--notify {url}: this worker has no {name} in its environment")
    return value


def receiver_key(url: str) -> str:
    """A receiver as the heartbeat records it: never the URL, which may hold a secret."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def body_for(url: str, notice: Notice) -> dict[str, object]:
    if (urlsplit(url).hostname or "") in SLACK_HOSTS:
        return {"text": slack_text(notice)}
    return {**notice.model_dump(mode="json"), "text": plain_text(notice)}


# What chat bridges turn into a ping of everyone: an agent's words (a task's error) must not.
MENTION = re.compile(r"([@!])(?=(here|channel|all|everyone)\b)", re.IGNORECASE)


def plain_text(notice: Notice) -> str:
    text = "\n".join(part for part in (notice.title, notice.text) if part)
    text = MENTION.sub("\\1\u200b", text).replace("<!", "<\u200b!")
    return text + (f"\n{notice.link}" if notice.link else "")


def slack_text(notice: Notice) -> str:
    def esc(s: str) -> str:  # Slack's markup: &, < and > are its own
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    link = f"\n<{notice.link}|Open in the Temporal Web UI>" if notice.link else ""
    return f"*{esc(notice.title)}*\n{esc(notice.text)}{link}"


class NotifyActivities:
    @activity.defn(name=NOTIFY.name)
    async def notify(self, inp: NotifyIn) -> NotifyOut:
        # Receivers dealt with by earlier attempts: told, or refusing for good.
        done: set[str] = set()
        details = activity.info().heartbeat_details  # decoded already: a list of keys
        if details and isinstance(details[0], list):
            done = {str(k) for k in details[0]}
        again: list[str] = []  # worth another attempt
        refused: list[str] = []  # not
        sent = 0
        async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as client:
            for i, raw in enumerate(inp.urls, 1):
                key = receiver_key(raw)
                if key in done:
                    continue
                try:
                    url = resolve(raw)
                except MissingVariable as exc:  # this worker lacks it; another may not
                    again.append(f"receiver {i}: {exc}")
                    continue
                try:
                    answer = await client.post(
                        url,
                        json=body_for(url, inp.notice),
                        headers={"Idempotency-Key": inp.notice.id},
                    )
                except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
                    # It will never be a URL (an env: value checked by nobody): said by kind
                    # only, as its text may hold the URL.
                    refused.append(f"receiver {i}: not a URL ({type(exc).__name__})")
                    done.add(key)
                    continue
                except httpx.HTTPError as exc:
                    again.append(f"receiver {i}: {type(exc).__name__}")
                    continue
                if answer.is_success:
                    sent += 1
                    done.add(key)
                elif answer.status_code in (408, 429) or answer.status_code >= 500:
                    again.append(f"receiver {i}: HTTP {answer.status_code}")
                else:  # it will not take this notice, however often it is sent
                    refused.append(f"receiver {i}: HTTP {answer.status_code}")
                    done.add(key)
                activity.heartbeat(sorted(done))
        if again:
            raise ApplicationError("not delivered: " + "; ".join(again + refused))
        if refused:
            raise ApplicationError(
                "refused: " + "; ".join(refused), type=NOT_DELIVERABLE, non_retryable=True
            )
        return NotifyOut(sent=sent)
