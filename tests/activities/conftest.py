"""Activities called directly (temporalio's ActivityEnvironment) on real repositories.

The `claude` on PATH is tests/fixtures/claude/stub_claude.py. run_agent gives the agent a minimal
environment, so the stub's settings cannot come from the test's environment: the wrapper script
reads them from a file that `Workspace.stub` writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from autonomous_pipeline.backends.sandboxes.policy import WorkerPolicy
from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.plan import Task
from tests.gitutil import isolate_git, make_user_repo, sh

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude"
STUB = FIXTURES / "stub_claude.py"
TARGET = "pipeline/out"
RUN = "r1"
SID = "0b7d5c3e-8f21-4a6b-9c4d-1e2f3a4b5c6d"


class Workspace:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = make_user_repo(tmp)
        self.main = sh(self.repo, "rev-parse", "main")
        self.sb = Workspaces(tmp / "ws")
        # Every configuration a test asks for is honoured: the policy has its own tests.
        self.sandboxes = Sandboxes(self.sb, WorkerPolicy(any_run=True))
        # Beside the wrapper: the sandbox shows the folder of the program it runs, not the rest.
        self.stub_env = tmp / "bin" / "stub.env"
        # Written by the stub from inside its sandbox: the one place outside it that it may write.
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.stub_log = self.logs / "stub.log"
        bin_dir = tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        claude = bin_dir / "claude"
        claude.write_text(
            "#!/bin/sh\n"
            f"[ -f {shlex.quote(str(self.stub_env))} ] && . {shlex.quote(str(self.stub_env))}\n"
            f'exec {shlex.quote(sys.executable)} {shlex.quote(str(STUB))} "$@"\n'
        )
        claude.chmod(0o755)
        self.bin = bin_dir

    def stub(self, fixture: str | None = "success", **env: str) -> None:
        """Configure the stub claude for the next runs."""
        values = {"STUB_CLAUDE_LOG": str(self.stub_log), **env}
        if fixture is not None:
            values["STUB_CLAUDE_FIXTURE"] = str(FIXTURES / f"{fixture}.jsonl")
        self.stub_env.write_text(
            "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
        )

    def stub_calls(self) -> list[list[str]]:
        if not self.stub_log.exists():
            return []
        entries = [json.loads(line) for line in self.stub_log.read_text().splitlines()]
        return [e["argv"] for e in entries if "argv" in e]

    async def prepare(self, task_id: str = "1.1") -> tuple[str, Path]:
        await self.sb.prepare_run(str(self.repo), self.main, TARGET)
        base, co = await self.sb.prepare(TaskRef(RUN, task_id), str(self.repo), TARGET)
        return base, co.path

    def wt(self, task_id: str = "1.1") -> Path:
        return self.sb.layout.worktree_dir(TaskRef(RUN, task_id))

    def transcript(self, task_id: str = "1.1") -> Path:
        return self.sb.layout.transcript_path(TaskRef(RUN, task_id))


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    isolate_git(monkeypatch, tmp_path)
    workspace = Workspace(tmp_path)
    monkeypatch.setenv("PATH", f"{workspace.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PIPELINE_AGENT_WRITABLE", str(workspace.logs))
    return workspace


def task(task_id: str = "1.1", **fields: object) -> Task:
    values: dict[str, object] = {
        "id": task_id,
        "title": "Say hello",
        "line": 1,
        "instructions": "Create hello.py that prints a greeting.",
    }
    return Task.model_validate(values | fields)


def activity_env(attempt: int = 1) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env
