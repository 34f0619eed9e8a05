"""Where a workspace keeps what. Names are checked once, here; every path derives from them.

<workspace>/repos/<name>-<hash>.git         the pipeline's bare clone of a repository
<workspace>/worktrees/<run>/<task>/         a task's checkout
<workspace>/worktrees/_detached/<id>/       a throwaway checkout (a check on the base)
<workspace>/pool/<clone>/<slot>/            checkouts of ended tasks, kept to be reused
<workspace>/transcripts/<run>/<task>.log    what the agent printed (and the reviews beside it)
<workspace>/tmp/<run>/<task>/               the agent's private TMPDIR (its prompt file)
<workspace>/home/<run>/<task>/              the agent's HOME inside a sandbox (its sessions)
<workspace>/steps/<run>/<task>/<step>/      a check's or a reviewer's own TMPDIR and HOME
<workspace>/procs/<run>/<task>/             what runs for the task (a dead attempt's leftovers)
<workspace>/server.json, temporal.db, ...   the control plane: never visible to an agent
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from autonomous_pipeline.models.plan import name_problem


def checked(kind: str, value: str) -> str:
    """`value` if it is safe in a path and a ref name; ValueError otherwise. The plan's parser
    refuses, with their lines, the task ids this would refuse (models.plan.name_problem)."""
    if name_problem(value) is not None:
        raise ValueError(f"{kind} {value!r} is not a safe name (letters, digits, '.', '_', '-')")
    return value


@dataclass(frozen=True)
class TaskRef:
    """One task of one run: the key of everything the workspace keeps for it."""

    run_key: str
    task_id: str

    def __post_init__(self) -> None:
        checked("run key", self.run_key)
        checked("task id", self.task_id)

    def __str__(self) -> str:
        return f"{self.run_key}/{self.task_id}"

    @property
    def branch(self) -> str:
        return f"pipeline/{self.run_key}/task-{self.task_id}"

    @property
    def base_ref(self) -> str:
        return f"refs/pipeline-base/{self.run_key}/{self.task_id}"

    @property
    def conflict_ref(self) -> str:
        return f"refs/pipeline-conflict/{self.run_key}/{self.task_id}"


class Layout:
    def __init__(self, workspace: Path) -> None:
        self.root = Path(workspace).resolve()

    @property
    def repos(self) -> Path:
        return self.root / "repos"

    def clone_dir(self, repo: str) -> Path:
        repo = repo.rstrip("/") or repo
        tail = re.split(r"[/:\\]", repo)[-1].removesuffix(".git")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", tail)[:40].lstrip(".") or "repo"
        digest = hashlib.sha1(repo.encode()).hexdigest()[:10]
        return self.repos / f"{safe}-{digest}.git"

    def worktree_dir(self, task: TaskRef) -> Path:
        return self.root / "worktrees" / task.run_key / task.task_id

    def pool_dir(self, clone: Path) -> Path:
        """Where the checkouts of a clone's ended tasks wait to be reused."""
        return self.root / "pool" / clone.name

    def detached_dir(self) -> Path:
        return self.root / "worktrees" / "_detached" / uuid.uuid4().hex[:12]

    def transcript_path(self, task: TaskRef) -> Path:
        folder = self.root / "transcripts" / task.run_key
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{task.task_id}.log"

    def tmp_dir(self, task: TaskRef) -> Path:
        return self.root / "tmp" / task.run_key / task.task_id

    def home_dir(self, task: TaskRef) -> Path:
        return self.root / "home" / task.run_key / task.task_id

    def steps_dir(self, task: TaskRef) -> Path:
        """Fresh TMPDIRs and HOMEs of the task's checks and reviews, one per runner."""
        return self.root / "steps" / task.run_key / task.task_id

    def procs_dir(self, task: TaskRef) -> Path:
        """Records of the processes running for the task; never visible to a sandbox."""
        return self.root / "procs" / task.run_key / task.task_id

    def sandbox_dir(self) -> Path:
        """Files every sandbox of this workspace is given (its resolv.conf)."""
        return self.root / "sandbox"

    def private_dirs(self, task: TaskRef) -> list[Path]:
        """The task's own folders besides its checkout, made on demand, removed at cleanup."""
        return [self.tmp_dir(task), self.home_dir(task), self.steps_dir(task), self.procs_dir(task)]
