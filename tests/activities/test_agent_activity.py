"""run_agent: sessions and resumes, costs, failure kinds, fix rounds."""

from __future__ import annotations

import shutil
import sys

import pytest
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.activities.agent import AUTH_ERROR, AgentActivities
from autonomous_pipeline.backends.git import GitError
from autonomous_pipeline.backends.registry import make_agent
from autonomous_pipeline.backends.sandboxes.common import GitSandbox
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.activity_io import (
    SLOT_GONE,
    FixRequest,
    RunAgentIn,
    RunAgentOut,
    SlotGrant,
)
from autonomous_pipeline.models.review import Finding
from autonomous_pipeline.models.run import AgentConfig
from tests.activities.conftest import RUN, SID, Workspace, activity_env, task
from tests.gitutil import sh

CLAUDE = AgentConfig(backend="claude", timeout_s=30)


def agent_in(base: str, agent: AgentConfig = CLAUDE, **fields: object) -> RunAgentIn:
    values: dict[str, object] = {
        "run_key": RUN,
        "task": task(),
        "base_commit": base,
        "agent": agent,
        "session_id": SID,
    }
    return RunAgentIn.model_validate(values | fields)


async def run(ws: Workspace, inp: RunAgentIn, attempt: int = 1) -> RunAgentOut:
    acts = AgentActivities(ws.sandboxes, make_agent)
    return await activity_env(attempt).run(acts.run_agent, inp)


def session_flags(argv: list[str]) -> list[str]:
    return [f"{a} {argv[i + 1]}" for i, a in enumerate(argv) if a in ("--session-id", "--resume")]


async def test_first_attempt_starts_the_session_and_reports_exact_costs(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    (wt / "stale.txt").write_text("left by someone\n")  # a first attempt starts clean
    ws.stub("success", STUB_CLAUDE_WRITE="hello.py")
    out = await run(ws, agent_in(base))
    assert out.succeeded and out.error is None and out.failure_kind is None
    assert (out.cost_usd, out.tokens_in, out.tokens_out) == (0.09495555, 20 + 19211 + 55831, 407)
    assert out.session_id == SID and out.attempt == 1
    assert out.changed_files == ["hello.py"] and out.commit is not None
    assert sh(wt, "rev-parse", "HEAD^") == base
    assert not (wt / "stale.txt").exists()
    (argv,) = ws.stub_calls()
    assert session_flags(argv) == [f"--session-id {SID}"]
    # In its sandbox the agent may run anything: the sandbox is the boundary.
    assert argv[argv.index("--permission-mode") + 1] == "bypassPermissions"


async def test_a_first_attempt_starts_clean_of_changed_files_too(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    # A tracked file changed and a folder made since the worktree was prepared: none of it is
    # the agent's starting point.
    tracked = next(p for p in sorted(wt.iterdir()) if p.is_file() and p.name != ".git")
    original = tracked.read_bytes()
    tracked.write_text("changed by someone\n")
    (wt / "build" / "deep").mkdir(parents=True)
    (wt / "build" / "deep" / "out.o").write_bytes(b"\0")
    ws.stub("success", STUB_CLAUDE_WRITE="hello.py")
    out = await run(ws, agent_in(base))
    assert out.succeeded and out.changed_files == ["hello.py"]
    assert tracked.read_bytes() == original and not (wt / "build").exists()


async def test_a_retry_resumes_the_session_in_the_worktree_as_it_was(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    # What the first attempt wrote before its worker died.
    (wt / "partial.py").write_text("print('half done')\n")
    ws.stub("success", STUB_CLAUDE_WRITE="hello.py")
    out = await run(ws, agent_in(base), attempt=2)
    assert out.succeeded and out.attempt == 2
    assert sorted(out.changed_files) == ["hello.py", "partial.py"]
    (argv,) = ws.stub_calls()
    assert session_flags(argv) == [f"--resume {SID}"]


async def test_a_resume_without_its_worktree_starts_afresh(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    shutil.rmtree(wt)
    ws.stub("success", STUB_CLAUDE_WRITE="hello.py")
    out = await run(ws, agent_in(base, resume=True))
    assert out.succeeded and out.changed_files == ["hello.py"]
    (argv,) = ws.stub_calls()
    assert session_flags(argv) == [f"--session-id {SID}"]


async def test_a_usage_limit_is_a_result_with_its_reset_time(ws: Workspace) -> None:
    base, _ = await ws.prepare()
    ws.stub("usage_limit")
    out = await run(ws, agent_in(base))
    assert not out.succeeded and out.commit is None
    assert out.failure_kind == "rate_limit" and out.reset_at == 1767279600.0
    assert (out.error or "").startswith("rate_limit: ")


async def test_overload_and_max_turns_are_results_too(ws: Workspace) -> None:
    base, _ = await ws.prepare()
    ws.stub("overloaded")
    assert (await run(ws, agent_in(base))).failure_kind == "overloaded"
    ws.stub("max_turns")
    out = await run(ws, agent_in(base))
    assert out.failure_kind == "max_turns" and out.cost_usd == 0.0789927


async def test_refused_credentials_are_not_retried(ws: Workspace) -> None:
    base, _ = await ws.prepare()
    ws.stub("auth_invalid_key")
    with pytest.raises(ApplicationError) as caught:
        await run(ws, agent_in(base))
    assert caught.value.type == AUTH_ERROR and caught.value.non_retryable
    assert "Invalid API key" in caught.value.message


async def test_a_guessed_auth_failure_of_a_command_agent_is_not_fatal(ws: Workspace) -> None:
    base, _ = await ws.prepare()
    script = "echo 'FAILED tests/test_api.py::test_401 - unauthorized'; exit 1"
    cfg = AgentConfig(backend="command", command=["sh", "-c", script], timeout_s=30)
    out = await run(ws, agent_in(base, cfg))
    assert not out.succeeded and out.failure_kind == "other"
    assert out.session_id is None


async def test_a_fix_round_commits_on_top_of_the_task_commit(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    ws.stub("success", STUB_CLAUDE_WRITE="hello.py")
    first = await run(ws, agent_in(base))
    assert first.commit is not None
    # A command agent (no sessions): the fix round starts from the task's commit.
    script = 'grep -q "greet the user by name" "$1" && echo "# fixed" >> hello.py'
    cfg = AgentConfig(
        backend="command", command=["sh", "-c", script, "sh", "{prompt_file}"], timeout_s=30
    )
    fix = FixRequest(
        findings=[Finding(file="hello.py", message="greet the user by name")],
        failing_checks=["pytest -q"],
    )
    (wt / "junk.txt").write_text("not part of the fix\n")
    out = await run(ws, agent_in(base, cfg, start_commit=first.commit, fix=fix, resume=True))
    assert out.succeeded and out.commit not in (None, first.commit)
    assert sh(wt, "rev-parse", "HEAD^") == first.commit
    assert out.changed_files == ["hello.py"]  # measured from the task's base
    assert (wt / "hello.py").read_text().endswith("# fixed\n")
    assert sh(wt, "log", "-1", "--format=%s") == "Task 1.1: Say hello (fix round)"
    tmp = ws.sb.layout.tmp_dir(TaskRef(RUN, "1.1"))  # the task's TMPDIR, outside the worktree
    prompt = next(tmp.glob("*.prompt.md")).read_text()
    assert "## Fix round" in prompt and "`pytest -q` fails" in prompt


async def test_a_resumed_fix_round_keeps_the_worktree_and_resumes(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    ws.stub("success", STUB_CLAUDE_WRITE="hello.py")
    first = await run(ws, agent_in(base))
    assert first.commit is not None
    ws.stub("success", STUB_CLAUDE_WRITE="extra.py")
    fix = FixRequest(findings=[Finding(message="add extra.py")])
    out = await run(ws, agent_in(base, start_commit=first.commit, fix=fix, resume=True))
    assert out.succeeded and sh(wt, "rev-parse", "HEAD^") == first.commit
    assert sorted(out.changed_files) == ["extra.py", "hello.py"]
    calls = ws.stub_calls()
    assert session_flags(calls[-1]) == [f"--resume {SID}"]
    prompt = calls[-1][calls[-1].index("-p") + 1]
    assert "add extra.py" in prompt and f"checked out at commit {first.commit}" in prompt


async def test_a_fix_round_that_changes_nothing_returns_the_task_commit(ws: Workspace) -> None:
    base, _ = await ws.prepare()
    ws.stub("success", STUB_CLAUDE_WRITE="hello.py")
    first = await run(ws, agent_in(base))
    cfg = AgentConfig(backend="command", command=[sys.executable, "-c", "pass"], timeout_s=30)
    fix = FixRequest(findings=[Finding(message="nothing really")])
    out = await run(ws, agent_in(base, cfg, start_commit=first.commit, fix=fix))
    assert out.succeeded and out.commit == first.commit


@pytest.mark.parametrize("slot", [True, False], ids=["slot-given-back", "slot-held"])
async def test_a_change_not_collected_after_the_slot_went_back_is_not_retried_in_place(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, slot: bool
) -> None:
    # Its agent exited and gave its slot to the next agent: a retry here would run this agent
    # again beside that one. Holding its slot to the end, a step is retried as ever.
    base, _ = await ws.prepare()
    ws.stub("success", STUB_CLAUDE_WRITE="hello.py")

    async def broken(*args: object, **kwargs: object) -> None:
        raise GitError("index.lock: File exists")

    monkeypatch.setattr(GitSandbox, "collect", broken)
    grant = SlotGrant(
        workflow_id="run", run_id="r", task_workflow_id="run/task-1.1", task_id="1.1", grant=1
    )
    inp = agent_in(base, slot=grant if slot else None)
    with pytest.raises(Exception) as raised:
        await run(ws, inp, attempt=2)
    if slot:
        assert isinstance(raised.value, ApplicationError) and raised.value.type == SLOT_GONE
        assert raised.value.non_retryable and raised.value.details[0] == 2
        assert raised.value.details[1]["cost_usd"] == 0.09495555  # what the agent spent
        assert isinstance(raised.value.__cause__, GitError)
    else:
        assert isinstance(raised.value, GitError)
