"""The code host, as the activities use it (see models.forge for what crosses to workflows).

A `Forge` opens or finds a task's pull request, posts the pipeline's review, reads what people
with write access said on it and its checks, and merges it. Every call is safe to repeat: a task
retried after a crash finds what the earlier attempt made instead of making it twice.
"""

from __future__ import annotations

import re
from typing import Protocol

from autonomous_pipeline.errors import PipelineError
from autonomous_pipeline.models.forge import (
    EventKind,
    MergeMethod,
    PrView,
    PullRequest,
)
from autonomous_pipeline.models.review import Verdict

# In the body of everything the pipeline posts: how it knows its own words from a person's (the
# token may be that person's own) and a verdict it posted already.
MARK = "<!-- autonomous-pipeline"


class ForgeError(PipelineError):
    """The host refused or failed a call (with its status and message)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(ForgeError):
    """The host's rate limit: try again in `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, status=429)
        self.retry_after_s = retry_after_s


class Forge(Protocol):
    async def can_publish(self) -> str | None:
        """None if the token may push and open pull requests here; else why not."""
        ...

    async def open_pr(
        self, branch: str, target: str, title: str, body: str, not_before: str = ""
    ) -> PullRequest:
        """The pull request of `branch` into `target`: the one there is (open, merged, or
        closed since `not_before`: a person's decision stands), else a new one."""
        ...

    async def post_review(self, number: int, commit: str, verdict: Verdict) -> bool:
        """The verdict on `commit` as a review; False if it was posted already."""
        ...

    async def read(
        self, number: int, target: str, known: frozenset[str] = frozenset(), checks: bool = True
    ) -> PrView:
        """The pull request, its people's commands and reviews, and (`checks`) its head's
        checks. `known`: events acted on already, whose details need not be fetched again."""
        ...

    async def merge(
        self, number: int, head_sha: str, method: MergeMethod, title: str, message: str
    ) -> PullRequest:
        """Merge if the head is still `head_sha`; the PR as it is after (merged or not)."""
        ...

    async def close(self, number: int, why: str) -> bool:
        """Say why on the PR and close it; False if it was closed or merged already."""
        ...

    async def withdraw(self, number: int, handed_to: str) -> bool:
        """Take the PR back from auto-merge or the merge queue; False if it was not there."""
        ...

    async def hand_over(
        self, pr: PullRequest, method: MergeMethod, title: str, message: str
    ) -> str | None:
        """Branch protection refused the merge for now: have the host merge `pr`'s head once
        it allows (auto-merge, or its merge queue). What it was handed to; None: neither."""
        ...


# A comment that is a command: its first word, then a space or the end (not "/skip?").
_COMMAND = re.compile(r"^\s*/(fix|approve|skip)(?=\s|$)[ \t]*(.*)", re.DOTALL | re.IGNORECASE)
_COMMANDS = {"fix": EventKind.FIX, "approve": EventKind.APPROVE, "skip": EventKind.SKIP}


def command_of(body: str) -> tuple[EventKind, str] | None:
    """`/fix words`, `/approve`, `/skip` at the start of a comment: the command and its words."""
    if MARK in body:
        return None  # the pipeline's own words, quoted or not, are never a command
    m = _COMMAND.match(body)
    if m is None:
        return None
    kind, rest = _COMMANDS[m.group(1).lower()], m.group(2)
    if kind is not EventKind.FIX and rest.split("\n", 1)[0].strip():
        return None  # "/approve not yet", "/skip later?": words after it make it no command
    return kind, rest.strip()
