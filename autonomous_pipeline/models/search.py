"""The search attributes a run's workflows carry, so that runs and tasks can be found by what they
are (`temporal workflow list --query "PipelineStatus='failed'"`, the Web UI's filter, `runs`).

Names and kinds only: the embedded server registers them as it starts, `runs` queries them, and
the workflows (`workflows.visibility`) write them."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    KEYWORD = "Keyword"
    DOUBLE = "Double"


RUN = "PipelineRun"  # the run's workflow id, on the run and on each of its tasks
TASK = "PipelineTask"  # the task's id (tasks only)
STATUS = "PipelineStatus"  # the run's or the task's state now (see visibility.task_state)
COST = "PipelineCostUsd"  # what its agents have spent so far
TARGET = "PipelineTarget"  # the target branch

ATTRIBUTES: dict[str, Kind] = {
    RUN: Kind.KEYWORD,
    TASK: Kind.KEYWORD,
    STATUS: Kind.KEYWORD,
    COST: Kind.DOUBLE,
    TARGET: Kind.KEYWORD,
}

# A task's state while it waits for a person (PipelineStatus; the others are TaskStatus values).
AWAITING_APPROVAL = "awaiting_approval"


def server_flags() -> list[str]:
    """`temporal server start-dev` flags that register every attribute."""
    return [
        arg
        for name, kind in ATTRIBUTES.items()
        for arg in ("--search-attribute", f"{name}={kind.value}")
    ]


def create_commands(namespace: str) -> list[str]:
    """The commands that register them on a cluster (an administrator's step): one per kind,
    as the CLI takes one --type per call."""
    return [
        f"temporal operator search-attribute create --namespace {namespace} "
        + " ".join(f"--name {name}" for name, k in ATTRIBUTES.items() if k is kind)
        + f" --type {kind.value}"
        for kind in Kind
    ]
