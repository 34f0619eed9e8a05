"""Every plan error and warning, each with its line, all reported in one pass."""

from __future__ import annotations

import pytest

from autonomous_pipeline.errors import PlanError
from autonomous_pipeline.plan_parser import parse_plan, select_batches
from tests.conftest import md


def errors_of(text: str | bytes) -> list[tuple[int, str]]:
    with pytest.raises(PlanError) as info:
        parse_plan(text)
    return [(e.line, e.message) for e in info.value.errors]


def test_no_batch_at_all() -> None:
    assert errors_of("# Just a title\n\nSome prose.\n") == [
        (1, "no batches found: a plan needs `## Batch N: title` headers with tasks under them")
    ]


def test_table_style_plan_is_an_error_not_zero_tasks() -> None:
    (err,) = errors_of("# Plan\n| Batch | Task |\n|---|---|\n| 1 | Create x |\n")
    assert err[0] == 1 and "no batches found" in err[1]


def test_batch_with_zero_tasks() -> None:
    [(line, msg)] = errors_of("## Batch 1: ok\n### Task 1.1: t\n## Batch 2: empty\nprose only\n")
    assert line == 3 and "batch 2 has no tasks" in msg


def test_task_outside_any_batch_not_done_is_an_error() -> None:
    [(line, msg)] = errors_of("### Task 0.1: stray\n## Batch 1: b\n### Task 1.1: t\n")
    assert line == 1 and "task 0.1 is outside any batch" in msg


def test_done_task_outside_any_batch_is_reported() -> None:
    plan = parse_plan("### Task 0.1: stray ✅\n## Batch 1: b\n### Task 1.1: t\n")
    assert [(t.id, t.title, t.line) for t in plan.done_elsewhere] == [("0.1", "stray", 1)]


def test_duplicate_batch_and_task_ids() -> None:
    errs = errors_of("## Batch 1: a\n### Task 1.1: t\n## Batch 1: b\n### Task 1.1: again\n")
    assert (3, "duplicate batch id '1' (first at line 1)") in errs
    assert (4, "duplicate task id '1.1' (first at line 2)") in errs


def test_unknown_dependencies_point_at_the_dependency_line() -> None:
    errs = errors_of(
        md(
            """
            ## Batch 1: a
            **Dependencies:** Batch 7
            ### Task 1.1: t
            **Depends on:** Task 3.3
            """
        )
    )
    assert errs == [
        (2, "batch 1 depends on unknown batch '7'"),
        (4, "task 1.1 depends on unknown task '3.3'"),
    ]


def test_unreadable_dependency_is_an_error_not_dropped() -> None:
    [(line, msg)] = errors_of(
        "## Batch 1: a\n### Task 1.1: t\n### Task 1.2: u\n**Depends on:** the login task\n"
    )
    assert line == 4 and "cannot read task dependency 'the login task'" in msg


def test_batch_cycle() -> None:
    [(line, msg)] = errors_of(
        "## Batch 1: a\n**Dependencies:** Batch 2\n### Task 1.1: t\n## Batch 2: b\n**Dependencies:** Batch 1\n### Task 2.1: u\n"
    )
    assert (
        line == 2 and msg.startswith("dependency cycle:") and "batch 1" in msg and "batch 2" in msg
    )


def test_task_cycle() -> None:
    [(line, msg)] = errors_of(
        "## Batch 1: a\n### Task 1.1: t\n**Depends on:** 1.2\n### Task 1.2: u\n**Depends on:** 1.1\n"
    )
    assert line == 3 and "task 1.1" in msg and "task 1.2" in msg


def test_task_depending_on_a_later_batch_is_a_cycle() -> None:
    [(_, msg)] = errors_of(
        "## Batch 1: a\n### Task 1.1: t\n**Depends on:** 2.1\n## Batch 2: b\n### Task 2.1: u\n"
    )
    assert "dependency cycle" in msg and "previous batch in the file" in msg


def test_non_utf8_input_names_its_line() -> None:
    data = b"## Batch 1: a\n### Task 1.1: t\n" + b"caf\xe9\n"
    [(line, msg)] = errors_of(data)
    assert line == 3 and "not valid UTF-8" in msg


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/etc/passwd", "is absolute"),
        ("../outside.py", "escapes the repository"),
        ("a/../../b.py", "escapes"),
        ("~/x.py", "absolute"),
    ],
)
def test_bad_file_paths(path: str, words: str) -> None:
    [(line, msg)] = errors_of(f"## Batch 1: a\n### Task 1.1: t\n**Files:**\n- Create: {path}\n")
    assert line == 4 and words in msg


def test_all_errors_reported_together_in_line_order() -> None:
    errs = errors_of(
        md(
            """
            ### Task 0.1: stray
            ## Batch 1: a
            **Dependencies:** Batch 9
            ### Task 1.1: t
            **Files:**
            - Create: /abs.py
            ## Batch 2: empty
            """
        )
    )
    assert [line for line, _ in errs] == [1, 3, 6, 7]


PLAN = md(
    """
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: a
    ## Batch 2: two
    **Dependencies:** Batch 1
    ### Task 2.1: b
    ## Batch 3: three
    **Dependencies:** None
    ### Task 3.1: c
    """
)


def test_selection_by_value() -> None:
    plan = select_batches(parse_plan(PLAN), "1", "2")
    assert [b.id for b in plan.batches] == ["1", "2"]


def test_selection_selecting_nothing() -> None:
    with pytest.raises(PlanError) as info:
        select_batches(parse_plan(PLAN), "5", "9")
    assert "selects no batch" in info.value.errors[0].message


def test_selection_missing_dependency_says_how_to_include_it() -> None:
    with pytest.raises(PlanError) as info:
        select_batches(parse_plan(PLAN), "2", "3")
    [err] = info.value.errors
    assert err.line == 4
    assert "batch 2 depends on batch 1, which is not selected and not done" in err.message
    assert "--start-batch 1" in err.message


def test_selection_of_a_batch_whose_dependency_is_done() -> None:
    plan = parse_plan(PLAN.replace("### Task 1.1: a", "### Task 1.1: a ✅"))
    assert [b.id for b in select_batches(plan, "2", None).batches] == ["2", "3"]


def test_selection_by_position_for_letters() -> None:
    text = "".join(
        f"## Batch {c}: b\n**Dependencies:** None\n### Task {i}.1: t\n"
        for i, c in enumerate("ABCD")
    )
    assert [b.id for b in select_batches(parse_plan(text), "b", "C").batches] == ["B", "C"]
    with pytest.raises(PlanError, match="no batch 'Z'"):
        select_batches(parse_plan(text), "Z", None)


def test_selection_past_an_implicit_dependency_warns() -> None:
    plan = select_batches(
        parse_plan("## Batch 1: a\n### Task 1.1: t\n## Batch 2: b\n### Task 2.1: u\n"), "2", None
    )
    assert [b.id for b in plan.batches] == ["2"] and plan.batches[0].depends_on == []
    assert any("not selected; assuming it is done" in w.message for w in plan.warnings)


def test_overlapping_files_in_parallel_tasks_warn() -> None:
    plan = parse_plan(
        "## Batch 1: a\n### Task 1.1: t\n**Files:**\n- Create: x.py\n### Task 1.2: u\n**Files:**\n- Modify: x.py\n"
    )
    [w] = plan.warnings
    assert w.line == 5 and "tasks 1.1 and 1.2 may run in parallel and both change x.py" in w.message


def test_no_overlap_warning_when_ordered() -> None:
    ordered = "## Batch 1: a\n### Task 1.1: t\n**Files:**\n- Create: x.py\n### Task 1.2: u\n**Depends on:** 1.1\n**Files:**\n- Modify: x.py\n"
    assert parse_plan(ordered).warnings == []
    sequential = "## Batch 1: a\n### Task 1.1: t\n**Files:** x.py\n## Batch 2: b\n### Task 2.1: u\n**Files:** x.py\n"
    assert parse_plan(sequential).warnings == []
    reading = "## Batch 1: a\n### Task 1.1: t\n**Files:**\n- Read: x.py\n### Task 1.2: u\n**Files:**\n- Read: x.py\n"
    assert parse_plan(reading).warnings == []


@pytest.mark.parametrize(
    "header", ["## Task 1.2: wrong level", "### Task 1.2 missing colon", "#### Batch 2: too deep"]
)
def test_near_miss_headers_warn_instead_of_vanishing(header: str) -> None:
    plan = parse_plan(f"## Batch 1: a\n### Task 1.1: t\n{header}\n")
    assert [w.line for w in plan.warnings] == [3]
    assert "is read as text" in plan.warnings[0].message


def test_selection_past_a_task_dependency_is_refused() -> None:
    plan = parse_plan(
        "## Batch 1: a\n**Dependencies:** None\n### Task 1.1: t\n"
        "## Batch 2: b\n**Dependencies:** None\n### Task 2.1: u\n**Depends on:** Task 1.1\n"
    )
    with pytest.raises(PlanError) as info:
        select_batches(plan, "2", None)
    [err] = info.value.errors
    assert err.line == 6 and "task 2.1 depends on task 1.1 of batch 1" in err.message
    assert "--start-batch 1" in err.message
