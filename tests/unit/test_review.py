"""Reading a reviewer's verdict, and the prompts of review and fix rounds."""

from __future__ import annotations

from autonomous_pipeline.backends.review import (
    FIX_OUTPUT_CHARS,
    fix_prompt,
    parse_verdict,
    review_prompt,
)
from autonomous_pipeline.models.activity_io import FixRequest
from autonomous_pipeline.models.results import CheckResult
from autonomous_pipeline.models.review import Finding, Severity
from autonomous_pipeline.plan_parser import parse_plan

TASK = parse_plan(
    "## Batch 1: b\n### Task 1.1: Add slugify\nWrite slugify.\n**Acceptance Criteria:**\n- handles unicode\n- `pytest -q`\n"
).tasks[0]


def test_plain_json_verdict() -> None:
    v = parse_verdict('{"approved": true, "summary": "fine", "findings": []}')
    assert v.approved and v.findings == [] and v.summary == "fine"


def test_fenced_verdict_after_prose_with_findings() -> None:
    text = (
        'Looks mostly good.\n```json\n{"approved": false, "findings": [{"severity": "high", "file": "a.py", '
        '"line": "12", "message": "no unicode"}, {"severity": "nit", "message": "naming"}]}\n```\n'
    )
    v = parse_verdict(text)
    assert not v.approved
    assert v.findings[0] == Finding(
        severity=Severity.MAJOR, file="a.py", line=12, message="no unicode"
    )
    assert v.findings[1].severity is Severity.NIT
    assert [f.message for f in v.blocking] == ["no unicode"]


def test_last_verdict_wins() -> None:
    v = parse_verdict('{"approved": false, "findings": []} then, on reflection: {"approved": true}')
    assert v.approved


def test_unreadable_answer_is_not_an_approval() -> None:
    v = parse_verdict("LGTM!")
    assert not v.approved and "no JSON verdict" in v.findings[0].message
    assert not parse_verdict('{"approved": "maybe"}').approved


def test_review_prompt_carries_instructions_criteria_and_diff() -> None:
    p = review_prompt(TASK, "+def slugify(): ...", " a.py | 1 +", TASK.commands)
    assert "Task 1.1: Add slugify" in p and "Write slugify." in p
    assert "- handles unicode" in p and "`pytest -q`" in p and "+def slugify" in p
    big = review_prompt(TASK, "x" * 100_000, "", [])
    assert "more characters of diff not shown" in big and len(big) < 70_000


def test_fix_prompt_lists_what_to_address() -> None:
    finding = Finding(severity=Severity.BLOCKER, file="a.py", line=3, message="wrong")
    fix = FixRequest(findings=[finding], failing_checks=["pytest -q"], conflicts=["b.py"])
    p = fix_prompt(TASK, "BASE", fix)
    assert p.startswith("BASE")
    assert "`pytest -q` fails" in p and "[blocker] (a.py:3) wrong" in p and "b.py" in p
    assert "changed no file" not in p


def test_fix_prompt_shows_the_end_of_a_failing_checks_output() -> None:
    output = "collected 3 items\n" + "noise line\n" * 500 + "E   AssertionError: slug('') == 'x'\n"
    check = CheckResult(command="pytest -q", exit_code=1, passed=False, output_tail=output)
    fix = FixRequest(failing_checks=["pytest -q"], failed=[check], unchanged_rounds=1)
    p = fix_prompt(TASK, "BASE", fix)
    assert "exited 1" in p and "E   AssertionError: slug('') == 'x'" in p
    # Bounded: the end of the output, not all of it.
    assert "collected 3 items" not in p and len(p) < len("BASE") + FIX_OUTPUT_CHARS + 600
    assert "changed no file" in p
