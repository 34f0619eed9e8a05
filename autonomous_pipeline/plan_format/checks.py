"""Whole-plan checks: ids, dependencies, cycles, run order and overlapping files."""

from __future__ import annotations

import heapq
import itertools
import re
from collections import defaultdict

from autonomous_pipeline.models.plan import Batch, PlanIssue, Task, name_problem

# Verbs that write a file: two parallel tasks writing one path will conflict at merge.
_WRITES = frozenset({"create", "modify", "update", "delete", "test"})


def natural_key(task_id: str) -> tuple[tuple[int, int, str], ...]:
    """`3.2` sorts before `3.10`; `1.2` before `1.2a`; letters after numbers."""
    parts = []
    for part in task_id.split("."):
        m = re.match(r"(\d*)(.*)", part)
        digits, rest = (m.group(1), m.group(2)) if m else ("", part)
        parts.append((0 if digits else 1, int(digits) if digits else 0, rest.lower()))
    return tuple(parts)


def check_ids(batches: list[Batch], orphans: list[Task]) -> list[PlanIssue]:
    errors: list[PlanIssue] = []
    seen_batch: dict[str, int] = {}
    for b in batches:
        key = b.id.lower()
        if key in seen_batch:
            errors.append(
                PlanIssue(
                    line=b.line,
                    message=f"duplicate batch id {b.id!r} (first at line {seen_batch[key]})",
                )
            )
        else:
            seen_batch[key] = b.line
        if not b.tasks:
            errors.append(
                PlanIssue(
                    line=b.line,
                    message=f"batch {b.id} has no tasks: expected `### Task N.M: title` headers "
                    "or `- [ ] **N.M** title` items under it",
                )
            )
    seen_task: dict[str, int] = {}
    for t in [t for b in batches for t in b.tasks] + orphans:
        if (why := name_problem(t.id)) is not None:
            shown = f"{t.id[:20]}..." if len(t.id) > 40 else repr(t.id)
            errors.append(PlanIssue(line=t.line, message=f"task id {shown} {why}"))
        key = t.id.lower()
        if key in seen_task:
            errors.append(
                PlanIssue(
                    line=t.line,
                    message=f"duplicate task id {t.id!r} (first at line {seen_task[key]})",
                )
            )
        else:
            seen_task[key] = t.line
    for t in orphans:
        if not t.done:
            errors.append(
                PlanIssue(
                    line=t.line,
                    message=f"task {t.id} is outside any batch; put it under a `## Batch N: title` "
                    "header or mark it done",
                )
            )
    return errors


def check_dependencies(
    batches: list[Batch], orphans: list[Task], dep_lines: dict[str, int]
) -> list[PlanIssue]:
    """Unknown ids, then cycles through batch and task dependencies together."""
    errors: list[PlanIssue] = []
    batch_ids = {b.id.lower(): b.id for b in batches}
    task_ids = {t.id.lower(): t.id for b in batches for t in b.tasks} | {
        t.id.lower(): t.id for t in orphans
    }
    for b in batches:
        for dep in b.depends_on:
            if dep.lower() not in batch_ids:
                errors.append(
                    PlanIssue(
                        line=dep_lines.get("B:" + b.id, b.line),
                        message=f"batch {b.id} depends on unknown batch {dep!r}",
                    )
                )
            elif dep.lower() == b.id.lower():
                errors.append(
                    PlanIssue(
                        line=dep_lines.get("B:" + b.id, b.line),
                        message=f"batch {b.id} depends on itself",
                    )
                )
        for t in b.tasks:
            for dep in t.depends_on:
                if dep.lower() not in task_ids:
                    errors.append(
                        PlanIssue(
                            line=dep_lines.get("T:" + t.id, t.line),
                            message=f"task {t.id} depends on unknown task {dep!r}",
                        )
                    )
    if errors:
        return errors
    return _cycles(batches, dep_lines)


def _graph(batches: list[Batch]) -> dict[str, list[str]]:
    """Nodes `B:x` (batch x finished) and `T:y` (task y finished); edges point at prerequisites."""
    graph: dict[str, list[str]] = {}
    canon = {t.id.lower(): t.id for b in batches for t in b.tasks}
    bcanon = {b.id.lower(): b.id for b in batches}
    for b in batches:
        graph["B:" + b.id] = ["T:" + t.id for t in b.tasks]
        for t in b.tasks:
            graph["T:" + t.id] = [
                "B:" + bcanon[d.lower()] for d in b.depends_on if d.lower() in bcanon
            ] + ["T:" + canon[d.lower()] for d in t.depends_on if d.lower() in canon]
    return graph


def _cycles(batches: list[Batch], dep_lines: dict[str, int]) -> list[PlanIssue]:
    graph = _graph(batches)
    lines = {"B:" + b.id: dep_lines.get("B:" + b.id, b.line) for b in batches}
    lines |= {"T:" + t.id: dep_lines.get("T:" + t.id, t.line) for b in batches for t in b.tasks}
    state: dict[str, int] = {}  # 1 on the stack, 2 finished
    for root in graph:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            if i < len(graph[node]):
                stack[-1] = (node, i + 1)
                nxt = graph[node][i]
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    return [_cycle_issue(cycle, lines, batches, dep_lines)]
                if not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return []


def _cycle_issue(
    cycle: list[str], lines: dict[str, int], batches: list[Batch], dep_lines: dict[str, int]
) -> PlanIssue:
    follows_previous = {"T:" + t.id for b in batches if b.implicit_dependency for t in b.tasks}
    names = [("batch " if n.startswith("B:") else "task ") + n[2:] for n in cycle]
    hint = ""
    if any(a in follows_previous and b.startswith("B:") for a, b in itertools.pairwise(cycle)):
        hint = " (a batch without **Dependencies:** follows the previous batch in the file; add the line to change that)"
    # Report the cycle where it is written: the first dependency line among its members.
    written = [dep_lines[n] for n in cycle[:-1] if n in dep_lines]
    line = min(written) if written else min(lines[n] for n in cycle[:-1])
    return PlanIssue(line=line, message="dependency cycle: " + " -> ".join(names) + hint)


def run_order(batches: list[Batch]) -> list[Batch]:
    """Topological order of batches; between independent batches, file order."""
    index = {b.id.lower(): i for i, b in enumerate(batches)}
    indegree = [0] * len(batches)
    dependants: dict[int, list[int]] = defaultdict(list)
    for i, b in enumerate(batches):
        for dep in {d.lower() for d in b.depends_on}:
            if dep in index:
                indegree[i] += 1
                dependants[index[dep]].append(i)
    ready = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(ready)
    order: list[Batch] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(batches[i])
        for j in dependants[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(ready, j)
    return order


def unverified_warning(batches: list[Batch]) -> PlanIssue | None:
    """Tasks to run with no verification command: only the reviewer's reading checks them. One
    warning for them all (a plan may have hundreds), at the first."""
    bare = [t for b in batches for t in b.tasks if not t.done and not t.commands]
    if not bare:
        return None
    ids = ", ".join(t.id for t in bare[:12]) + (", ..." if len(bare) > 12 else "")
    total = sum(1 for b in batches for t in b.tasks if not t.done)
    return PlanIssue(
        line=bare[0].line,
        message=f"{len(bare)} of {total} tasks have no verification command (a `- [ ] `command`` "
        f"under **Verification:**), so nothing but the reviewer checks them: {ids}",
    )


def overlap_warnings(batches: list[Batch]) -> list[PlanIssue]:
    """Two tasks that may run at the same time and both write one file will conflict."""
    writers: dict[str, list[Task]] = defaultdict(list)
    for b in batches:
        for t in b.tasks:
            if t.done:
                continue
            for path in dict.fromkeys(f.path.rstrip("/") for f in t.files if f.action in _WRITES):
                writers[path].append(t)
    graph = _graph(batches)
    reach: dict[str, set[str]] = {}
    warnings = []
    for path, tasks in writers.items():
        for i, first in enumerate(tasks):
            for second in tasks[i + 1 :]:
                x, y = "T:" + first.id, "T:" + second.id
                if _reaches(graph, x, y, reach) or _reaches(graph, y, x, reach):
                    continue
                warnings.append(
                    PlanIssue(
                        line=second.line,
                        message=f"tasks {first.id} and {second.id} may run in parallel and both change "
                        f"{path}; they will conflict at merge (add **Depends on:** Task {first.id} "
                        f"to task {second.id})",
                    )
                )
    return warnings


def _reaches(graph: dict[str, list[str]], start: str, goal: str, memo: dict[str, set[str]]) -> bool:
    if start not in memo:
        seen: set[str] = set()
        todo = [start]
        while todo:
            node = todo.pop()
            for nxt in graph.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        memo[start] = seen
    return goal in memo[start]


def cycles(batches: list[Batch]) -> list[PlanIssue]:
    """The first dependency cycle through batches and tasks, at its first member's line: the
    check a running plan's revision gets (a parsed plan no longer knows its dependency lines)."""
    return _cycles(batches, {})
