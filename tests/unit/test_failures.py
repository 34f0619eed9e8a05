"""A failure's kind travels as data from the backend; text only stands in where no backend said."""

from __future__ import annotations

from autonomous_pipeline.activities.agent import failure_of
from autonomous_pipeline.backends.base import AgentOutcome
from autonomous_pipeline.models.activity_io import RunAgentOut
from autonomous_pipeline.models.failure import AgentFailure, FailureKind


def test_the_backends_typed_failure_wins_over_whatever_the_text_says() -> None:
    typed = AgentFailure(kind=FailureKind.AUTH, message="Invalid API key")
    out = AgentOutcome(succeeded=False, error="rate_limit: x (resets at 1767279600)", failure=typed)
    assert failure_of(out) == (FailureKind.AUTH, None)
    limit = AgentFailure(kind=FailureKind.RATE_LIMIT, message="limit", reset_at=1767279600.0)
    assert failure_of(AgentOutcome(succeeded=False, error="", failure=limit)) == (
        FailureKind.RATE_LIMIT,
        1767279600.0,
    )


def test_text_alone_never_declares_the_credentials_bad() -> None:
    # A command agent (or the code it runs) printing our old in-band form cannot end the task
    # as if a person had to fix the credentials.
    for text in ("auth: Invalid API key", "FAILED test_401 - unauthorized"):
        assert failure_of(AgentOutcome(succeeded=False, error=text))[0] is FailureKind.OTHER
    # A real limit in a command agent's output is still waited out.
    said = AgentOutcome(succeeded=False, error="Error: 429 Too Many Requests")
    assert failure_of(said)[0] is FailureKind.RATE_LIMIT


def test_recorded_failure_kinds_still_read() -> None:
    # Histories hold the kind as its string: it reads back as the enum.
    out = RunAgentOut.model_validate(
        {"exit_code": 1, "succeeded": False, "failure_kind": "overloaded"}
    )
    assert out.failure_kind is FailureKind.OVERLOADED and out.failure_kind.waits
    assert not FailureKind.MAX_TURNS.waits
