"""The Claude Code CLI agent ("claude"): `claude -p` in the task's worktree, read as stream-json.

    claude -p PROMPT --output-format stream-json --verbose --permission-mode MODE
           [--model M] [--max-turns N] [--max-budget-usd USD]
           [--session-id UUID | --resume UUID] [EXTRA_ARGS...]

(flags as in `claude --help` of 2.1.197; `--max-turns` works but is hidden from the help). With
`-p` the CLI reads the prompt from stdin when no prompt argument is given; a prompt too long for
one argument, or one starting with "-" (which the CLI would take for an option), goes that way.
The budget is the CLI's own: it checks it after each API response, so a run can end somewhat over
it (limit $0.05, stopped at $0.0698 in tests/fixtures/claude/max_budget.jsonl).

Permissions: in `-p` mode nothing can be approved by hand, so the mode decides. Inside a sandbox
(namespaces or a container, `request.isolated`) the default is `bypassPermissions`: the sandbox
is the boundary, and the agent may run anything in it, the project's tests and installs too
(IS_SANDBOX=1 tells the CLI so, which it asks before it runs with every permission as root).
Without one the default is `acceptEdits`: edits in the task's worktree without asking, and Bash
only for what `--allowedTools` allows, derived from the task's own verification commands
(`allowed_tools`). What the CLI refused is reported from the result's `permission_denials`. The
CLI's other modes are `auto`, `default`, `dontAsk` and `plan` (read-only, for reviewers).

Sessions: the workflow passes a deterministic UUID. A first attempt uses `--session-id`, a retry
`--resume` (the CLI keeps sessions under ~/.claude/projects/<workdir>/, so a resume needs the same
HOME and the same worktree path: in a sandbox HOME is the task's own folder, which outlives a
killed worker). The CLI refuses `--session-id` for a session that exists
("Session ID ... is already in use.") and `--resume` for one it does not have ("No conversation
found with session ID: ..."); both fail before any API call, and the agent then retries once with
the other flag.

Environment: the minimal inherited one of the command agent, plus what the CLI reads for
credentials and API settings when the worker has them: ANTHROPIC_* (ANTHROPIC_API_KEY,
ANTHROPIC_AUTH_TOKEN, ANTHROPIC_BASE_URL, model defaults, ...), CLAUDE_CODE_OAUTH_TOKEN (from
`claude setup-token`), CLAUDE_CONFIG_DIR, the CLAUDE_CODE_* settings in `_PASSED_ENV`, proxies
and NODE_EXTRA_CA_CERTS; AWS_* only with CLAUDE_CODE_USE_BEDROCK, Google's only with
CLAUDE_CODE_USE_VERTEX. Other CLAUDE_CODE_* and CLAUDECODE are not passed: a worker started from
inside a Claude Code session must not hand that session's settings to the agent. HOME matters: logins and sessions live there. `request.env` is
laid over the result. DISABLE_AUTOUPDATER=1 unless set: a run never updates the CLI under itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autonomous_pipeline.backends._proc import ProcResult, run_process
from autonomous_pipeline.backends.agents.claude_stream import ClaudeStream
from autonomous_pipeline.backends.base import (
    AgentOutcome,
    AgentRequest,
    Exec,
    Heartbeat,
    Runner,
    SandboxError,
)
from autonomous_pipeline.backends.secrets import agent_env, redactor
from autonomous_pipeline.models.failure import AgentFailure, FailureKind

PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan")
NOT_FOUND = (
    "claude CLI not found on PATH (npm install -g @anthropic-ai/claude-code, or pass its path)"
)
NO_CREDENTIALS = (
    "claude CLI has no credentials: set ANTHROPIC_API_KEY, or CLAUDE_CODE_OAUTH_TOKEN (from "
    "`claude setup-token`), or log in once with `claude` as the worker's user"
)
NO_CREDENTIALS_ISOLATED = (
    "claude runs in a sandbox, which has a HOME of its own: a login saved in the worker's HOME "
    "is not there. Set ANTHROPIC_API_KEY, or CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`)"
)
# Linux refuses a single argument over 128 KiB; longer prompts go through stdin.
PROMPT_ARG_MAX_BYTES = 100_000
# The CLI sometimes keeps running after its result line (anthropics/claude-code#25629, #39700):
# give it this long to exit, then end its process group and go by the result.
RESULT_GRACE_S = 30.0

_PASSED_ENV = (
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CONFIG_DIR",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
    "CLAUDE_CODE_MAX_OUTPUT_TOKENS",
    "CLAUDE_CODE_MAX_RETRIES",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_AUTOUPDATER",
    "DISABLE_TELEMETRY",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
    "XDG_CONFIG_HOME",
)
_PASSED_PREFIXES = ("ANTHROPIC_",)
_PROVIDER_ENV = {
    "CLAUDE_CODE_USE_BEDROCK": ("AWS_",),
    "CLAUDE_CODE_USE_VERTEX": ("GOOGLE_", "GCLOUD_", "CLOUD_ML_REGION", "VERTEX_REGION_"),
}
_FALSE = ("", "0", "false", "no", "off")


# Where the CLI keeps its state on the worker: a sandbox gives it a HOME of its own instead.
_HOST_STATE_ENV = ("CLAUDE_CONFIG_DIR", "XDG_CONFIG_HOME")


def claude_env(
    overrides: Mapping[str, str] | None = None, isolated: bool = False
) -> dict[str, str]:
    """The agent's environment, from the worker's: see the module's docstring."""
    prefixes = list(_PASSED_PREFIXES)
    for switch, provider in _PROVIDER_ENV.items():
        if os.environ.get(switch, "").lower() not in _FALSE:
            prefixes.extend(provider)
    env = agent_env()
    env.update(
        (k, v) for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith(tuple(prefixes))
    )
    env.setdefault("DISABLE_AUTOUPDATER", "1")
    if isolated:
        for name in _HOST_STATE_ENV:
            env.pop(name, None)
        env["IS_SANDBOX"] = "1"
    env.update(overrides or {})
    return env


# A program name as the verification commands of plans start with it; `python -m X` is its own.
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_COMMAND_SEPARATOR = re.compile(r"\n|&&|\|\||;|\|")
_RUNNERS = {"python", "python3", "uv", "poetry", "npm", "npx", "pnpm", "yarn", "cargo", "go"}


def allowed_tools(checks: list[str]) -> list[str]:
    """`--allowedTools` rules that let an agent outside a sandbox run the task's own checks.

    `pytest tests/x.py` allows `Bash(pytest:*)`; `python -m pytest -q` allows
    `Bash(python -m pytest:*)`; `npm run test` allows `Bash(npm run test:*)`. A check whose words
    cannot be read (quotes left open) allows nothing.
    """
    rules: list[str] = []
    for check in checks:
        for line in _COMMAND_SEPARATOR.split(check):
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            while words and _ENV_ASSIGNMENT.match(words[0]):
                words.pop(0)
            if not words or words[0] in ("cd", "export", "source", "."):
                continue
            take = 1
            if words[0] in _RUNNERS and len(words) > 2 and words[1] in ("-m", "run", "exec"):
                take = 3
            rule = f"Bash({' '.join(words[:take])}:*)"
            if rule not in rules:
                rules.append(rule)
    return rules


def credentials_problem(
    environ: Mapping[str, str] | None = None, home: Path | None = None, isolated: bool = False
) -> str | None:
    """None when the CLI has some way to authenticate, else what to do. Reads files only.

    `isolated`: the CLI runs in a sandbox with a HOME of its own, where a login saved in the
    worker's HOME is not: only the environment counts.
    """
    environ = os.environ if environ is None else environ
    names = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
    if any(environ.get(n) for n in names):
        return None
    providers = ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")
    if any(environ.get(p, "").lower() not in _FALSE for p in providers):
        return None  # a cloud provider, with its own credentials
    if isolated:
        return NO_CREDENTIALS_ISOLATED
    home = Path(environ.get("HOME") or Path.home()) if home is None else home
    config_dir = Path(environ.get("CLAUDE_CONFIG_DIR") or home / ".claude")
    if (config_dir / ".credentials.json").is_file():  # `claude` /login on Linux
        return None
    for settings in (config_dir / "settings.json", home / ".claude.json"):
        # ~/.claude.json is written by any run, logged in or not: it counts only with a login
        # (oauthAccount; on macOS the token itself is in the Keychain) or a key in it.
        try:
            data = json.loads(settings.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (
            data.get("apiKeyHelper") or data.get("primaryApiKey") or data.get("oauthAccount")
        ):
            return None
    return NO_CREDENTIALS


class _Progress:
    """Feeds the stream, keeps the progress note current, and says when the result line came."""

    def __init__(self, note: Heartbeat, stream: ClaudeStream) -> None:
        self.note = note
        self.stream = stream
        self.result_seen = asyncio.Event()
        note("claude started, no events yet")

    def on_line(self, line: str) -> None:
        if self.stream.feed(line) and self.stream.result is not None:
            self.result_seen.set()
        if self.stream.events:
            self.note(self.stream.note())


class ClaudeCliAgent:
    name = "claude"
    # run() takes session_id/resume: a retry or fix round continues the same conversation.
    sessions = True

    def __init__(
        self,
        binary: str | None = None,
        model: str | None = None,
        max_turns: int | None = None,
        permission_mode: str | None = None,
        max_budget_usd: float | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        if permission_mode is not None and permission_mode not in PERMISSION_MODES:
            raise ValueError(
                f"permission_mode {permission_mode!r}: choose one of {', '.join(PERMISSION_MODES)}"
            )
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, not {max_turns}")
        if max_budget_usd is not None and max_budget_usd <= 0:
            raise ValueError(f"max_budget_usd must be positive, not {max_budget_usd}")
        self.binary = binary  # None: `claude` on PATH, looked up at each run
        self.model = model
        self.max_turns = max_turns
        self.permission_mode = permission_mode  # None: chosen by whether a sandbox holds it
        self.max_budget_usd = max_budget_usd
        self.extra_args = list(extra_args or [])

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ClaudeCliAgent:
        """Build from a plain dict (settings, workflow input); unknown keys are an error."""
        known = ("binary", "model", "max_turns", "permission_mode", "max_budget_usd", "extra_args")
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown claude option(s) {', '.join(unknown)}; known: {known}")
        return cls(**dict(options))

    def mode_for(self, isolated: bool) -> str:
        if self.permission_mode is not None:
            return self.permission_mode
        return "bypassPermissions" if isolated else "acceptEdits"

    def resolve_binary(self, runner: Runner | None = None) -> str | None:
        """The CLI's path; in a container (whose programs are not the worker's) as named."""
        if runner is not None and not runner.host_programs:
            return self.binary or "claude"
        if self.binary is None:
            return shutil.which("claude")
        if os.sep in self.binary:
            path = Path(self.binary).expanduser()
            return str(path) if path.is_file() else None
        return shutil.which(self.binary)

    def argv(
        self,
        binary: str,
        prompt: str | None,
        session_id: str | None,
        resume: bool,
        isolated: bool = True,
        checks: list[str] | None = None,
    ) -> list[str]:
        """The command line; `prompt` None means it is given on stdin."""
        argv = [binary, "-p", *([prompt] if prompt is not None else [])]
        argv += ["--output-format", "stream-json", "--verbose"]
        mode = self.mode_for(isolated)
        argv += ["--permission-mode", mode]
        if mode == "acceptEdits" and (tools := allowed_tools(checks or [])):
            argv += ["--allowedTools", *tools]
        if self.model:
            argv += ["--model", self.model]
        if self.max_turns is not None:
            argv += ["--max-turns", str(self.max_turns)]
        if self.max_budget_usd is not None:
            argv += ["--max-budget-usd", f"{self.max_budget_usd:g}"]
        if session_id:
            argv += ["--resume" if resume else "--session-id", session_id]
        return argv + self.extra_args

    async def run(
        self,
        request: AgentRequest,
        heartbeat: Heartbeat,
        runner: Runner,
        session_id: str | None = None,
        resume: bool = False,
    ) -> AgentOutcome:
        binary = self.resolve_binary(runner)
        if binary is None:
            return _failed(
                NOT_FOUND if self.binary is None else f"claude CLI {self.binary!r} not found"
            )
        if not request.prompt.strip():
            return _failed("the prompt is empty")
        if not request.workdir.is_dir():
            return _failed(f"worktree {request.workdir} does not exist")
        if request.transcript.resolve().is_relative_to(request.workdir.resolve()):
            return _failed(
                f"transcript {request.transcript} is inside the worktree; it would be committed"
            )
        if session_id is not None:
            try:
                session_id = str(uuid.UUID(session_id))
            except ValueError:
                return _failed(f"claude session id {session_id!r} is not a UUID")
        request.transcript.parent.mkdir(parents=True, exist_ok=True)
        env = claude_env(request.env, request.isolated)
        redact = redactor(env)
        on_stdin = len(request.prompt.encode()) > PROMPT_ARG_MAX_BYTES or request.prompt.startswith(
            "-"
        )
        deadline = time.monotonic() + request.timeout_s
        for attempt in (1, 2):
            argv = self.argv(
                binary,
                None if on_stdin else request.prompt,
                session_id,
                resume,
                request.isolated,
                request.checks,
            )
            try:
                stream, result = await self._once(
                    argv, request, env, heartbeat, deadline, on_stdin, redact, runner
                )
            except SandboxError:
                raise  # the sandbox's failure, not the agent's: the step fails and says so
            except FileNotFoundError:
                return _failed(f"claude CLI not found: {binary!r}")
            except PermissionError:
                return _failed(f"claude CLI is not executable: {binary!r}")
            except OSError as exc:
                return _failed(redact(f"could not start the claude CLI: {exc}"))
            if attempt == 1 and session_id is not None and result is not None:
                if resume and stream.resume_not_found():
                    resume = False  # the first attempt died before its session was saved
                    continue
                if not resume and stream.session_in_use():
                    resume = True  # an earlier attempt did save it
                    continue
            break
        return _outcome(stream, result, request.timeout_s, redact)

    async def _once(
        self,
        argv: list[str],
        request: AgentRequest,
        env: dict[str, str],
        heartbeat: Heartbeat,
        deadline: float,
        on_stdin: bool,
        redact: Callable[[str], str],
        runner: Runner,
    ) -> tuple[ClaudeStream, ProcResult | None]:
        """One CLI run: the stream, and the process's result (None: it was ended after its result)."""
        shown = list(argv)
        if not on_stdin:
            shown[2] = f"<prompt: {len(request.prompt)} chars>"
        with request.transcript.open("a", encoding="utf-8") as fh:
            fh.write(redact(f"$ {shlex.join(shown)}") + (" < prompt\n" if on_stdin else "\n"))
        stream = ClaudeStream()
        progress = _Progress(heartbeat, stream)
        proc = asyncio.create_task(
            runner.run(
                Exec(
                    argv=argv,
                    env=env,
                    timeout_s=max(deadline - time.monotonic(), 0.1),
                    stdin=request.prompt.encode() if on_stdin else None,
                    transcript=request.transcript,
                    on_line=progress.on_line,
                    # Outside a sandbox the CLI keeps its logins and sessions in the worker's
                    # HOME, and its own permission mode keeps its edits in the worktree.
                    confine=request.isolated,
                )
            )
        )
        result_seen = asyncio.create_task(progress.result_seen.wait())
        lingered = False
        try:
            await asyncio.wait({proc, result_seen}, return_when=asyncio.FIRST_COMPLETED)
            if not proc.done():
                try:
                    await asyncio.wait_for(asyncio.shield(proc), RESULT_GRACE_S)
                except TimeoutError:
                    lingered = True
                    await _stop(proc)
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise asyncio.CancelledError from None  # ours, not only proc's
            result = None if lingered else proc.result()
        finally:
            for task in (result_seen, proc):
                await _stop(task)
        if lingered:
            with request.transcript.open("a", encoding="utf-8") as fh:
                fh.write(
                    f"\n[claude did not exit {RESULT_GRACE_S:g} s after its result line; "
                    "its process group was ended]\n"
                )
        return stream, result

    async def preflight(self, isolated: bool = False, on_host: bool = True) -> str | None:
        """None when `claude --version` works and credentials are configured, else the problem.

        No API call is made: a key that the API would refuse passes. In a sandbox the CLI gets
        credentials only from the environment; in a container its binary is the image's.
        """
        if not on_host:
            return credentials_problem(isolated=isolated)
        binary = self.resolve_binary()
        if binary is None:
            return NOT_FOUND if self.binary is None else f"claude CLI {self.binary!r} not found"
        try:
            result = await run_process(
                [binary, "--version"], cwd=tempfile.gettempdir(), env=claude_env(), timeout_s=30
            )
        except OSError as exc:
            return f"claude CLI {binary} cannot be run: {exc}"
        version = result.output.strip()
        if not result.ok or not version:
            tail = " ".join(version.split())[-300:]
            how = "timed out" if result.timed_out else f"exited with code {result.exit_code}"
            return f"`{binary} --version` {how}" + (f": {tail}" if tail else "")
        return credentials_problem(isolated=isolated)


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel `task` (for run_process: end its process group) and wait for it to finish."""
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _failed(message: str) -> AgentOutcome:
    failure = AgentFailure(kind=FailureKind.OTHER, message=message)
    return AgentOutcome(succeeded=False, error=f"other: {message}", failure=failure)


def _outcome(
    stream: ClaudeStream,
    result: ProcResult | None,
    timeout_s: float,
    redact: Callable[[str], str],
) -> AgentOutcome:
    outcome = stream.outcome(None if result is None else result.exit_code)
    if result is not None and result.timed_out:
        error = f"claude timed out after {timeout_s:g} s; its process group was killed"
        error += f" (at {stream.note()})" if stream.events else " (before any event)"
        outcome = outcome.model_copy(
            update={"succeeded": False, "timed_out": True, "error": f"other: {error}"}
        )
    return outcome.model_copy(
        update={
            "summary": redact(outcome.summary),
            "text": redact(outcome.text),
            "error": redact(outcome.error) if outcome.error else None,
        }
    )
