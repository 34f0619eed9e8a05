"""The Claude Code CLI backend: stream-json parsing from recorded transcripts, and the process.

Fixtures in tests/fixtures/claude/. Recorded from the real CLI 2.1.197 (`claude -p ...
--output-format stream-json --verbose`) on this machine, which has no network and no credentials:

    success, max_turns, max_budget, overloaded, rate_limit_429, auth_invalid_key
        against a local stand-in for the Messages API (ANTHROPIC_BASE_URL on 127.0.0.1, a dummy
        ANTHROPIC_API_KEY): it streamed scripted answers (Read, Write, Edit, then text) or answered
        529, 429 or 401. Tool runs, cost, usage and the error texts are the CLI's own.
    auth_not_logged_in, api_error_success_subtype
        no credentials at all, and a dummy key with no network (connection refused).

Edited afterwards: paths (worktree, HOME), message/tool/request ids, and in `overloaded` the
"check your inference gateway (127.0.0.1:...)" hint, replaced by the one the CLI gives for the
default API. Written by hand after the CLI's 2.1.197 code and published transcripts, because
reproducing them needs a claude.ai subscription: `usage_limit` (a rejected rate_limit_event with
resetsAt, then "You've hit your session limit · resets 3pm (UTC)") and `usage_limit_legacy`
(1.x: "Claude AI usage limit reached|<unix>").
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from autonomous_pipeline.backends import _proc
from autonomous_pipeline.backends.agents import claude_cli
from autonomous_pipeline.backends.agents.claude_cli import (
    NO_CREDENTIALS,
    NOT_FOUND,
    ClaudeCliAgent,
    allowed_tools,
    claude_env,
    credentials_problem,
)
from autonomous_pipeline.backends.agents.claude_stream import (
    ClaudeStream,
    FailureKind,
    classify,
    format_failure,
    parse_failure,
    reset_time,
)
from autonomous_pipeline.backends.base import AgentOutcome, AgentRequest
from autonomous_pipeline.backends.registry import agent_backend
from tests.sandboxes import run_with

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude"
STUB = FIXTURES / "stub_claude.py"
SID = "3f2b8c1e-9d4a-4e7b-8a61-0c5d2e9f7b13"


def fixture_lines(name: str) -> list[str]:
    return (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()


def result_line(name: str) -> dict[str, object]:
    (line,) = [ln for ln in fixture_lines(name) if json.loads(ln)["type"] == "result"]
    out: dict[str, object] = json.loads(line)
    return out


def replay(name: str, exit_code: int | None = None) -> tuple[ClaudeStream, AgentOutcome]:
    stream = ClaudeStream()
    for line in fixture_lines(name):
        stream.feed(line)
    if exit_code is None:
        exit_code = 1 if (stream.result or {}).get("is_error") else 0
    return stream, stream.outcome(exit_code)


class Beats(list[str]):
    def __call__(self, note: str) -> None:
        self.append(note)


# --------------------------------------------------------------------------------- parsing


def test_success_costs_and_tokens_come_exactly_from_the_result_line() -> None:
    stream, out = replay("success")
    assert out.succeeded and out.error is None and out.exit_code == 0
    assert out.cost_usd == 0.09495555
    assert out.tokens_in == 20 + 19211 + 55831  # input + cache writes + cache reads
    assert out.tokens_out == 407
    assert out.session_id == SID
    assert out.summary == "Created `hello.py` with a `main()` that prints the greeting."
    assert stream.turns == 4 and stream.tool_uses == 3 and stream.last_tool == "Edit"
    assert stream.model == "claude-sonnet-4-5-20250929" and "Edit" in stream.tools
    assert stream.note() == "turn 4, $0.0950, last tool: Edit, finished"


def test_before_the_result_the_cost_is_an_estimate_from_the_tokens() -> None:
    stream = ClaudeStream()
    for line in fixture_lines("success")[:-1]:
        stream.feed(line)
    assert stream.estimated and stream.result is None
    assert stream.cost_usd == pytest.approx(0.09495555, rel=0.1)
    assert stream.note().startswith("turn 4, ~$0.09")
    tokens_in, _ = stream.tokens()
    assert tokens_in == 20 + 19211 + 55831


def test_is_error_wins_over_a_success_subtype_and_a_zero_exit() -> None:
    result = result_line("api_error_success_subtype")
    assert result["subtype"] == "success" and result["is_error"] is True
    for code in (0, 1):
        _, out = replay("api_error_success_subtype", exit_code=code)
        assert not out.succeeded
        assert out.error == "other: API Error: Unable to connect to API (ConnectionRefused)"
        assert out.summary == "API Error: Unable to connect to API (ConnectionRefused)"


@pytest.mark.parametrize(
    ("name", "reset_at"),
    [
        ("usage_limit", 1767279600.0),  # from the rejected rate_limit_event
        ("usage_limit_legacy", 1735689600.0),  # from "...|1735689600"
        ("rate_limit_429", None),  # an API key's 429 says no reset time
    ],
)
def test_rate_limits_are_classified_with_their_reset_time(
    name: str, reset_at: float | None
) -> None:
    stream, out = replay(name)
    assert not out.succeeded and out.error
    failure = stream.failure()
    assert failure is not None and failure.kind is FailureKind.RATE_LIMIT
    assert failure.reset_at == reset_at
    assert out.failure == failure  # handed on as data, not only as text
    assert out.error.startswith("rate_limit: ")
    assert parse_failure(out.error) == (FailureKind.RATE_LIMIT, reset_at)
    if reset_at is not None:
        assert out.error.endswith(f"(resets at {int(reset_at)})")


def test_max_turns_fails_with_that_reason_and_keeps_the_cost() -> None:
    _, out = replay("max_turns")
    assert not out.succeeded and out.exit_code == 1
    assert out.error == "max_turns: Reached maximum number of turns (2)"
    assert out.cost_usd == 0.0789927
    assert out.tokens_in == 10 + 18646 + 18234 and out.tokens_out == 238
    assert parse_failure(out.error) == (FailureKind.MAX_TURNS, None)


def test_budget_stop_is_classified_and_its_empty_usage_falls_back_to_the_stream() -> None:
    stream, out = replay("max_budget")
    assert out.error == "budget: Reached maximum budget ($0.05)"
    assert out.cost_usd == 0.0698295
    assert out.tokens_in == 4 + 18234  # the result line's usage is all zeros here
    assert stream.result is not None and stream.result["usage"]["input_tokens"] == 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "kind", "text"),
    [
        ("auth_invalid_key", FailureKind.AUTH, "Invalid API key · Fix external API key"),
        ("auth_not_logged_in", FailureKind.AUTH, "Not logged in · Please run /login"),
        ("overloaded", FailureKind.OVERLOADED, "API Error: 529 Overloaded."),
    ],
)
def test_auth_and_overload_failures(name: str, kind: FailureKind, text: str) -> None:
    stream, out = replay(name)
    assert not out.succeeded and out.error
    assert out.error.startswith(f"{kind.value}: {text}")
    assert classify(stream.result or {}) is kind
    assert parse_failure(out.error) == (kind, None)


def test_api_retries_show_in_the_note() -> None:
    stream = ClaudeStream()
    for line in fixture_lines("overloaded")[:3]:
        stream.feed(line)
    assert (
        stream.note() == "turn 0, ~$0.0000, last tool: none, API retry: 529 overloaded, attempt 2/2"
    )


def test_lines_that_are_not_events_are_tolerated() -> None:
    stream = ClaudeStream()
    junk = ["", "warning: something", "{not json", "[1, 2]", '{"no": "type"}', "null"]
    lines = fixture_lines("success")
    for line in [*junk[:3], *lines[:4], *junk[3:], *lines[4:]]:
        stream.feed(line)
    out = stream.outcome(0)
    assert out.succeeded and out.cost_usd == 0.09495555
    assert "warning: something" in stream.tail


def test_no_result_line_fails_with_the_exit_code_and_the_last_output() -> None:
    stream = ClaudeStream()
    for line in [*fixture_lines("success")[:3], "Error: something broke", "    at main (cli.js:1)"]:
        stream.feed(line)
    out = stream.outcome(134)
    assert not out.succeeded and out.exit_code == 134
    assert out.error == (
        "other: claude exited with code 134 without a result line "
        "(at turn 1, ~$0.0687, last tool: Read); last output:\n"
        "Error: something broke\nat main (cli.js:1)"
    )
    assert out.session_id == SID and out.cost_usd > 0  # what was spent, estimated
    killed = stream.outcome(-9)
    assert (killed.error or "").startswith("other: claude was killed by signal 9")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Invalid API key · Fix external API key", FailureKind.AUTH),
        ("Failed to authenticate. API Error: 401 OAuth token has expired", FailureKind.AUTH),
        ("Credit balance is too low", FailureKind.AUTH),
        ("Claude AI usage limit reached|1735689600", FailureKind.RATE_LIMIT),
        ("You've hit your weekly limit · resets Jan 5, 3pm (UTC)", FailureKind.RATE_LIMIT),
        ("API Error: Request rejected (429) · slow down", FailureKind.RATE_LIMIT),
        (
            "API Error: Repeated 529 Overloaded errors. The API is at capacity",
            FailureKind.OVERLOADED,
        ),
        (
            "Opus is experiencing high load, please use /model to switch to Sonnet",
            FailureKind.OVERLOADED,
        ),
        ("Reached maximum number of turns (5)", FailureKind.MAX_TURNS),
        ("Reached maximum budget ($1)", FailureKind.BUDGET),
        ("API Error: Unable to connect to API (ConnectionRefused)", FailureKind.OTHER),
    ],
)
def test_classify_texts(text: str, kind: FailureKind) -> None:
    assert classify(text) is kind


def test_classify_prefers_subtype_then_status_then_text_then_the_cli_error_field() -> None:
    assert classify({"subtype": "error_max_turns", "result": "429"}) is FailureKind.MAX_TURNS
    assert classify({"subtype": "success", "api_error_status": 529, "result": "401"}) is (
        FailureKind.OVERLOADED
    )
    assert classify({"subtype": "success", "result": "Not logged in"}) is FailureKind.AUTH
    assert classify({"result": "No response requested."}, "rate_limit") is FailureKind.RATE_LIMIT
    assert classify({"result": "something else"}) is FailureKind.OTHER


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_reset_time_forms() -> None:
    morning = _at("2026-01-01T10:00:00+00:00")
    assert reset_time("Claude AI usage limit reached|1735689600") == 1735689600.0
    assert reset_time("rate_limit: x (resets at 1767279600)") == 1767279600.0
    assert reset_time("You've hit your limit · resets 3pm (UTC)", morning) == 1767279600.0
    evening = _at("2026-01-01T16:00:00+00:00")
    assert reset_time("resets 3pm (UTC)", evening) == 1767279600.0 + 86400  # tomorrow's
    paris = reset_time("resets 3:30pm (Europe/Paris)", morning)
    assert paris == _at("2026-01-01T14:30:00+00:00")
    assert reset_time("resets Jan 5, 3pm (UTC)", morning) == _at("2026-01-05T15:00:00+00:00")
    assert reset_time("resets Jan 2, 2027, 9am (UTC)", morning) == _at("2027-01-02T09:00:00+00:00")
    assert reset_time("resets 3pm (Mars/Olympus)", morning) == 1767279600.0  # unknown zone: UTC
    assert reset_time("You've hit your limit", morning) is None
    assert datetime.fromtimestamp(1767279600, UTC).hour == 15


def test_failure_encoding_round_trips_and_reads_foreign_text() -> None:
    text = format_failure(FailureKind.RATE_LIMIT, "limit\n  reached", 1767279600.5)
    assert text == "rate_limit: limit reached (resets at 1767279600)"
    assert parse_failure(text) == (FailureKind.RATE_LIMIT, 1767279600.0)
    assert parse_failure("overloaded: try later") == (FailureKind.OVERLOADED, None)
    assert parse_failure("Claude AI usage limit reached|1735689600") == (
        FailureKind.RATE_LIMIT,
        1735689600.0,
    )
    assert parse_failure("agent timed out") == (FailureKind.OTHER, None)


# ---------------------------------------------------------------------------------- process


@pytest.fixture
def stub_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`claude` on PATH is the stub (through a wrapper, so it runs with this Python)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    claude = bin_dir / "claude"
    claude.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" "$@"\n')
    claude.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return claude


def request(tmp_path: Path, fixture: str | None = "success", **env: str) -> AgentRequest:
    workdir = tmp_path / "wt"
    workdir.mkdir(exist_ok=True)
    stub_env = {"STUB_CLAUDE_LOG": str(tmp_path / "stub.log")}
    if fixture is not None:
        stub_env["STUB_CLAUDE_FIXTURE"] = str(FIXTURES / f"{fixture}.jsonl")
    return AgentRequest(
        task_id="1.2",
        title="Create hello.py",
        prompt="Create hello.py that prints a greeting.\n",
        instructions="",
        workdir=workdir,
        transcript=tmp_path / "logs" / "1.2.log",
        timeout_s=30,
        env={**stub_env, **env},
    )


def stub_log(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "stub.log"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


async def test_run_replays_the_stream_and_reports_costs(stub_path: Path, tmp_path: Path) -> None:
    req = request(tmp_path, STUB_CLAUDE_WRITE="src/hello.py")
    out = await run_with(ClaudeCliAgent(), req, Beats(), session_id=SID)
    assert out.succeeded, out.error
    assert (out.cost_usd, out.tokens_in, out.tokens_out) == (0.09495555, 75062, 407)
    assert out.session_id == SID and out.exit_code == 0
    assert (req.workdir / "src" / "hello.py").read_text() == "edited by the stub claude\n"
    (entry,) = stub_log(tmp_path)
    assert Path(str(entry["cwd"])).resolve() == req.workdir.resolve()
    transcript = req.transcript.read_text()
    assert transcript.startswith("$ ") and "<prompt: 40 chars>" in transcript
    assert '"type":"result"' in transcript


async def test_argv_first_attempt_and_retry(stub_path: Path, tmp_path: Path) -> None:
    agent = ClaudeCliAgent(model="sonnet", max_turns=30, max_budget_usd=2.5, extra_args=["--x-y"])
    req = request(tmp_path)
    sid = str(uuid.uuid4())
    assert (await run_with(agent, req, Beats(), session_id=sid)).succeeded
    assert (await run_with(agent, req, Beats(), session_id=sid, resume=True)).succeeded
    first, retry = (entry["argv"] for entry in stub_log(tmp_path))
    assert first == [
        "-p",
        req.prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "bypassPermissions",  # the request runs in a sandbox: the sandbox is the boundary
        "--model",
        "sonnet",
        "--max-turns",
        "30",
        "--max-budget-usd",
        "2.5",
        "--session-id",
        sid,
        "--x-y",
    ]
    assert isinstance(retry, list) and retry[retry.index("--resume") + 1] == sid
    assert "--session-id" not in retry
    default = ClaudeCliAgent().argv("claude", "hi", None, False)
    assert default[-2:] == ["--permission-mode", "bypassPermissions"]
    # Outside a sandbox: edits only, and Bash for the task's own checks.
    checks = ["pytest -q tests/x.py", "python -m mypy src && ruff check .", "cd web; npm run test"]
    bare = ClaudeCliAgent().argv("claude", "hi", None, False, isolated=False, checks=checks)
    assert bare == [
        "claude",
        "-p",
        "hi",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        "Bash(pytest:*)",
        "Bash(python -m mypy:*)",
        "Bash(ruff:*)",
        "Bash(npm run test:*)",
    ]
    # A mode the run chose is kept, in a sandbox or not.
    chosen = ClaudeCliAgent(permission_mode="plan").argv("claude", "hi", None, False, True)
    assert chosen[-2:] == ["--permission-mode", "plan"]


def test_allowed_tools_from_checks() -> None:
    assert allowed_tools(["FOO=1 pytest -x", "pytest tests/y.py", "echo 'unclosed"]) == [
        "Bash(pytest:*)"
    ]
    assert allowed_tools(["uv run pytest", "make test | tee log"]) == [
        "Bash(uv run pytest:*)",
        "Bash(make:*)",
        "Bash(tee:*)",
    ]
    assert allowed_tools([]) == []


@pytest.mark.parametrize("prompt", ["x" * (claude_cli.PROMPT_ARG_MAX_BYTES + 1), "--help me"])
async def test_long_or_dash_prompts_go_through_stdin(
    stub_path: Path, tmp_path: Path, prompt: str
) -> None:
    req = request(tmp_path).model_copy(update={"prompt": prompt})
    out = await run_with(ClaudeCliAgent(), req, Beats())
    assert out.succeeded, out.error
    (entry,) = stub_log(tmp_path)
    assert entry["stdin"] == prompt
    assert entry["argv"][:2] == ["-p", "--output-format"]  # type: ignore[index]


async def test_session_flag_falls_back_when_the_cli_refuses_it(
    stub_path: Path, tmp_path: Path
) -> None:
    sessions = tmp_path / "sessions"
    req = request(tmp_path, STUB_CLAUDE_SESSIONS=str(sessions))
    sid = str(uuid.uuid4())
    # A retry of an attempt that died before its session was saved: --resume is refused.
    out = await run_with(ClaudeCliAgent(), req, Beats(), session_id=sid, resume=True)
    assert out.succeeded, out.error
    # A first attempt whose session exists after all: --session-id is refused.
    out = await run_with(ClaudeCliAgent(), req, Beats(), session_id=sid, resume=False)
    assert out.succeeded, out.error
    flags = [
        [a for a in e["argv"] if a in ("--resume", "--session-id")] for e in stub_log(tmp_path)
    ]  # type: ignore[union-attr]
    assert flags == [["--resume"], ["--session-id"], ["--session-id"], ["--resume"]]


async def test_a_session_id_must_be_a_uuid_and_a_prompt_not_empty(
    stub_path: Path, tmp_path: Path
) -> None:
    out = await run_with(ClaudeCliAgent(), request(tmp_path), Beats(), session_id="task-1.2")
    assert not out.succeeded and "is not a UUID" in (out.error or "")
    empty = request(tmp_path).model_copy(update={"prompt": " \n"})
    assert (await run_with(ClaudeCliAgent(), empty, Beats())).error == "other: the prompt is empty"
    assert stub_log(tmp_path) == []


@pytest.mark.parametrize(
    ("fixture", "kind"),
    [
        ("api_error_success_subtype", FailureKind.OTHER),
        ("usage_limit", FailureKind.RATE_LIMIT),
        ("max_turns", FailureKind.MAX_TURNS),
        ("auth_invalid_key", FailureKind.AUTH),
        ("overloaded", FailureKind.OVERLOADED),
    ],
)
async def test_failures_through_the_process(
    stub_path: Path, tmp_path: Path, fixture: str, kind: FailureKind
) -> None:
    out = await run_with(ClaudeCliAgent(), request(tmp_path, fixture), Beats())
    assert not out.succeeded and out.exit_code == 1 and out.error
    assert parse_failure(out.error)[0] is kind


async def test_heartbeat_notes_carry_turns_cost_and_tool(stub_path: Path, tmp_path: Path) -> None:
    beats = Beats()
    out = await run_with(ClaudeCliAgent(), request(tmp_path, STUB_CLAUDE_DELAY="0.03"), beats)
    assert out.succeeded
    assert beats[0] == "claude started, no events yet"
    assert any(b.startswith("turn 1, ~$0.0") and b.endswith("last tool: Read") for b in beats)
    assert any(b.startswith("turn 2, ~$0.0") and b.endswith("last tool: Write") for b in beats)
    assert any(b.startswith("turn 3, ~$0.0") and b.endswith("last tool: Edit") for b in beats)
    assert beats[-1] == "turn 4, $0.0950, last tool: Edit, finished"


async def test_crash_without_a_result_line(stub_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*fixture_lines("success")[:2], "Error: boom sk-ant-secret-123"]))
    req = request(tmp_path, None, STUB_CLAUDE_FIXTURE=str(broken), STUB_CLAUDE_EXIT="3")
    req.env["ANTHROPIC_API_KEY"] = "sk-ant-secret-123"
    out = await run_with(ClaudeCliAgent(), req, Beats())
    assert not out.succeeded and out.exit_code == 3
    assert (out.error or "").startswith("other: claude exited with code 3 without a result line")
    assert "Error: boom ***" in (out.error or "")
    assert "sk-ant-secret-123" not in (out.error or "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    return not _alive(pid)


async def test_timeout_kills_the_process_group(
    stub_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_proc, "KILL_GRACE_S", 0.3)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(fixture_lines("success")[:4]) + "\n")
    req = request(tmp_path, None, STUB_CLAUDE_FIXTURE=str(partial), STUB_CLAUDE_HANG="1")
    req = req.model_copy(update={"timeout_s": 1.5})
    out = await run_with(ClaudeCliAgent(), req, Beats(), session_id=SID)
    assert not out.succeeded and out.timed_out and out.exit_code is None
    assert (out.error or "").startswith(
        "other: claude timed out after 1.5 s; its process group was killed (at turn 1, ~$0.06"
    )
    assert out.session_id == SID
    entries = stub_log(tmp_path)
    stub_pid, child = int(entries[0]["pid"]), int(entries[1]["child"])  # type: ignore[call-overload]
    assert _wait_dead(stub_pid) and _wait_dead(child)


async def test_cancelling_the_run_kills_the_process_group(
    stub_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_proc, "KILL_GRACE_S", 0.3)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(fixture_lines("success")[:4]) + "\n")
    req = request(tmp_path, None, STUB_CLAUDE_FIXTURE=str(partial), STUB_CLAUDE_HANG="1")
    task = asyncio.create_task(run_with(ClaudeCliAgent(), req, Beats()))
    deadline = time.monotonic() + 10
    while len(stub_log(tmp_path)) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    child = int(stub_log(tmp_path)[1]["child"])  # type: ignore[call-overload]
    assert _wait_dead(child)


async def test_a_cli_that_lingers_after_its_result_is_ended_and_believed(
    stub_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claude_cli, "RESULT_GRACE_S", 0.3)
    monkeypatch.setattr(_proc, "KILL_GRACE_S", 0.3)
    out = await run_with(ClaudeCliAgent(), request(tmp_path, STUB_CLAUDE_HANG="1"), Beats())
    assert out.succeeded and not out.timed_out and out.exit_code is None
    assert out.cost_usd == 0.09495555
    child = int(stub_log(tmp_path)[1]["child"])  # type: ignore[call-overload]
    assert _wait_dead(child)
    assert "did not exit 0.3 s after its result line" in request(tmp_path).transcript.read_text()


async def test_missing_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = await run_with(ClaudeCliAgent(), request(tmp_path), Beats())
    assert not out.succeeded and out.error == f"other: {NOT_FOUND}"
    assert NOT_FOUND == (
        "claude CLI not found on PATH (npm install -g @anthropic-ai/claude-code, or pass its path)"
    )
    assert await ClaudeCliAgent().preflight() == NOT_FOUND
    out = await run_with(
        ClaudeCliAgent(binary=str(tmp_path / "nope" / "claude")), request(tmp_path), Beats()
    )
    assert "not found" in (out.error or "")


async def test_transcript_inside_the_worktree_is_refused(stub_path: Path, tmp_path: Path) -> None:
    req = request(tmp_path)
    req = req.model_copy(update={"transcript": req.workdir / "t.log"})
    out = await run_with(ClaudeCliAgent(), req, Beats())
    assert not out.succeeded and "inside the worktree" in (out.error or "")
    assert list(req.workdir.iterdir()) == []


# ------------------------------------------------------------------------ preflight and env


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "CLAUDE_CODE_")) or name == "CLAUDE_CONFIG_DIR":
            monkeypatch.delenv(name)
    return home


async def test_preflight(
    stub_path: Path, no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = ClaudeCliAgent()
    assert await agent.preflight() == NO_CREDENTIALS
    # Any run writes ~/.claude.json; without a login in it, it is no credential.
    (no_credentials / ".claude.json").write_text('{"firstStartTime": "2026-01-01", "userID": "x"}')
    assert await agent.preflight() == NO_CREDENTIALS
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-xyz")
    assert await agent.preflight() is None
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    (no_credentials / ".claude").mkdir()
    (no_credentials / ".claude" / ".credentials.json").write_text("{}")
    assert await agent.preflight() is None


async def test_preflight_reports_a_broken_binary(tmp_path: Path) -> None:
    broken = tmp_path / "claude"
    broken.write_text("#!/bin/sh\necho 'node: bad option' >&2\nexit 9\n")
    broken.chmod(0o755)
    problem = await ClaudeCliAgent(binary=str(broken)).preflight()
    assert problem == f"`{broken} --version` exited with code 9: node: bad option"


def test_credentials_sources(tmp_path: Path) -> None:
    assert credentials_problem({}, tmp_path) == NO_CREDENTIALS
    assert credentials_problem({"CLAUDE_CODE_OAUTH_TOKEN": "t"}, tmp_path) is None
    assert credentials_problem({"CLAUDE_CODE_USE_BEDROCK": "1"}, tmp_path) is None
    assert credentials_problem({"CLAUDE_CODE_USE_BEDROCK": "0"}, tmp_path) == NO_CREDENTIALS
    (tmp_path / ".claude.json").write_text('{"oauthAccount": {"emailAddress": "a@b.c"}}')
    assert credentials_problem({}, tmp_path) is None


def test_env_is_minimal_plus_what_claude_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", "t")
    monkeypatch.setenv("CLAUDE_CODE_ENTRYPOINT", "cli")  # a parent Claude Code session's
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    monkeypatch.setenv("GITHUB_TOKEN", "gh")
    monkeypatch.delenv("CLAUDE_CODE_USE_BEDROCK", raising=False)
    monkeypatch.delenv("DISABLE_AUTOUPDATER", raising=False)
    env = claude_env({"EXTRA": "1"})
    assert env["ANTHROPIC_API_KEY"] == "k" and env["CLAUDE_CODE_OAUTH_TOKEN"] == "t"
    assert env["DISABLE_AUTOUPDATER"] == "1" and env["EXTRA"] == "1"
    assert env["PATH"] == os.environ["PATH"]
    for name in ("CLAUDE_CODE_ENTRYPOINT", "CLAUDECODE", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN"):
        assert name not in env
    monkeypatch.setenv("CLAUDE_CODE_USE_BEDROCK", "1")
    assert claude_env()["AWS_SECRET_ACCESS_KEY"] == "aws"


# ------------------------------------------------------------------------ construction


def test_registry_and_options() -> None:
    agent = agent_backend("claude")
    assert isinstance(agent, ClaudeCliAgent) and agent.name == "claude"
    # None: bypassPermissions in a sandbox, acceptEdits outside one (mode_for).
    assert agent.permission_mode is None and agent.binary is None
    assert (agent.mode_for(True), agent.mode_for(False)) == ("bypassPermissions", "acceptEdits")
    built = ClaudeCliAgent.from_options(
        {"model": "opus", "max_turns": 5, "permission_mode": "plan", "extra_args": ["--bare"]}
    )
    assert (built.model, built.max_turns, built.permission_mode) == ("opus", 5, "plan")
    assert built.extra_args == ["--bare"]
    with pytest.raises(ValueError, match="unknown claude option"):
        ClaudeCliAgent.from_options({"modle": "opus"})
    with pytest.raises(ValueError, match="acceptEdits, auto, bypassPermissions"):
        ClaudeCliAgent(permission_mode="yolo")
    with pytest.raises(ValueError):
        ClaudeCliAgent(max_budget_usd=0)
