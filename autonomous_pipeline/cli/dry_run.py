"""What `--dry-run` prints: the plan as a tree, or as one JSON object."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from autonomous_pipeline.models.plan import CheckKind, Plan, Task


def render_tree(plan: Plan, filename: str, console: Console) -> None:
    runnable = sum(1 for t in plan.tasks if not t.done)
    root = Tree(
        f"[bold]{escape(plan.title or filename)}[/] — {len(plan.batches)} batches, "
        f"{len(plan.tasks)} tasks ({runnable} to run)"
    )
    for b in plan.batches:
        if b.depends_on:
            after = (
                "after "
                + ", ".join(b.depends_on)
                + (" (previous in file)" if b.implicit_dependency else "")
            )
        else:
            after = "no dependencies"
        mode = f", mode {b.execution_mode}" if b.execution_mode else ""
        if b.sandbox is not None:
            mode += f", sandbox {b.sandbox.value}"
        node = root.add(
            f"[bold cyan]Batch {escape(b.id)}[/]: {escape(b.title)}  [dim]line {b.line}; {after}{mode}[/]"
        )
        for t in b.tasks:
            _task_node(node, t)
        for c in b.criteria:
            node.add(f"[dim]exit criterion:[/] {escape(c)}")
    if plan.done_elsewhere:
        done = root.add("[bold green]Done outside any batch[/] (reported, not run)")
        for t in plan.done_elsewhere:
            done.add(f"✓ Task {escape(t.id)}: {escape(t.title)}  [dim]line {t.line}[/]")
    console.print(root)
    for w in plan.warnings:
        console.print(f"[yellow]warning[/] {escape(filename)}:{w.line}: {escape(w.message)}")


def _task_node(parent: Tree, t: Task) -> None:
    mark = "[green]✓ done[/] " if t.done else ""
    deps = f"  [dim]depends on {', '.join(t.depends_on)}[/]" if t.depends_on else ""
    node = parent.add(
        f"{mark}[bold]Task {escape(t.id)}[/]: {escape(t.title)}  [dim]line {t.line}[/]{deps}"
    )
    for f in t.files:
        node.add(f"[magenta]{f.action}[/] {escape(f.path)}")
    for c in t.verification:
        if c.kind is CheckKind.COMMAND:
            node.add(f"[blue]$[/] {escape(c.text)}")
        else:
            node.add(f"[dim]criterion:[/] {escape(c.text)}")
