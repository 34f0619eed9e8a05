"""build_prompt: everything the agent needs, in a stable text."""

from __future__ import annotations

from autonomous_pipeline.backends.prompt import build_prompt
from autonomous_pipeline.models.plan import Check, CheckKind, FileRef, Task
from autonomous_pipeline.plan_parser import parse_plan
from tests.conftest import md

INSTRUCTIONS = "Create `toolkit/slug.py`:\n```python\ndef slugify(t):\n    return t\n```"


def task() -> Task:
    return Task(
        id="1.1",
        title="Add slugify",
        line=10,
        files=[
            FileRef(action="create", path="toolkit/slug.py", line=11),
            FileRef(action="Modify", path="README.md", line=12),
        ],
        verification=[
            Check(text="python3 -m unittest tests.test_slug", kind=CheckKind.COMMAND, line=20),
            Check(text="ruff check .\nmypy toolkit", kind=CheckKind.COMMAND, line=21),
            Check(text="Slugs contain only lowercase letters", kind=CheckKind.CRITERION, line=22),
        ],
        instructions=INSTRUCTIONS,
    )


def test_prompt_carries_the_whole_task() -> None:
    text = build_prompt(task(), "Demo plan", "a" * 40)
    assert text.startswith("# Plan: Demo plan\n")
    assert "Task 1.1: Add slugify" in text
    assert INSTRUCTIONS in text
    assert "- Create: `toolkit/slug.py`" in text and "- Modify: `README.md`" in text
    assert "- `python3 -m unittest tests.test_slug`" in text
    assert "```sh\nruff check .\nmypy toolkit\n```" in text
    assert "- Slugs contain only lowercase letters" in text
    assert "a" * 40 in text
    for rule in ("current directory", "Do not commit, push", "outside the task's scope"):
        assert rule in text


def test_prompt_is_deterministic_and_depends_only_on_its_inputs() -> None:
    assert build_prompt(task(), "Demo plan", "abc") == build_prompt(task(), "Demo plan", "abc")
    assert build_prompt(task(), "Demo plan", "abc") != build_prompt(task(), "Demo plan", "abd")


def test_prompt_without_title_files_or_checks() -> None:
    text = build_prompt(Task(id="2", title="Tidy", line=1), None, "abc")
    assert text.startswith("## Task 2: Tidy\n")
    for absent in ("# Plan", "### Instructions", "### Files", "### Verification", "### Review"):
        assert absent not in text
    assert "### Ground rules" in text


def test_a_command_with_backticks_gets_a_longer_fence() -> None:
    t = Task(
        id="3",
        title="x",
        line=1,
        verification=[Check(text="echo ```", kind=CheckKind.COMMAND, line=2)],
    )
    assert "````sh\necho ```\n````" in build_prompt(t, None, "abc")


def test_prompt_from_a_parsed_plan() -> None:
    plan = parse_plan(
        md(
            """
            # Toolkit

            ## Batch 1: Basics

            ### Task 1.1: Add slugify
            **Files:**
            - Create: `toolkit/slug.py`

            **Implementation:**
            Create `toolkit/slug.py`:
            ```python
            def slugify(t): ...
            ```

            **Verification:**
            - `python3 -m unittest tests.test_slug`
            - Slugs are lowercase
            """
        )
    )
    t = plan.tasks[0]
    text = build_prompt(t, plan.title, "abc")
    assert "# Plan: Toolkit" in text
    assert t.instructions in text
    assert "- Create: `toolkit/slug.py`" in text
    assert "python3 -m unittest tests.test_slug" in text
    assert "Slugs are lowercase" in text
