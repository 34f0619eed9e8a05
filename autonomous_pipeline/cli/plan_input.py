"""Read a plan file from disk and turn every problem into `FILENAME:LINE: message`."""

from __future__ import annotations

from pathlib import Path

from autonomous_pipeline.errors import PlanError
from autonomous_pipeline.models.plan import Plan, PlanIssue
from autonomous_pipeline.plan_parser import parse_plan, select_batches


def load_plan(path: Path, start: str | None = None, end: str | None = None) -> Plan:
    """Parse and select. Raises PlanError; an unreadable file is a plan error at line 1."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PlanError([PlanIssue(line=1, message=f"cannot read the plan: {reason}")]) from None
    plan = parse_plan(data)
    return select_batches(plan, start, end)
