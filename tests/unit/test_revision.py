"""The revision rules as pure functions: what the run's validator refuses and what its handler
does to each task, in the cases a time-skipping run is too slow to walk through one by one."""

from __future__ import annotations

from pathlib import Path

import pytest

from autonomous_pipeline.cli import main as cli_main
from autonomous_pipeline.cli.revise import RevisionRefused
from autonomous_pipeline.models.plan import PlanIssue
from autonomous_pipeline.models.results import TaskResult, TaskStatus
from autonomous_pipeline.models.revision import ChangeKind
from autonomous_pipeline.models.steer import SteerKind, SteerRequest
from autonomous_pipeline.plan_parser import parse_plan
from autonomous_pipeline.workflows.revision import REMOVED, apply, refusals, reply
from autonomous_pipeline.workflows.steering import RunState, refusal
from tests.conftest import md

PLAN = md(
    """
    # P
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: a
    Do a.
    ### Task 1.2: b
    **Depends on:** Task 1.1
    Do b.
    ## Batch 2: two
    **Dependencies:** Batch 1
    ### Task 2.1: c
    Do c.
    """
)


def states(**given: TaskStatus) -> dict[str, TaskResult]:
    ids = ["1.1", "1.2", "2.1"]
    return {
        t: TaskResult(id=t, status=given.get(t.replace(".", "_"), TaskStatus.PENDING)) for t in ids
    }


def kinds(applied) -> dict[str, ChangeKind]:  # type: ignore[no-untyped-def]
    return {c.task: c.kind for c in applied.changes}


def test_moving_lines_is_not_a_change() -> None:
    moved = parse_plan("\n\n<!-- a note -->\n" + PLAN)
    out = apply(parse_plan(PLAN), states(), moved, set())
    assert out.changes == []
    assert reply(1, out.changes).message == "revision 1: no task changed (it is recorded)"


def test_a_prepared_task_that_changed_starts_again_and_a_removed_one_ends_skipped() -> None:
    """Tasks whose agent has not started (prepared ahead) count as not started."""
    current = parse_plan(PLAN)
    revised = parse_plan(PLAN.replace("Do a.", "Do a twice.").split("## Batch 2")[0])
    tasks = states(**{"1_1": TaskStatus.RUNNING, "2_1": TaskStatus.RUNNING})
    out = apply(current, tasks, revised, unstarted={"1.1", "2.1"})
    assert kinds(out) == {"1.1": ChangeKind.CHANGED, "2.1": ChangeKind.REMOVED}
    assert out.hold_back == {"1.1": (TaskStatus.PENDING, ""), "2.1": (TaskStatus.SKIPPED, REMOVED)}
    # Their status changes when their preparation has stopped, not before.
    assert out.results["2.1"].status is TaskStatus.RUNNING
    assert tasks["2.1"].status is TaskStatus.RUNNING  # the run's own results are not touched


def test_a_task_held_back_by_a_failure_runs_when_its_dependencies_change() -> None:
    current = parse_plan(PLAN)
    tasks = states(**{"1_1": TaskStatus.FAILED, "1_2": TaskStatus.SKIPPED})
    tasks["1.2"].blocked_by = "1.1"
    revised = parse_plan(PLAN.replace("**Depends on:** Task 1.1\n", ""))
    out = apply(current, tasks, revised, set())
    assert kinds(out)["1.2"] is ChangeKind.CHANGED
    assert out.results["1.2"].status is TaskStatus.PENDING and out.results["1.2"].blocked_by is None


def test_a_removed_task_comes_back_and_a_task_marked_done_will_not_run() -> None:
    current = parse_plan(PLAN)
    without = parse_plan(PLAN.replace("### Task 2.1: c\nDo c.\n", "### Task 2.2: d\n"))
    first = apply(current, states(), without, set())
    assert first.removed == {"2.1"} and first.results["2.1"].error == REMOVED
    back = apply(
        without,
        first.results,
        parse_plan(PLAN.replace("### Task 1.2: b", "### [x] Task 1.2: b")),
        set(),
    )
    assert kinds(back) == {
        "1.2": ChangeKind.MARKED_DONE,
        "2.1": ChangeKind.ADDED,
        "2.2": ChangeKind.REMOVED,
    }
    assert back.results["2.1"].status is TaskStatus.PENDING
    assert back.results["1.2"].status is TaskStatus.DONE_BEFORE
    # 2.2, added then dropped before it ran, is skipped; the run keeps every task it has known.
    assert back.results["2.2"].status is TaskStatus.SKIPPED and back.removed == {"2.2"}


def test_what_ran_is_kept_and_said_so() -> None:
    current = parse_plan(PLAN)
    tasks = states(
        **{"1_1": TaskStatus.MERGED, "1_2": TaskStatus.RUNNING, "2_1": TaskStatus.FAILED}
    )
    revised = parse_plan(PLAN.replace("Do a.", "A.").replace("Do b.", "B.").replace("Do c.", "C."))
    out = apply(current, tasks, revised, set())
    said = {c.task: c.message for c in out.changes}
    assert set(kinds(out).values()) == {ChangeKind.KEPT}
    assert "merged work is never redone" in said["1.1"]
    assert "is running: it goes on as it started" in said["1.2"]
    assert "`retry` runs the new text" in said["2.1"]
    assert [r.status for r in out.results.values()] == [
        TaskStatus.MERGED,
        TaskStatus.RUNNING,
        TaskStatus.FAILED,
    ]


def test_refusals_name_the_line_and_the_reason() -> None:
    current = parse_plan(PLAN)
    # Batch 2 waits for batch 1, which the revision drops while 1.2 has not run.
    only_two = parse_plan(PLAN).model_copy(deep=True)
    only_two.batches = [b for b in only_two.batches if b.id == "2"]
    issues = refusals(current, states(), only_two)
    assert issues == [
        PlanIssue(
            line=9, message="batch 2 depends on batch 1, which this revision removes from the plan"
        )
    ]
    # Once batch 1 has merged, depending on it is met: nothing to refuse.
    merged = states(**{"1_1": TaskStatus.MERGED, "1_2": TaskStatus.MERGED})
    assert refusals(current, merged, only_two) == []
    # An id the run spells otherwise is the same task to the operator: refused, not doubled.
    respelled = parse_plan(PLAN.replace("Task 2.1: c", "Task 2.1A: c"))
    run = states() | {"2.1a": TaskResult(id="2.1a", status=TaskStatus.PENDING)}
    run.pop("2.1")
    assert [i.message for i in refusals(current, run, respelled)] == [
        "task 2.1A is task 2.1a in this run; keep its spelling"
    ]


def test_a_removed_task_cannot_be_retried() -> None:
    tasks = states(**{"2_1": TaskStatus.FAILED})
    state = RunState(
        tasks=tasks,
        paused=False,
        cancelling=False,
        cancel_now=False,
        merging=frozenset(),
        budget_spent=False,
        finished=False,
        removed=frozenset({"2.1"}),
    )
    why = refusal(state, SteerRequest(kind=SteerKind.RETRY, task="2.1"))
    assert why is not None and "removed from the plan" in why


def test_a_refused_revision_prints_each_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "PLAN.md"
    plan.write_text(PLAN)
    issue = PlanIssue(line=9, message="task 1.2 depends on task 1.1, which this revision removes")

    async def refused(*_: object) -> int:
        raise RevisionRefused([issue], "pipeline-plan-x")

    monkeypatch.setattr("autonomous_pipeline.cli.run.run_plan", refused)
    assert cli_main.main(["--plan", str(plan), "--repo", str(tmp_path)]) == 2
    assert f"{plan}:9: task 1.2 depends on task 1.1" in capsys.readouterr().err


def test_the_tasks_skipped_behind_a_revived_one_run_with_it() -> None:
    chain = PLAN.replace("### Task 2.1: c\n", "### Task 2.1: c\n**Depends on:** Task 1.2\n")
    current = parse_plan(chain)
    tasks = states(
        **{"1_1": TaskStatus.FAILED, "1_2": TaskStatus.SKIPPED, "2_1": TaskStatus.SKIPPED}
    )
    tasks["1.2"].blocked_by, tasks["2.1"].blocked_by = "1.1", "1.2"
    revised = parse_plan(
        chain.replace("**Depends on:** Task 1.1\n", "", 1).replace(
            "**Dependencies:** Batch 1", "**Dependencies:** None"
        )
    )
    out = apply(current, tasks, revised, set())
    assert kinds(out) == {"1.2": ChangeKind.CHANGED, "2.1": ChangeKind.CHANGED}
    assert [out.results[t].status for t in ("1.2", "2.1")] == [TaskStatus.PENDING] * 2


def test_a_task_put_back_before_its_removal_landed_is_held_back_as_pending() -> None:
    current = parse_plan(PLAN)
    without = parse_plan(PLAN.split("## Batch 2")[0])
    tasks = states(**{"2_1": TaskStatus.RUNNING})
    first = apply(current, tasks, without, unstarted={"2.1"})
    assert first.hold_back == {"2.1": (TaskStatus.SKIPPED, REMOVED)}
    back = apply(without, first.results, current, unstarted={"2.1"})
    assert back.hold_back == {"2.1": (TaskStatus.PENDING, "")} and back.removed == set()
    assert kinds(back) == {"2.1": ChangeKind.ADDED}


def test_a_continued_run_carries_what_reports_need_and_little_else() -> None:
    from autonomous_pipeline.models.results import CheckResult
    from autonomous_pipeline.workflows.revision import CARRIED_TAIL, carried

    long = "x" * (CARRIED_TAIL * 5)
    check = CheckResult(command="pytest", exit_code=1, passed=False, output_tail=long)
    failed = TaskResult(
        id="1.1", status=TaskStatus.FAILED, checks=[check], diffstat=long, cost_usd=2.5
    )
    merged = TaskResult(
        id="1.2", status=TaskStatus.MERGED, checks=[check], summary=long, commit="c1"
    )
    slim_failed, slim_merged = carried(failed), carried(merged)
    assert slim_failed.checks[0].output_tail == long[-CARRIED_TAIL:]  # the last lines stay
    assert slim_failed.cost_usd == 2.5 and len(slim_failed.diffstat) == CARRIED_TAIL
    assert slim_merged.checks[0].output_tail == "" and slim_merged.commit == "c1"
    assert len(slim_merged.summary) == CARRIED_TAIL
    assert failed.checks[0].output_tail == long  # the run's own copy is untouched


def test_a_revision_runs_its_batches_where_the_run_put_them() -> None:
    """The starter of a revision fills batches in from its own flags; the run keeps its own."""
    from autonomous_pipeline.models.sandbox import SandboxKind
    from autonomous_pipeline.workflows.revision import pin_sandboxes

    current = parse_plan(PLAN)
    for b in current.batches:
        b.sandbox = SandboxKind.CONTAINER  # the run was started with --sandbox container
    revised = parse_plan(PLAN + "## Batch 3: new\n**Dependencies:** None\n### Task 3.1: e\n")
    for b in revised.batches:
        b.sandbox = SandboxKind.WORKTREE  # re-run without the flag
    pinned = pin_sandboxes(current, revised, SandboxKind.CONTAINER)
    assert [b.sandbox for b in pinned.batches] == [SandboxKind.CONTAINER] * 3
    out = apply(current, states(), pinned, set())
    assert kinds(out) == {"3.1": ChangeKind.ADDED}  # nothing else "changed"


def test_a_failed_task_marked_done_lets_its_dependants_run_and_unmarking_runs_a_task() -> None:
    current = parse_plan(PLAN)
    tasks = states(
        **{"1_1": TaskStatus.FAILED, "1_2": TaskStatus.SKIPPED, "2_1": TaskStatus.SKIPPED}
    )
    tasks["1.2"].blocked_by, tasks["2.1"].blocked_by = "1.1", "1.1"
    fixed = parse_plan(PLAN.replace("### Task 1.1: a", "### [x] Task 1.1: a"))
    out = apply(current, tasks, fixed, set())
    assert kinds(out) == {
        "1.1": ChangeKind.MARKED_DONE,
        "1.2": ChangeKind.CHANGED,
        "2.1": ChangeKind.CHANGED,
    }
    assert [out.results[t].status for t in ("1.1", "1.2", "2.1")] == [
        TaskStatus.DONE_BEFORE,
        TaskStatus.PENDING,
        TaskStatus.PENDING,
    ]
    # Unticked: done by its mark alone, it runs; merged by an earlier run, it stays done.
    back = apply(fixed, out.results, current, set())
    assert (
        kinds(back) == {"1.1": ChangeKind.CHANGED}
        and back.results["1.1"].status is TaskStatus.PENDING
    )
    kept = apply(fixed, out.results, current, set(), merged_before=frozenset({"1.1"}))
    assert kept.changes == [] and kept.results["1.1"].status is TaskStatus.DONE_BEFORE


def test_a_task_still_held_back_by_a_failure_is_not_revived() -> None:
    current = parse_plan(PLAN)
    tasks = states(**{"1_1": TaskStatus.FAILED, "1_2": TaskStatus.SKIPPED})
    tasks["1.2"].blocked_by = "1.1"
    # 1.2 gains a dependency (a new task 1.3); 1.1, which failed, still holds it back.
    revised = parse_plan(
        PLAN.replace("**Depends on:** Task 1.1\n", "**Depends on:** Task 1.1, Task 1.3\n").replace(
            "## Batch 2", "### Task 1.3: new\n## Batch 2"
        )
    )
    out = apply(current, tasks, revised, set())
    assert "1.2" not in {c.task for c in out.changes if c.kind is ChangeKind.CHANGED}
    assert out.results["1.2"].status is TaskStatus.SKIPPED


def test_an_unknown_dependency_is_refused_unless_the_selection_left_it_out() -> None:
    current = parse_plan(PLAN)
    raw = parse_plan(PLAN).model_copy(deep=True)
    raw.batches[1].tasks[0].depends_on = ["0.9"]  # sent as is, past the starter's parser
    assert [i.message for i in refusals(current, states(), raw)] == [
        "task 2.1 depends on unknown task '0.9'"
    ]
    # A task of a batch --start-batch left out (done) is met, as the parser said when it read it.
    assert refusals(current, states(), raw, outside=frozenset({"0.9"})) == []
    raw.batches[1].depends_on = ["7"]
    assert [i.message for i in refusals(current, states(), raw, frozenset({"0.9"}))] == [
        "batch 2 depends on unknown batch '7'"
    ]


def test_the_plan_file_names_the_tasks_its_selection_leaves_out(tmp_path: Path) -> None:
    from autonomous_pipeline.cli.plan_input import load_plan

    path = tmp_path / "PLAN.md"
    path.write_text(
        PLAN.replace("### Task 1.1: a", "### [x] Task 1.1: a").replace(
            "### Task 1.2: b", "### [x] Task 1.2: b"
        )
    )
    loaded = load_plan(path, "2", None)
    assert [t.id for t in loaded.plan.tasks] == ["2.1"] and loaded.outside == {"1.1", "1.2"}
