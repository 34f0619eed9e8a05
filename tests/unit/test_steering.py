"""The words of steering: which requests a run takes in which state, and why it refuses the rest
(the same pure function the run's update validator calls)."""

from __future__ import annotations

from autonomous_pipeline.backends.agents.command import unknown_placeholders
from autonomous_pipeline.models.results import TaskResult, TaskStatus
from autonomous_pipeline.models.steer import SteerKind, SteerRequest
from autonomous_pipeline.workflows.steering import RunState, accepted, refusal


def state(**kw: object) -> RunState:
    tasks = {
        "1.1": TaskResult(id="1.1", status=TaskStatus.MERGED, commit="a" * 40),
        "1.2": TaskResult(id="1.2", status=TaskStatus.RUNNING),
        "1.3": TaskResult(id="1.3", status=TaskStatus.FAILED),
        "1.4": TaskResult(id="1.4", status=TaskStatus.PENDING),
    }
    fields: dict[str, object] = {
        "tasks": tasks,
        "paused": False,
        "cancelling": False,
        "cancel_now": False,
        "merging": frozenset(),
        "budget_spent": False,
        "finished": False,
    }
    return RunState(**(fields | kw))  # type: ignore[arg-type]


def req(kind: SteerKind, task: str | None = None, now: bool = False) -> SteerRequest:
    return SteerRequest(kind=kind, task=task, now=now)


def test_refusals_say_why() -> None:
    s = state()
    assert (
        refusal(s, req(SteerKind.SKIP, "1.1"))
        == f"task 1.1 has already ended: merged at {'a' * 12}"
    )
    assert "nothing to retry" in (refusal(s, req(SteerKind.RETRY, "1.1")) or "")
    assert refusal(s, req(SteerKind.RETRY, "1.2")) == "task 1.2 is still running"
    merging = state(merging=frozenset({"1.2"}))
    assert refusal(merging, req(SteerKind.SKIP, "1.2")) == (
        "task 1.2 is merging; it can no longer be skipped"
    )
    assert refusal(merging, req(SteerKind.RETRY, "1.2")) == "task 1.2 is still running (merging)"
    assert refusal(state(budget_spent=True), req(SteerKind.RETRY, "1.3")) == (
        "the run's budget is spent; no task starts again"
    )
    assert refusal(state(finished=True), req(SteerKind.PAUSE)) == (
        "the run is ending; nothing can change now"
    )


def test_cancel_can_be_sharpened_to_now_but_not_repeated() -> None:
    graceful = state(cancelling=True)
    assert refusal(graceful, req(SteerKind.CANCEL)) == "the run is already being cancelled"
    assert refusal(graceful, req(SteerKind.CANCEL, now=True)) is None
    assert refusal(state(cancelling=True, cancel_now=True), req(SteerKind.CANCEL, now=True))
    assert refusal(graceful, req(SteerKind.PAUSE)) == "the run is being cancelled"
    assert refusal(graceful, req(SteerKind.RETRY, "1.3")) == (
        "the run is being cancelled; no task starts again"
    )


def test_ids_compare_without_case_and_answers_use_the_runs_spelling() -> None:
    s = state(tasks={"A.1": TaskResult(id="A.1", status=TaskStatus.FAILED)})
    assert refusal(s, req(SteerKind.RETRY, "a.1")) is None
    # Exactly the id (the starter strips what was typed): the run applies what it validated.
    assert "no task ' a.1 '" in (refusal(s, req(SteerKind.RETRY, " a.1 ")) or "")
    assert accepted(s, req(SteerKind.RETRY, "a.1")).startswith("task A.1 will run again")
    running = state()
    assert accepted(running, req(SteerKind.SKIP, "1.2")) == (
        "task 1.2 is being stopped, and will end skipped"
    )


def test_unknown_placeholders_are_found_and_other_braces_pass() -> None:
    assert unknown_placeholders(["agent", "{task}", "--id={task_id}", "{Workdir}"]) == [
        "{task}",
        "{Workdir}",
    ]
    passing = ['{"a": 1}', "${HOME}", "{prompt_file}", "{title}", "x{}y", "{1}"]
    assert unknown_placeholders(passing) == []


def test_a_task_held_back_is_retried_through_the_task_that_held_it() -> None:
    tasks = {
        "1.1": TaskResult(id="1.1", status=TaskStatus.FAILED),
        "1.2": TaskResult(id="1.2", status=TaskStatus.SKIPPED, blocked_by="1.1"),
        "1.3": TaskResult(id="1.3", status=TaskStatus.SKIPPED, blocked_by="1.4"),
        "1.4": TaskResult(id="1.4", status=TaskStatus.MERGED),
    }
    s = state(tasks=tasks)
    # Accepted, it would be skipped again at once: refused, naming what to retry instead.
    assert refusal(s, req(SteerKind.RETRY, "1.2")) == (
        "task 1.2 was held back by task 1.1, which ended failed; retry 1.1 and the tasks it "
        "held back run with it"
    )
    assert refusal(s, req(SteerKind.RETRY, "1.3")) is None  # 1.4 has merged since


def test_nothing_is_steered_before_the_run_starts_or_while_it_is_cancelled_now() -> None:
    assert refusal(state(started=False), req(SteerKind.PAUSE)) == (
        "the run has not started yet; ask again in a moment"
    )
    now = state(cancelling=True, cancel_now=True)
    assert refusal(now, req(SteerKind.SKIP, "1.2")) == (
        "the run is being cancelled now; every task that has not ended ends cancelled"
    )


def test_text_from_a_run_reaches_the_terminal_printable() -> None:
    from autonomous_pipeline.cli.task_detail import detail_lines
    from autonomous_pipeline.models.results import CheckResult

    hostile = "ok\x1b]52;c;ZXZpbA==\x07\x1b[8mhidden\x1b[0m\n  fetch it: git fetch evil"
    t = TaskResult(
        id="1.1",
        status=TaskStatus.FAILED,
        error="boom\x1b[2J",
        checks=[CheckResult(command="t", exit_code=1, passed=False, output_tail=hostile)],
    )
    lines = detail_lines(t, "k", None)
    assert not any(c in line for line in lines for c in "\x1b\x07")
    assert "  error: boom\\x1b[2J" in lines
    # The agent's "fetch it:" stays inside the check's quoted output, never a line of ours.
    assert not any(line.startswith("  fetch it:") for line in lines)
