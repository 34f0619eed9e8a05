"""The canonical dialect: every header, field and marker form of the plan format."""

from __future__ import annotations

import pytest

from autonomous_pipeline.models.plan import CheckKind
from autonomous_pipeline.plan_parser import parse_plan
from tests.conftest import md

BASIC = md(
    """
    # Demo plan

    ## Batch 1: Simple File Creation
    **Dependencies:** None
    **Execution Mode:** local

    ### Task 1.1: Create Hello World File
    **Files:**
    - Create: test-artifacts/hello.txt
    - Modify: `src/app.py`
    **Implementation:**
    Write the file.
    **Verification:**
    - `python -m pytest -q`
    - The file says hello
    **Depends on:** None
    **Commit:** Create hello.txt test file

    ### Task 1.2: Second
    **Files:** a.py, `b/c.py`
    **Verification:**
    1. `make check`
    2. Output is tidy

    ## Batch 2: Follow-up
    **Dependencies:** Batch 1
    ### Task 2.1: Third
    **File:** `docs/x.md`
    **Depends on:** Task 1.1, Task 1.2
    """
)


def test_canonical_plan_structure() -> None:
    plan = parse_plan(BASIC)
    assert plan.title == "Demo plan"
    assert [b.id for b in plan.batches] == ["1", "2"]
    b1, b2 = plan.batches
    assert b1.title == "Simple File Creation" and b1.line == 3
    assert b1.execution_mode == "local" and b1.depends_on == []
    assert b2.depends_on == ["1"] and not b2.implicit_dependency
    t11, t12 = b1.tasks
    assert (t11.id, t11.title, t11.line, t11.batch_id) == ("1.1", "Create Hello World File", 7, "1")
    assert [(f.action, f.path) for f in t11.files] == [
        ("create", "test-artifacts/hello.txt"),
        ("modify", "src/app.py"),
    ]
    assert [(c.kind, c.text) for c in t11.verification] == [
        (CheckKind.COMMAND, "python -m pytest -q"),
        (CheckKind.CRITERION, "The file says hello"),
    ]
    assert t11.depends_on == []
    assert [(f.action, f.path) for f in t12.files] == [("modify", "a.py"), ("modify", "b/c.py")]
    assert [c.text for c in t12.verification] == ["make check", "Output is tidy"]
    assert t12.commands == ["make check"] and t12.criteria == ["Output is tidy"]
    (t21,) = b2.tasks
    assert t21.depends_on == ["1.1", "1.2"]
    assert [(f.action, f.path) for f in t21.files] == [("modify", "docs/x.md")]


def test_instructions_are_the_task_section_only() -> None:
    plan = parse_plan(BASIC)
    t11 = plan.batches[0].tasks[0]
    assert t11.instructions.startswith("**Files:**")
    assert "Write the file." in t11.instructions
    assert "Task 1.2" not in t11.instructions and "Second" not in t11.instructions


@pytest.mark.parametrize(
    ("header", "batch_id"),
    [
        ("## Batch 7: T", "7"),
        ("### Batch 3.1: T", "3.1"),
        ("## Batch A: T", "A"),
        ("## batch b: T", "b"),
        ("### BATCH 12: T", "12"),
    ],
)
def test_batch_header_forms(header: str, batch_id: str) -> None:
    plan = parse_plan(f"{header}\n### Task 1.1: x\n")
    assert [b.id for b in plan.batches] == [batch_id]


def test_decimal_batch_is_distinct_from_its_integer() -> None:
    plan = parse_plan(
        md(
            "## Batch 3: a\n### Task 3.1: x\n## Batch 3.1: b\n**Dependencies:** Batch 3\n### Task 3.1.1: y\n"
        )
    )
    assert [b.id for b in plan.batches] == ["3", "3.1"]
    assert plan.batches[1].depends_on == ["3"]


@pytest.mark.parametrize(
    ("header", "task_id", "title"),
    [
        ("### Task 1.2: Add login", "1.2", "Add login"),
        ("#### Task 4.1.1: Deep", "4.1.1", "Deep"),
        ("### Task 1.2a: Suffix", "1.2a", "Suffix"),
        ("### Task 1.3 - Dash", "1.3", "Dash"),
        ("### Task 1.4 — Em dash", "1.4", "Em dash"),
        ("### task 1.5: lower", "1.5", "lower"),
    ],
)
def test_task_header_forms(header: str, task_id: str, title: str) -> None:
    plan = parse_plan(f"## Batch 1: b\n{header}\n")
    (task,) = plan.tasks
    assert (task.id, task.title) == (task_id, title)


@pytest.mark.parametrize("fence", ["```", "~~~", "````"])
def test_headers_inside_fences_are_text(fence: str) -> None:
    plan = parse_plan(
        md(
            f"""
            ## Batch 1: b
            ### Task 1.1: real
            {fence}markdown
            ## Batch 9: fake
            ### Task 9.1: fake
            {fence}
            ### Task 1.2: also real
            """
        )
    )
    assert [b.id for b in plan.batches] == ["1"]
    assert [t.id for t in plan.tasks] == ["1.1", "1.2"]
    assert "## Batch 9: fake" in plan.tasks[0].instructions


def test_fence_closes_only_with_its_own_character() -> None:
    plan = parse_plan(
        md("## Batch 1: b\n### Task 1.1: a\n~~~\n```\n### Task 1.9: fake\n~~~\n### Task 1.2: b\n")
    )
    assert [t.id for t in plan.tasks] == ["1.1", "1.2"]


@pytest.mark.parametrize(
    ("deps", "expected"),
    [
        ("None", []),
        ("Batch 1", ["1"]),
        ("Batch 1, 3", ["1", "3"]),
        ("Batches 1 and 2", ["1", "2"]),
        ("Batch 1-3", ["1", "2", "3"]),
        ("Batches 1, 2 and 3 (all complete)", ["1", "2", "3"]),
    ],
)
def test_batch_dependency_forms(deps: str, expected: list[str]) -> None:
    text = "".join(
        f"## Batch {n}: b{n}\n**Dependencies:** None\n### Task {n}.1: t\n" for n in (1, 2, 3)
    )
    text += f"## Batch 4: last\n**Dependencies:** {deps}\n### Task 4.1: t\n"
    plan = parse_plan(text)
    assert plan.batch("4").depends_on == expected


def test_batch_without_dependencies_line_follows_the_previous_batch() -> None:
    plan = parse_plan("## Batch A: a\n### Task 1.1: t\n## Batch B: b\n### Task 2.1: t\n")
    a, b = plan.batches
    assert a.depends_on == [] and not a.implicit_dependency
    assert b.depends_on == ["A"] and b.implicit_dependency


def test_letter_range_dependency() -> None:
    text = "".join(
        f"## Batch {c}: b\n**Dependencies:** None\n### Task {i}.1: t\n" for i, c in enumerate("ABC")
    )
    text += "## Batch D: d\n**Dependencies:** Batch A-C\n### Task 9.1: t\n"
    assert parse_plan(text).batch("D").depends_on == ["A", "B", "C"]


@pytest.mark.parametrize(
    "deps", ["Task 1.1, Task 1.2", "1.1, 1.2", "Tasks 1.1 and 1.2", "`1.1`, `1.2`"]
)
def test_task_dependency_forms(deps: str) -> None:
    plan = parse_plan(
        f"## Batch 1: b\n### Task 1.1: a\n### Task 1.2: b\n### Task 1.3: c\n**Depends on:** {deps}\n"
    )
    assert plan.tasks[2].depends_on == ["1.1", "1.2"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ("**Files:**\n- Create: a/b.py\n", [("create", "a/b.py")]),
        ("**Files:**\n- Modify: `src/x.py:10-20`\n", [("modify", "src/x.py")]),
        ("**Files:**\n- Update: a.py, b.py\n", [("update", "a.py"), ("update", "b.py")]),
        (
            "**Files:**\n- Delete: old.py\n- Test: tests/t.py\n- Read: docs/spec.md\n",
            [("delete", "old.py"), ("test", "tests/t.py"), ("read", "docs/spec.md")],
        ),
        ("**Files to Create/Modify:**\n- Create: n.py\n", [("create", "n.py")]),
        ("**Files:** a.py, b.py\n", [("modify", "a.py"), ("modify", "b.py")]),
        ("**File:** a.py\n", [("modify", "a.py")]),
        ("**Files:** Create `x/y.py` + tests\n", [("create", "x/y.py")]),
        ("**Files:** Modify `m.py`, create `n.py`\n", [("modify", "m.py"), ("create", "n.py")]),
        ("**Files:**\n- `plain.md` with notes\n", [("modify", "plain.md")]),
    ],
)
def test_file_forms(files: str, expected: list[tuple[str, str]]) -> None:
    plan = parse_plan(f"## Batch 1: b\n### Task 1.1: t\n{files}")
    assert [(f.action, f.path) for f in plan.tasks[0].files] == expected


@pytest.mark.parametrize(
    "label", ["Verification", "Verification Steps", "Tests", "Test Plan", "Acceptance Criteria"]
)
def test_verification_aliases(label: str) -> None:
    plan = parse_plan(f"## Batch 1: b\n### Task 1.1: t\n**{label}:**\n- `pytest -q`\n- It works\n")
    assert [(c.kind, c.text) for c in plan.tasks[0].verification] == [
        (CheckKind.COMMAND, "pytest -q"),
        (CheckKind.CRITERION, "It works"),
    ]


def test_verification_fenced_block_and_plain_commands() -> None:
    plan = parse_plan(
        md(
            """
            ## Batch 1: b
            ### Task 1.1: t
            **Verification:**
            - python test-artifacts/hello.py
            - Test file exists
            - Run `npm test`
            - a long criterion that
              wraps onto a second line
            ```bash
            pytest -q
            ruff check .
            ```
            **Commit:** done
            """
        )
    )
    steps = [(c.kind.value, c.text) for c in plan.tasks[0].verification]
    assert steps == [
        ("command", "python test-artifacts/hello.py"),
        ("criterion", "Test file exists"),
        ("command", "npm test"),
        ("criterion", "a long criterion that wraps onto a second line"),
        ("command", "pytest -q\nruff check ."),
    ]


def test_text_after_last_task_is_not_glued_onto_it() -> None:
    plan = parse_plan(
        md(
            """
            ## Phase 3

            ### Batch 7: Timestamps
            #### Task 7.1: Impl
            Do the thing.
            #### Task 7.2: Tests
            Test the thing.

            ### Success Criteria
            - everything passes

            ## Phase 4: later
            Preamble that belongs to no task.

            ### Batch 1: Core
            #### Task 4.1.1: Config
            Configure.

            ### Between Batches Protocol
            1. Review
            """
        )
    )
    t72 = plan.batch("7").tasks[1]
    assert t72.instructions == "Test the thing."
    assert plan.batch("1").tasks[0].instructions == "Configure."
    assert all("Preamble" not in t.instructions for t in plan.tasks)


@pytest.mark.parametrize(
    "task",
    [
        "### Task 1.2: Finished ✅\n",
        "### Task 1.2: Finished [DONE]\n",
        "### Task 1.2: Finished [COMPLETE]\n",
        "### Task 1.2: Finished\n**Status:** completed\n",
        "### Task 1.2: Finished\n**Status:** done\n",
        "### Task 1.2: Finished\n**Status:** ✅ shipped\n",
        "### [x] Task 1.2: Finished\n",
    ],
)
def test_completion_markers(task: str) -> None:
    plan = parse_plan(f"## Batch 1: b\n### Task 1.1: open\n{task}")
    t1, t2 = plan.tasks
    assert not t1.done
    assert t2.done and t2.title == "Finished"


def test_status_in_progress_is_not_done() -> None:
    plan = parse_plan("## Batch 1: b\n### Task 1.1: open\n**Status:** in progress\n")
    assert not plan.tasks[0].done


def test_done_batch_marks_its_tasks_done() -> None:
    plan = parse_plan("## Batch 1: Old ✅\n### Task 1.1: a\n## Batch 2: New\n### Task 2.1: b\n")
    assert plan.batch("1").done and plan.batch("1").tasks[0].done
    assert not plan.batch("2").tasks[0].done


def test_numeric_task_order() -> None:
    plan = parse_plan(
        "## Batch 3: b\n### Task 3.10: ten\n### Task 3.2: two\n### Task 3.1: one\n### Task 3.2a: two-a\n"
    )
    assert [t.id for t in plan.tasks] == ["3.1", "3.2", "3.2a", "3.10"]


def test_run_order_follows_dependencies_then_file_order() -> None:
    plan = parse_plan(
        md(
            """
            ## Batch 1: first in file
            **Dependencies:** Batch 2
            ### Task 1.1: a
            ## Batch 2: runs first
            **Dependencies:** None
            ### Task 2.1: b
            ## Batch 3: independent
            **Dependencies:** None
            ### Task 3.1: c
            """
        )
    )
    assert [b.id for b in plan.batches] == ["2", "1", "3"]


def test_front_matter_and_title() -> None:
    plan = parse_plan(
        "---\ntitle: x\n# not a header\n---\n\n# Real Title\n## Batch 1: b\n### Task 1.1: t\n"
    )
    assert plan.title == "Real Title"


def test_no_title_is_none() -> None:
    assert parse_plan("## Batch 1: b\n### Task 1.1: t\n").title is None


def test_utf8_bytes_with_bom() -> None:
    plan = parse_plan("\ufeff## Batch 1: café\n### Task 1.1: naïve ✓\n".encode())
    assert plan.batches[0].title == "café"
