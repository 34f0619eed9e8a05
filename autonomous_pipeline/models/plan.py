"""The typed plan: what `parse_plan` produces and what a run carries in its input."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from autonomous_pipeline.models.sandbox import SandboxKind

# A task's id names its folders, its branch and its workflow: it must be a name all of them take.
MAX_NAME_CHARS = 100
RESERVED_SUFFIX = ".lock"  # git refuses a ref component ending so
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a folder, a branch and a workflow, or None: the one rule the plan's
    parser (with the line) and the workspace layout (for every name it is given) both apply."""
    if len(name) > MAX_NAME_CHARS:
        return (
            f"is {len(name)} characters long; at most {MAX_NAME_CHARS} "
            "(it names the task's folder, branch and workflow)"
        )
    if name.endswith(RESERVED_SUFFIX):
        return f"ends in {RESERVED_SUFFIX!r}, which git refuses in a branch name"
    if (
        not name
        or not (name[0].isascii() and name[0].isalnum())
        or not set(name) <= _NAME_CHARS
        or ".." in name
        or name.endswith(".")
    ):
        return "holds more than letters, digits, '.', '_', '-' (or starts or ends badly)"
    return None


class CheckKind(StrEnum):
    COMMAND = "command"  # a shell command run in the task's worktree
    CRITERION = "criterion"  # prose for the reviewer


class Check(BaseModel):
    """One verification step of a task."""

    model_config = ConfigDict(frozen=True)

    text: str
    kind: CheckKind
    line: int


class FileRef(BaseModel):
    """A file a task says it touches, with the plan's own verb (create, modify, delete, ...)."""

    model_config = ConfigDict(frozen=True)

    action: str
    path: str
    line: int


class Task(BaseModel):
    id: str
    title: str
    line: int
    batch_id: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    done: bool = False
    files: list[FileRef] = Field(default_factory=list)
    verification: list[Check] = Field(default_factory=list)
    instructions: str = ""
    commit_message: str | None = None  # the plan's **Commit:** line

    @property
    def commands(self) -> list[str]:
        return [c.text for c in self.verification if c.kind is CheckKind.COMMAND]

    @property
    def criteria(self) -> list[str]:
        return [c.text for c in self.verification if c.kind is CheckKind.CRITERION]


class Batch(BaseModel):
    id: str
    title: str
    line: int
    depends_on: list[str] = Field(default_factory=list)
    # True when the plan gave no **Dependencies:** line and the batch follows the previous one.
    implicit_dependency: bool = False
    execution_mode: str | None = None  # as the plan wrote it
    # The sandbox its `**Execution Mode:**` names; the run fills in its own for batches naming
    # none, so a run's input says where every batch runs.
    sandbox: SandboxKind | None = None
    tasks: list[Task] = Field(default_factory=list)
    criteria: list[str] = Field(default_factory=list)

    @property
    def done(self) -> bool:
        return bool(self.tasks) and all(t.done for t in self.tasks)


class PlanIssue(BaseModel):
    """An error or a warning, anchored to a 1-based line of the plan."""

    model_config = ConfigDict(frozen=True)

    line: int
    message: str


class Plan(BaseModel):
    title: str | None = None
    # Batches in run order: dependencies first, file order between independent batches.
    batches: list[Batch] = Field(default_factory=list)
    # Tasks marked done that stand outside any batch: reported, never run.
    done_elsewhere: list[Task] = Field(default_factory=list)
    warnings: list[PlanIssue] = Field(default_factory=list)

    @property
    def tasks(self) -> list[Task]:
        return [t for b in self.batches for t in b.tasks]

    def batch(self, batch_id: str) -> Batch:
        for b in self.batches:
            if b.id.lower() == batch_id.lower():
                return b
        raise KeyError(batch_id)
