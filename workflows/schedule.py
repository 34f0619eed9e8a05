"""Which task may start, and which can never start: a pure function of the plan and task states.

Batches are not run as barriers one after another: a task waits only for what it depends on (the
tasks of its batch's dependency batches, and its own `Depends on`), so a slow task in batch 1 does
not hold back an unrelated task in a batch that does not depend on it.
"""

from __future__ import annotations

from autonomous_pipeline.models.plan import Plan, Task
from autonomous_pipeline.models.results import TaskStatus

_SATISFYING = frozenset(s for s in TaskStatus if s.satisfies_dependants)
_FAILING = frozenset(s for s in TaskStatus if s.terminal and not s.satisfies_dependants)


class Schedule:
    def __init__(self, plan: Plan, rerun_done: bool = False) -> None:
        self.tasks: dict[str, Task] = {}
        self.order: list[str] = []
        for batch in plan.batches:  # run order, then numeric task order
            for task in batch.tasks:
                self.tasks[task.id] = task
                self.order.append(task.id)
        self.initially_done = {t for t, task in self.tasks.items() if task.done and not rerun_done}
        by_batch: dict[str, list[str]] = {}
        for batch in plan.batches:
            by_batch[batch.id.lower()] = [t.id for t in batch.tasks]
        canon = {t.lower(): t for t in self.tasks}
        self.deps: dict[str, list[str]] = {}
        for batch in plan.batches:
            batch_deps = [t for dep in batch.depends_on for t in by_batch.get(dep.lower(), [])]
            for task in batch.tasks:
                # A dependency outside this run (an unselected batch that is done, a task done
                # before) is already satisfied: only tasks of this run are waited for.
                own = [canon[d.lower()] for d in task.depends_on if d.lower() in canon]
                self.deps[task.id] = list(dict.fromkeys(batch_deps + own))
        self.dep_sets = {t: frozenset(d) for t, d in self.deps.items()}

    def ready(self, states: dict[str, TaskStatus]) -> list[str]:
        """Pending tasks whose every dependency has finished in a state that lets dependants go."""
        # Set operations, not a loop over every dependency of every task: the run calls this on
        # each wake-up, and replays every call, so for 1,000 tasks it must stay linear.
        done = {t for t, s in states.items() if s in _SATISFYING}
        return [
            t for t in self.order if states[t] is TaskStatus.PENDING and self.dep_sets[t] <= done
        ]

    def blocked(self, states: dict[str, TaskStatus]) -> list[tuple[str, str, str]]:
        """Pending tasks that can never start: (task, the dependency that ended without success,
        the reason in words)."""
        failed = {t for t, s in states.items() if s in _FAILING}
        if not failed:
            return []
        out = []
        for t in self.order:
            if states[t] is TaskStatus.PENDING and not self.dep_sets[t].isdisjoint(failed):
                d = next(d for d in self.deps[t] if d in failed)  # the first, in plan order
                out.append((t, d, f"dependency {d} ended {states[d].value}"))
        return out

    def dependants(self, task_id: str) -> list[str]:
        """Every task that waits on `task_id`, directly or not."""
        found: list[str] = []
        todo = [task_id]
        while todo:
            cur = todo.pop()
            for t in self.order:
                if cur in self.deps[t] and t not in found:
                    found.append(t)
                    todo.append(t)
        return found
