"""How an agent run failed, as data: from the backend that saw it to the workflow that acts on
it (waits out a limit, stops on bad credentials), never parsed back out of a message."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class FailureKind(StrEnum):
    AUTH = "auth"  # bad or missing credentials, or the account cannot pay: a human must act
    RATE_LIMIT = "rate_limit"  # usage or rate limit: retry after `reset_at` (or back off)
    OVERLOADED = "overloaded"  # the API is at capacity (529): retry soon
    MAX_TURNS = "max_turns"  # --max-turns reached
    BUDGET = "budget"  # --max-budget-usd reached
    OTHER = "other"

    @property
    def waits(self) -> bool:
        """A failure that passes with time: the workflow waits on a durable timer and retries."""
        return self in (FailureKind.RATE_LIMIT, FailureKind.OVERLOADED)


class AgentFailure(BaseModel):
    kind: FailureKind
    message: str
    reset_at: float | None = None  # when a usage limit lifts (unix time), when it says
