"""Where a task's change stands between the steps of an attempt."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from autonomous_pipeline.models.activity_io import FixRequest


@dataclass
class Work:
    base: str  # what the change is on (the target's tip after a conflict fix)
    commit: str  # the change's tip
    rounds: int = 0  # fix rounds spent on checks and findings
    conflict_fixed: bool = False  # the one conflict fix round is spent
    # A fix round that changed nothing leaves its request standing for the next round.
    standing: FixRequest | None = None
