"""The command agent: runs any CLI coding agent from an argv template.

`AgentRequest.command` is a list of arguments. In each one these placeholders are replaced:

    {prompt_file}  the prompt, written in the task's TMPDIR (outside the worktree, never committed)
    {task_id}      the task's id, e.g. "2.1"
    {workdir}      the task's worktree, which is also the process's working directory
    {title}        the task's title

Paths are as the process sees them inside its sandbox (a container mounts the worktree at
/workspace).

Anything else in braces is left as it is. Pass placeholders as their own arguments and let a shell
wrapper read them as "$1", rather than pasting them into a `sh -c` script, so a title with quotes
cannot change the script.

`PRESETS` holds templates for common agents:

    codex   `codex exec --sandbox workspace-write PROMPT` (Codex CLI's non-interactive mode, allowed
            to edit the worktree). The prompt is read from the file by a shell wrapper, since
            `codex exec` takes it as an argument; Linux caps a single argument at 128 KiB.
    aider   `aider --yes-always --no-auto-commits --message-file FILE`: one message, then exit;
            aider must not commit, because the pipeline commits.

The outcome's `summary` is the output's last line, its `text` the output's tail (TEXT_CHARS at
most: a reviewer prints its verdict there). The process gets `request.env` as its complete
environment when it is non-empty, else the base allow-list of `backends.secrets` (PATH, HOME,
locale, ...) without the worker's credentials; the sandbox sets its TMPDIR and HOME.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from pathlib import Path

from autonomous_pipeline.backends.base import (
    AgentOutcome,
    AgentRequest,
    Exec,
    Heartbeat,
    Runner,
    SandboxError,
)
from autonomous_pipeline.backends.secrets import agent_env, redactor

PRESETS: dict[str, list[str]] = {
    "codex": [
        "sh",
        "-c",
        # The x keeps the prompt's trailing newlines, which $(...) alone would strip.
        'p="$(cat "$1"; printf x)"; exec codex exec --sandbox workspace-write "${p%x}"',
        "sh",
        "{prompt_file}",
    ],
    "aider": ["aider", "--yes-always", "--no-auto-commits", "--message-file", "{prompt_file}"],
}

SUMMARY_CHARS = 500
TEXT_CHARS = 200_000  # the output's tail kept as the outcome's text (a reviewer's verdict)
ERROR_TAIL_LINES = 20


# The placeholders a template may name (see the module's docstring).
PLACEHOLDERS = ("prompt_file", "task_id", "workdir", "title")
_NAMED = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def unknown_placeholders(template: list[str]) -> list[str]:
    """`{word}`s in a template that are no placeholder: a typo (`{task}`) would reach the agent
    as is. JSON and shell braces (`{"a": 1}`, `${X}`) are not words in braces and pass."""
    found = []
    for arg in template:
        for m in _NAMED.finditer(arg):
            before = arg[m.start() - 1] if m.start() else ""
            if before != "$" and m.group(1) not in PLACEHOLDERS and m.group(0) not in found:
                found.append(m.group(0))
    return found


def render_argv(template: list[str], values: dict[str, str]) -> list[str]:
    """Substitute `{name}` placeholders with str.replace, so other braces (JSON, shell) survive."""
    out = []
    for arg in template:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


def write_prompt(tmp: Path, transcript: Path, prompt: str) -> Path:
    """The prompt, in a new file of the agent's TMPDIR `tmp` (named after its transcript).

    The agent can write there: a fixed name would let it plant a link that the worker then
    writes through. A fresh name, created exclusively and never through a link, cannot be.
    """
    fd, name = tempfile.mkstemp(dir=tmp, prefix=f"{transcript.name}.", suffix=".prompt.md")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(prompt)
    return Path(name)


class _Progress:
    """Counts output lines and keeps the progress note current."""

    def __init__(self, note: Heartbeat) -> None:
        self.note = note
        self.lines = 0
        note("started, no output yet")

    def on_line(self, line: str) -> None:
        self.lines += 1
        if line.strip():
            self.note(f"output lines: {self.lines}, last: {line.strip()[:200]}")


class CommandAgent:
    name = "command"

    async def run(
        self, request: AgentRequest, heartbeat: Heartbeat, runner: Runner
    ) -> AgentOutcome:
        if not request.command:
            return AgentOutcome(succeeded=False, error="command agent: the argv template is empty")
        if not request.workdir.is_dir():
            return AgentOutcome(succeeded=False, error=f"worktree {request.workdir} does not exist")
        if request.transcript.resolve().is_relative_to(request.workdir.resolve()):
            return AgentOutcome(
                succeeded=False,
                error=f"transcript {request.transcript} is inside the worktree; "
                "the prompt and output would be committed",
            )
        request.transcript.parent.mkdir(parents=True, exist_ok=True)
        prompt_file = write_prompt(runner.host.tmp, request.transcript, request.prompt)
        argv = render_argv(
            request.command,
            {
                "prompt_file": str(runner.inside.tmp / prompt_file.name),
                "task_id": request.task_id,
                "workdir": str(runner.inside.workdir),
                "title": request.title,
            },
        )
        env = request.env or agent_env()
        redact = redactor(env)
        with request.transcript.open("a", encoding="utf-8") as fh:
            fh.write(redact(f"$ {shlex.join(argv)}\n"))

        progress = _Progress(heartbeat)
        try:
            result = await runner.run(
                Exec(
                    argv=argv,
                    env=env,
                    timeout_s=request.timeout_s,
                    transcript=request.transcript,
                    on_line=progress.on_line,
                    tail_chars=TEXT_CHARS,
                )
            )
        except SandboxError:
            raise  # the sandbox's failure, not the agent's: the step fails and says so
        except FileNotFoundError:
            return AgentOutcome(succeeded=False, error=f"agent executable not found: {argv[0]!r}")
        except PermissionError:
            return AgentOutcome(
                succeeded=False, error=f"agent executable is not executable: {argv[0]!r}"
            )
        except OSError as exc:
            return AgentOutcome(succeeded=False, error=redact(f"could not start the agent: {exc}"))

        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        summary = redact(lines[-1].strip()[:SUMMARY_CHARS]) if lines else ""
        tail = redact("\n".join(lines[-ERROR_TAIL_LINES:]))
        error: str | None = None
        if result.timed_out:
            error = f"agent timed out after {request.timeout_s:g} s; its process group was killed"
        elif result.exit_code != 0:
            code = result.exit_code
            error = (
                f"agent was killed by signal {-code}"
                if code is not None and code < 0
                else f"agent exited with code {code}"
            )
            if code is not None and 128 < code < 128 + 65:
                # What a sandbox (or a shell) reports for a process a signal ended.
                error += f" (128 + {code - 128}: killed by signal {code - 128})"
        if error and tail:
            error += f"; last output:\n{tail}"
        return AgentOutcome(
            succeeded=result.ok,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            summary=summary,
            error=error,
            text=redact(result.output)[-TEXT_CHARS:],
        )
