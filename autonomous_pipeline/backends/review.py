"""The reviewer's prompt and the reading of its verdict. Pure: no process, no file.

A reviewer answers with one JSON object `{"approved": bool, "findings": [{"severity", "file",
"line", "message"}]}`. Reviewers are language models: the object may come inside a code fence or
after some prose, and a field may be missing or misspelt. What cannot be read is not an approval.
"""

from __future__ import annotations

import json
import re
from typing import Any

from autonomous_pipeline.backends.secrets import redact
from autonomous_pipeline.models.activity_io import FixRequest
from autonomous_pipeline.models.plan import Task
from autonomous_pipeline.models.review import Finding, Severity, Verdict

DIFF_LIMIT = 60_000  # characters of diff a reviewer is shown; the rest is summarised

_SEVERITY_ALIAS = {
    "critical": Severity.BLOCKER,
    "error": Severity.BLOCKER,
    "high": Severity.MAJOR,
    "medium": Severity.MAJOR,
    "warning": Severity.MINOR,
    "low": Severity.MINOR,
    "info": Severity.NIT,
}


def review_prompt(task: Task, diff: str, stat: str, checks: list[str]) -> str:
    shown = (
        diff
        if len(diff) <= DIFF_LIMIT
        else diff[:DIFF_LIMIT]
        + f"\n[... {len(diff) - DIFF_LIMIT} more characters of diff not shown]"
    )
    criteria = (
        "\n".join(f"- {c}" for c in task.criteria)
        or "- (none given: judge against the instructions)"
    )
    ran = "\n".join(f"- `{c}`" for c in checks) or "- (none)"
    return f"""You are reviewing one task's change before it is merged. Do not change any file.

## Task {task.id}: {task.title}

{task.instructions}

## Acceptance criteria
{criteria}

## Verification commands (they already passed)
{ran}

## The change (git diff against the task's base)
{stat}

```diff
{shown}
```

Review the change against the task's instructions and acceptance criteria: is it complete, correct,
and limited to what the task asked? Answer with ONE JSON object and nothing else:

{{"approved": true|false, "summary": "one sentence",
  "findings": [{{"severity": "blocker|major|minor|nit", "file": "path or null", "line": 12, "message": "what is wrong and how to fix it"}}]}}

Approve when nothing blocker or major remains; nits alone do not block.
"""


# How much of a failing check's output the fix agent sees: its end, where the error usually is.
FIX_OUTPUT_CHARS = 1500


def fix_prompt(task: Task, base_prompt: str, fix: FixRequest) -> str:
    """What the fix agent is asked: the task again, plus exactly what to address."""
    parts = [
        base_prompt,
        "",
        "## Fix round",
        "Your previous change for this task needs more work. Address:",
    ]
    outputs = {c.command: c for c in fix.failed}
    for c in fix.failing_checks:
        parts.append(f"- the verification command `{c}` fails; make it pass")
        check = outputs.get(c)
        if check is not None and check.output_tail.strip():
            tail = check.output_tail.strip()[-FIX_OUTPUT_CHARS:]
            fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", tail)), default=0) + 1)
            parts.append(
                f"  It exited {check.exit_code}; the end of its output:\n{fence}\n{tail}\n{fence}"
            )
    for f in fix.findings:
        where = f" ({f.file}{':' + str(f.line) if f.line else ''})" if f.file else ""
        parts.append(f"- [{f.severity.value}]{where} {f.message}")
    if fix.conflicts:
        parts.append(
            "- the change conflicts with work merged meanwhile in: "
            + ", ".join(fix.conflicts)
            + ". The files contain git conflict markers; resolve them keeping both intents."
        )
    if fix.unchanged_rounds:
        parts.append(
            f"Your last fix round changed no file ({fix.unchanged_rounds} round(s) so far): "
            "these points still stand."
        )
    parts.append("Change only what these points need. Do not commit; the pipeline commits.")
    return "\n".join(parts)


def parse_verdict(text: str) -> Verdict:
    """The reviewer's answer as a Verdict; an unreadable answer is a rejection that says so."""
    obj = _last_json_object(text)
    if obj is None or "approved" not in obj:
        return Verdict(
            approved=False,
            findings=[
                Finding(
                    severity=Severity.MAJOR,
                    message="the reviewer's answer had no JSON verdict: " + text.strip()[:300],
                )
            ],
            summary="unreadable review",
        )
    findings = [_finding(f) for f in obj.get("findings") or [] if isinstance(f, dict | str)]
    approved = obj.get("approved") is True or str(obj.get("approved")).lower() == "true"
    # Masked again once decoded: a reviewer that wrote a secret as JSON escapes (\u0064t-...)
    # passed the mask of its raw output, and a verdict's text travels on into fix rounds.
    for f in findings:
        f.message = redact(f.message)
        f.file = redact(f.file) if f.file else f.file
    return Verdict(
        approved=approved, findings=findings, summary=redact(str(obj.get("summary") or "")[:500])
    )


def _finding(raw: dict[str, Any] | str) -> Finding:
    if isinstance(raw, str):
        return Finding(message=raw[:2000])
    sev = str(raw.get("severity", "major")).lower()
    severity = _SEVERITY_ALIAS.get(sev) or (
        Severity(sev) if sev in {s.value for s in Severity} else Severity.MAJOR
    )
    line = raw.get("line")
    return Finding(
        severity=severity,
        file=str(raw["file"]) if raw.get("file") else None,
        line=int(line)
        if isinstance(line, int | float) or (isinstance(line, str) and line.isdigit())
        else None,
        message=str(raw.get("message") or raw.get("description") or raw)[:2000],
    )


def _last_json_object(text: str) -> dict[str, Any] | None:
    """The last top-level JSON object in `text` (fenced or not) that parses."""
    decoder = json.JSONDecoder()
    found = None
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and "approved" in obj:
            found = obj
    return found
