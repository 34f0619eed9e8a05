"""Read a plan file from disk and turn every problem into `FILENAME:LINE: message`."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import NamedTuple

from autonomous_pipeline.errors import PlanError
from autonomous_pipeline.models.plan import Plan, PlanIssue
from autonomous_pipeline.plan_parser import parse_plan, select_batches

# The largest plan read. A run's plan travels in its input, which Temporal refuses above 2 MB;
# the largest real plans are tens of KB and a generated 2,000-task plan about 1 MB. Past this, a
# file is not a plan that can run, and parsing it would take a minute and gigabytes first.
MAX_PLAN_BYTES = 4 * 1024 * 1024


class PlanFile(NamedTuple):
    plan: Plan  # parsed, batches selected
    data: bytes  # the file as read: the run's identity is its digest, so it is read only once
    # The file's tasks outside the selection (and done outside any batch): a dependency on one
    # is met, so a running plan's revision tells the run their ids.
    outside: frozenset[str] = frozenset()


def load_plan(path: Path, start: str | None = None, end: str | None = None) -> PlanFile:
    """Parse and select. Raises PlanError; an unreadable file is a plan error at line 1."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PlanError([PlanIssue(line=1, message=f"cannot read the plan: {reason}")]) from None
    if len(data) > MAX_PLAN_BYTES:
        size = path.stat().st_size if path.is_file() else len(data)
        message = (
            f"the plan is {size / 2**20:.0f} MiB; a plan can be at most "
            f"{MAX_PLAN_BYTES // 2**20} MiB (it travels in the run's input): split it into "
            "files of a few batches each"
        )
        raise PlanError([PlanIssue(line=1, message=message)])
    full = _parse_quickly(data)
    plan = select_batches(full, start, end)
    selected = {t.id for t in plan.tasks}
    outside = {t.id for t in full.tasks if t.id not in selected}
    return PlanFile(plan, data, frozenset(outside | {t.id for t in full.done_elsewhere}))


def _parse_quickly(data: bytes) -> Plan:
    # A large plan allocates a few hundred thousand short-lived objects and no reference cycles:
    # the cyclic collector would run dozens of times for nothing (a third of a 2,000-task parse).
    # This is the command line, before any worker thread exists, so holding the collector for
    # the parse holds it for nothing else; the parser itself leaves the collector alone.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return parse_plan(data)
    finally:
        if collecting:
            gc.enable()
