"""Claude Code's `--output-format stream-json` output, folded into progress and an outcome. Pure.

The CLI (checked against 2.1.197) prints one JSON object per line:

    {"type":"system","subtype":"init","session_id":..,"model":..,"tools":[..],..}   first
    {"type":"system","subtype":"api_retry","attempt":2,"max_retries":10,"error_status":529,..}
    {"type":"rate_limit_event","rate_limit_info":{"status":"allowed"|"rejected","resetsAt":<unix>,..}}
    {"type":"assistant","message":{"id":..,"model":..,"content":[text|tool_use|thinking],"usage":..},
     "parent_tool_use_id":null|<subagent's Task id>,"error":"rate_limit"|..}   one line per block
    {"type":"user","message":{"content":[{"type":"tool_result",..}]}}
    {"type":"result","subtype":"success"|"error_max_turns"|"error_max_budget_usd"|
     "error_during_execution"|..,"is_error":..,"api_error_status":429|null,"result":"..",
     "errors":[..],"num_turns":..,"total_cost_usd":..,"usage":{..},"session_id":..}   last

`is_error` is what counts: an API failure is reported as subtype "success" with is_error true and
the failure's text as `result` (the CLI then exits 1). Error subtypes carry `errors`, not `result`.
The stream has no running cost, only the result line does; until then the cost is estimated from
the token counts with list prices (`~$` in notes). Any line that is not a JSON object is ignored.

A failure is reported as data (`AgentOutcome.failure`: kind, message, reset time), and as text
`"<kind>: <message>[ (resets at <unix>)]"` in the outcome's error, for people.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from autonomous_pipeline.backends.agents.claude_failures import (
    classify,
    describe,
    failure_text,
    format_failure,
    parse_failure,
    reset_time,
)
from autonomous_pipeline.backends.base import AgentOutcome
from autonomous_pipeline.models.failure import AgentFailure, FailureKind

__all__ = [
    "AgentFailure",
    "ClaudeStream",
    "FailureKind",
    "classify",
    "failure_text",
    "format_failure",
    "parse_failure",
    "reset_time",
]

SUMMARY_CHARS = 2000
TEXT_CHARS = 200_000  # the whole final answer (a reviewer's verdict), within reason
TAIL_LINES = 20


# List prices in USD per million tokens (input, output), for the running estimate only; the
# result line's total_cost_usd is what the outcome reports. Cache writes cost 1.25x input, reads
# 0.1x. First match wins; anything unknown is priced like Sonnet.
_PRICES: tuple[tuple[re.Pattern[str], float, float], ...] = (
    (re.compile(r"opus-4-(?:0|1|2025)|3-opus"), 15.0, 75.0),
    (re.compile(r"opus"), 5.0, 25.0),
    (re.compile(r"3-5-haiku|3-haiku"), 0.8, 4.0),
    (re.compile(r"haiku"), 1.0, 5.0),
)
_DEFAULT_PRICE = (3.0, 15.0)


def _price(model: str) -> tuple[float, float]:
    for pattern, inp, out in _PRICES:
        if pattern.search(model):
            return inp, out
    return _DEFAULT_PRICE


@dataclass
class _Message:
    """One API response, seen through the stream lines of its content blocks."""

    model: str
    input: int = 0
    cache_write: int = 0
    cache_read: int = 0
    output: int = 0  # the usage's own count, which the stream leaves at its first value
    chars: int = 0  # text and tool input so far, to estimate the output (about 4 chars a token)

    @property
    def output_estimate(self) -> int:
        return max(self.output, self.chars // 4)

    def cost(self) -> float:
        inp, out = _price(self.model)
        tokens_in = self.input + 1.25 * self.cache_write + 0.1 * self.cache_read
        return (tokens_in * inp + self.output_estimate * out) / 1_000_000


def _denial(denial: dict[str, Any]) -> str:
    """ "Bash: pytest -q" for a refused tool use: the tool, and what it was asked to do."""
    asked = denial.get("tool_input")
    detail = ""
    if isinstance(asked, dict):
        for key in ("command", "file_path", "path", "url", "pattern"):
            if isinstance(asked.get(key), str):
                detail = asked[key]
                break
    text = f"{denial['tool_name']}: {' '.join(detail.split())}" if detail else denial["tool_name"]
    return text[:300]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class ClaudeStream:
    """Feed it the CLI's output lines; read progress (`note`) and the `outcome`."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.tools: list[str] = []
        self.events = 0
        self.turns = 0  # main-thread API responses; the result's num_turns once it is in
        self.tool_uses = 0
        self.last_tool: str | None = None
        self.retrying: str | None = None  # "529 overloaded, attempt 2/10" while the CLI retries
        self.api_error: str | None = None  # the `error` of the CLI's message for an API failure
        self.limit_reset_at: float | None = None  # from a rejected rate_limit_event
        self.denials: list[str] = []  # "Bash: pytest -q", from the result's permission_denials
        self.result: dict[str, Any] | None = None
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)  # the last lines that were not events
        self._messages: dict[str, _Message] = {}

    # ------------------------------------------------------------------------------ feeding

    def feed(self, line: str) -> bool:
        """Take one output line. True when it was an event (a JSON object with a type)."""
        text = line.strip()
        if not text:
            return False
        try:
            event = json.loads(text) if text.startswith("{") else None
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.tail.append(text[:500])
            return False
        self.events += 1
        if isinstance(event.get("session_id"), str):
            self.session_id = event["session_id"]
        kind = event["type"]
        if kind == "system":
            self._system(event)
        elif kind == "assistant":
            self._assistant(event)
        elif kind == "rate_limit_event":
            self._rate_limit(event.get("rate_limit_info"))
        elif kind == "result":
            self.result = event
            self.retrying = None
            if isinstance(event.get("num_turns"), int):
                self.turns = event["num_turns"]
            for denial in event.get("permission_denials") or []:
                if isinstance(denial, dict) and isinstance(denial.get("tool_name"), str):
                    self.denials.append(_denial(denial))
        return True

    def _system(self, event: dict[str, Any]) -> None:
        if event.get("subtype") == "init":
            self.model = event.get("model") if isinstance(event.get("model"), str) else None
            tools = event.get("tools")
            self.tools = [t for t in tools if isinstance(t, str)] if isinstance(tools, list) else []
        elif event.get("subtype") == "api_retry":
            status = event.get("error_status")
            what = " ".join(str(p) for p in (status, event.get("error")) if p) or "error"
            self.retrying = (
                f"{what}, attempt {event.get('attempt', '?')}/{event.get('max_retries', '?')}"
            )

    def _assistant(self, event: dict[str, Any]) -> None:
        message = event.get("message")
        if not isinstance(message, dict):
            return
        if isinstance(event.get("error"), str):
            self.api_error = event["error"]
        msg_id = str(message.get("id") or f"line-{self.events}")
        model = str(message.get("model") or self.model or "")
        seen = self._messages.get(msg_id)
        if seen is None:
            seen = self._messages[msg_id] = _Message(model=model)
            if event.get("parent_tool_use_id") is None and self.result is None:
                self.turns += 1
            if model != "<synthetic>":  # the CLI's own message for a failure is no progress
                self.retrying = None
        usage = message.get("usage")
        if isinstance(usage, dict):
            seen.input = max(seen.input, _int(usage.get("input_tokens")))
            seen.cache_write = max(seen.cache_write, _int(usage.get("cache_creation_input_tokens")))
            seen.cache_read = max(seen.cache_read, _int(usage.get("cache_read_input_tokens")))
            seen.output = max(seen.output, _int(usage.get("output_tokens")))
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                self.tool_uses += 1
                self.last_tool = str(block.get("name") or "?")
                seen.chars += len(json.dumps(block.get("input") or {}))
            elif block.get("type") in ("text", "thinking"):
                seen.chars += len(str(block.get("text") or block.get("thinking") or ""))

    def _rate_limit(self, info: object) -> None:
        if not isinstance(info, dict):
            return
        # "allowed" and "allowed_warning" come with every turn and mean nothing went wrong.
        if info.get("status") == "rejected":
            reset = info.get("resetsAt")
        elif info.get("isUsingOverage") and info.get("overageStatus") == "rejected":
            reset = info.get("overageResetsAt", info.get("resetsAt"))
        else:
            return
        if isinstance(reset, int | float) and not isinstance(reset, bool):
            self.limit_reset_at = float(reset)

    # ------------------------------------------------------------------------------ reading

    @property
    def estimated(self) -> bool:
        """The cost and tokens are estimates from the stream: no result line has said them."""
        return self.result is None

    @property
    def cost_usd(self) -> float:
        if self.result is not None and isinstance(self.result.get("total_cost_usd"), int | float):
            return float(self.result["total_cost_usd"])
        return sum(m.cost() for m in self._messages.values())

    def tokens(self) -> tuple[int, int]:
        """(input incl. cache writes and reads, output): the result's usage, else the stream's."""
        usage = self.result.get("usage") if self.result is not None else None
        if isinstance(usage, dict):
            tokens_in = sum(
                _int(usage.get(k))
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
            tokens_out = _int(usage.get("output_tokens"))
            if tokens_in or tokens_out:
                return tokens_in, tokens_out
        # No result, or one with empty usage (error_max_budget_usd reports zeros).
        messages = self._messages.values()
        return (
            sum(m.input + m.cache_write + m.cache_read for m in messages),
            sum(m.output_estimate for m in messages),
        )

    def note(self) -> str:
        """A one-line progress report: "turn 3, ~$0.0412, last tool: Edit"."""
        cost = f"{'~' if self.estimated else ''}${self.cost_usd:.4f}"
        text = f"turn {self.turns}, {cost}, last tool: {self.last_tool or 'none'}"
        if self.retrying:
            text += f", API retry: {self.retrying}"
        if self.result is not None:
            text += ", finished" if not self.result.get("is_error") else ", failed"
        return text

    def failure(self) -> AgentFailure | None:
        """What went wrong according to the result line; None when it reports no error."""
        if self.result is None or not self.result.get("is_error"):
            return None
        kind = classify(self.result, self.api_error)
        message = failure_text(self.result)
        reset = None
        if kind is FailureKind.RATE_LIMIT:
            reset = self.limit_reset_at or reset_time(message)
        return AgentFailure(kind=kind, message=message, reset_at=reset)

    def resume_not_found(self) -> bool:
        """`--resume <id>` named a session this machine does not have (for this directory)."""
        return self.result is not None and "No conversation found with session ID" in str(
            self.result.get("errors") or ""
        )

    def session_in_use(self) -> bool:
        """`--session-id <id>` named a session that exists already."""
        return self.result is None and any("is already in use" in line for line in self.tail)

    def outcome(self, exit_code: int | None) -> AgentOutcome:
        """The outcome once the CLI has ended with `exit_code`.

        None means the runner ended it: after a timeout (the caller reports that) or because it
        lingered after its result line, which then decides.
        """
        tokens_in, tokens_out = self.tokens()
        fields: dict[str, Any] = {
            "exit_code": exit_code,
            "cost_usd": self.cost_usd,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "session_id": self.session_id,
            "permission_denials": list(dict.fromkeys(self.denials)),
        }
        if self.result is None:
            if exit_code is not None and exit_code < 0:
                error = f"claude was killed by signal {-exit_code} without a result line"
            else:
                error = f"claude exited with code {exit_code} without a result line"
            if self.events:
                error += f" (at {self.note()})"
            if self.tail:  # what it said that was not an event: stderr, mostly
                error += "; last output:\n" + "\n".join(self.tail)
            return _failed(FailureKind.OTHER, error, **fields)
        text = failure_text(self.result)[:TEXT_CHARS]
        fields["text"] = text
        summary = text[:SUMMARY_CHARS]
        failure = self.failure()
        if failure is not None:
            return AgentOutcome(
                succeeded=False, summary=summary, error=describe(failure), failure=failure, **fields
            )
        if exit_code not in (0, None):
            error = f"claude reported success but exited with code {exit_code}"
            return _failed(FailureKind.OTHER, error, summary=summary, **fields)
        return AgentOutcome(succeeded=True, summary=summary, **fields)


def _failed(kind: FailureKind, message: str, **fields: Any) -> AgentOutcome:
    failure = AgentFailure(kind=kind, message=message)
    # Its message whole (the CLI's last lines keep their line breaks).
    return AgentOutcome(
        succeeded=False, error=f"{kind.value}: {message}", failure=failure, **fields
    )
