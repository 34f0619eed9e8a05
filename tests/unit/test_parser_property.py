"""Arbitrary text yields a Plan or a PlanError with lines inside the text, never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autonomous_pipeline.errors import PlanError
from autonomous_pipeline.plan_parser import parse_plan

FRAGMENTS = [
    "## Batch 1: one\n",
    "### Batch A: letters\n",
    "## Batch 2: two\n**Dependencies:** Batch 1\n",
    "**Dependencies:** Batches 1 and 3\n",
    "### Task 1.1: t\n",
    "#### Task 2.1 - u\n",
    "### Task 1.1: dup ✅\n",
    "**Depends on:** Task 1.1, 2.1\n",
    "**Files:**\n- Create: a.py\n- Modify: `../x`\n",
    "**Verification:**\n- `pytest`\n1. works\n",
    "```\n",
    "~~~\n",
    "- [ ] **3.1** checklist\n",
    "- [x] **3.2** done\n",
    "**Status:** done\n",
    "# Title\n",
    "plain prose\n",
    "\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=40), max_size=30))
def test_structured_noise_never_crashes(parts: list[str]) -> None:
    text = "".join(parts)
    _check(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    _check(data)


def _check(source: str | bytes) -> None:
    n_lines = max(1, (source.count(b"\n") if isinstance(source, bytes) else source.count("\n")) + 1)
    try:
        plan = parse_plan(source)
    except PlanError as exc:
        assert exc.errors, "a PlanError always carries at least one error"
        assert all(1 <= e.line <= n_lines for e in exc.errors)
        return
    assert plan.batches and all(b.tasks for b in plan.batches)
    for w in plan.warnings:
        assert 1 <= w.line <= n_lines
