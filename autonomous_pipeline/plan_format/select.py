"""--start-batch / --end-batch: choose the batches of a run, and refuse a choice that cannot run."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from autonomous_pipeline.errors import PlanError
from autonomous_pipeline.models.plan import Plan, PlanIssue


def _number(value: str) -> Decimal | None:
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def select_batches(plan: Plan, start: str | None, end: str | None) -> Plan:
    """Keep the batches from `start` to `end`, inclusive.

    Numeric ids are compared by value when both bounds and every batch id are numbers (so
    `--start-batch 8` in a plan numbered 7, 8, 9, 10, 1, 2 keeps 8, 9 and 10); otherwise the bounds
    name batches and the range is by position in the file.
    """
    if start is None and end is None:
        return plan
    batches = sorted(plan.batches, key=lambda b: b.line)  # file order
    bounds = [b for b in (start, end) if b is not None]
    by_value = all(_number(b) is not None for b in bounds) and all(
        _number(b.id) is not None for b in batches
    )
    if by_value:
        lo = _number(start) if start is not None else None
        hi = _number(end) if end is not None else None
        chosen = {
            b.id
            for b in batches
            if (lo is None or _number(b.id) >= lo) and (hi is None or _number(b.id) <= hi)  # type: ignore[operator]
        }
    else:
        ids = [b.id.lower() for b in batches]
        known = ", ".join(b.id for b in batches)
        missing = [x for x in bounds if x.lower() not in ids]
        if missing:
            raise PlanError(
                [
                    PlanIssue(line=1, message=f"no batch {m!r} in this plan (batches: {known})")
                    for m in missing
                ]
            )
        i = ids.index(start.lower()) if start is not None else 0
        j = ids.index(end.lower()) if end is not None else len(ids) - 1
        chosen = {b.id for b in batches[i : j + 1]}
    if not chosen:
        rng = f"{start or 'first'}..{end or 'last'}"
        raise PlanError(
            [
                PlanIssue(
                    line=1,
                    message=f"--start-batch/--end-batch {rng} selects no batch (batches: {', '.join(b.id for b in batches)})",
                )
            ]
        )

    errors: list[PlanIssue] = []
    warnings = list(plan.warnings)
    for b in plan.batches:
        if b.id not in chosen:
            continue
        for dep in b.depends_on:
            dep_batch = plan.batch(dep)
            if dep_batch.id in chosen or dep_batch.done:
                continue
            if b.implicit_dependency:
                warnings.append(
                    PlanIssue(
                        line=b.line,
                        message=f"batch {b.id} follows batch {dep_batch.id} in the file, which is not selected; assuming it is done",
                    )
                )
                continue
            errors.append(
                PlanIssue(
                    line=b.line,
                    message=f"batch {b.id} depends on batch {dep_batch.id}, which is not selected and not done; "
                    f"include it with --start-batch {dep_batch.id}, or mark its tasks done",
                )
            )
    # A task's own `Depends on` may reach into a batch that is not selected: the same rule.
    owner = {t.id.lower(): (b, t) for b in plan.batches for t in b.tasks}
    for b in plan.batches:
        if b.id not in chosen:
            continue
        for t in b.tasks:
            for dep in t.depends_on:
                found = owner.get(dep.lower())
                if found is None or found[0].id in chosen or found[1].done:
                    continue
                dep_batch, dep_task = found
                errors.append(
                    PlanIssue(
                        line=t.line,
                        message=f"task {t.id} depends on task {dep_task.id} of batch {dep_batch.id}, "
                        f"which is not selected and not done; include it with --start-batch {dep_batch.id}, "
                        "or mark the task done",
                    )
                )
    if errors:
        raise PlanError(errors, warnings)
    kept = [
        b
        if not b.implicit_dependency or b.depends_on[0] in chosen
        else b.model_copy(update={"depends_on": [], "implicit_dependency": False})
        for b in plan.batches
        if b.id in chosen
    ]
    kept = [
        b.model_copy(update={"depends_on": [d for d in b.depends_on if d in chosen]}) for b in kept
    ]
    return plan.model_copy(update={"batches": kept, "warnings": warnings})
