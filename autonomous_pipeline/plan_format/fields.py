"""Readers for the bold `**Label:**` fields of batches and tasks, and for completion markers."""

from __future__ import annotations

import re
from enum import Enum

from autonomous_pipeline.models.plan import Check, CheckKind, FileRef, PlanIssue

ID = r"[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*"
_ID_ONLY = re.compile(rf"^{ID}$")

# `**Label:** value` or `**Label**: value`. As a list item (`- **File:** a.py`) only file labels
# count: `- **Tests:**` inside an implementation section lists test names, not steps to run.
_LABEL = re.compile(r"^\s*([-*+]\s+)?\*\*([^*\n]+?)(?::\*\*|\*\*\s*:)\s*(.*)$")


class Field(Enum):
    FILES = "files"
    VERIFICATION = "verification"
    DEPENDS = "depends"
    STATUS = "status"
    EXECUTION_MODE = "execution_mode"
    COMMIT = "commit"
    OTHER = "other"


_VERIFICATION_LABELS = {
    "verification",
    "verification steps",
    "verify",
    "tests",
    "test",
    "test plan",
    "acceptance criteria",
}


def field_label(text: str) -> tuple[Field, str] | None:
    """The field a line opens, and the rest of the line, or None when it opens no field."""
    m = _LABEL.match(text) if "**" in text else None
    if not m:
        return None
    label = " ".join(m.group(2).lower().split())
    value = m.group(3).strip()
    if label.startswith("file"):
        return Field.FILES, value
    if m.group(1):
        return None
    if label in _VERIFICATION_LABELS:
        return Field.VERIFICATION, value
    if label in ("depends on", "dependencies", "depends", "dependency"):
        return Field.DEPENDS, value
    if label == "status":
        return Field.STATUS, value
    if label == "execution mode":
        return Field.EXECUTION_MODE, value
    if label in ("commit", "commit message"):
        return Field.COMMIT, value
    return Field.OTHER, value


# ---------------------------------------------------------------- completion markers

_DONE_SUFFIX = re.compile(r"\s*(?:✅\ufe0f?|\[(?:done|complete|completed)\])\s*$", re.IGNORECASE)
_CHECKED_PREFIX = re.compile(r"^\[[xX]\]\s*")
_DONE_STATUS = re.compile(r"^(?:✅|(?:completed?|done)\b)", re.IGNORECASE)


def strip_done_marker(title: str) -> tuple[str, bool]:
    """Remove a completion marker from a title: `Add helper ✅` -> (`Add helper`, True)."""
    done = False
    while True:
        m = _DONE_SUFFIX.search(title)
        if not m:
            break
        title, done = title[: m.start()], True
    m = _CHECKED_PREFIX.match(title)
    if m:
        title, done = title[m.end() :], True
    return title.strip(), done


def status_is_done(value: str) -> bool:
    return bool(_DONE_STATUS.match(value.strip().strip("*`_ ").strip()))


def execution_mode(value: str) -> str | None:
    """`\\`dagger\\` (parallel)` -> `dagger`."""
    word = re.sub(r"[`*_]", "", value).strip().split()
    return word[0].lower().rstrip(",.;") if word else None


# ---------------------------------------------------------------- dependencies

_PARENS = re.compile(r"\([^)]*\)")
_SPLIT = re.compile(r"\s*(?:,|;|&|\band\b|\bor\b)\s*", re.IGNORECASE)


def _dependency_words(value: str, keyword: str) -> list[str]:
    text = _PARENS.sub(" ", re.sub(r"[`*_]", "", value))
    words = []
    for word in _SPLIT.split(text):
        word = re.sub(rf"^{keyword}(?:es|s)?\s+", "", word.strip(), flags=re.IGNORECASE).rstrip(".")
        if word and word.lower() not in ("none", "n/a", "-", "—"):
            words.append(word)
    return words


def task_dependencies(value: str, line: int) -> tuple[list[str], list[PlanIssue]]:
    """`Task 1.1, Task 1.2` or `1.1, 1.2` or `None` -> task ids."""
    ids, errors = [], []
    for word in _dependency_words(value, "task"):
        if _ID_ONLY.match(word):
            ids.append(word)
        else:
            errors.append(PlanIssue(line=line, message=f"cannot read task dependency {word!r}"))
    return ids, errors


def batch_dependencies(value: str, line: int) -> tuple[list[str], list[PlanIssue]]:
    """`None`, `Batch 1`, `Batch 1, 3`, `Batches 1 and 2`, `Batch 1-3`, `Batch A-C` -> batch ids."""
    ids: list[str] = []
    errors: list[PlanIssue] = []
    for word in _dependency_words(value, "batch"):
        r = re.fullmatch(r"(\w+)\s*[-–—]\s*(\w+)", word)
        if r and r.group(1).isdigit() and r.group(2).isdigit():
            lo, hi = int(r.group(1)), int(r.group(2))
            ids.extend(str(n) for n in range(lo, hi + 1))
        elif r and len(r.group(1)) == 1 == len(r.group(2)) and r.group(1).isalpha():
            lo, hi = ord(r.group(1).upper()), ord(r.group(2).upper())
            ids.extend(chr(c) for c in range(lo, hi + 1))
        elif _ID_ONLY.match(word):
            ids.append(word)
        else:
            errors.append(PlanIssue(line=line, message=f"cannot read batch dependency {word!r}"))
    return ids, errors


# ---------------------------------------------------------------- files

_VERBS = {
    "create": "create",
    "add": "create",
    "new": "create",
    "modify": "modify",
    "edit": "modify",
    "change": "modify",
    "update": "update",
    "delete": "delete",
    "remove": "delete",
    "test": "test",
    "tests": "test",
    "read": "read",
}
_VERB = re.compile(r"^\s*(" + "|".join(_VERBS) + r")\b\s*:?\s*", re.IGNORECASE)
_BACKTICKED = re.compile(r"`([^`]+)`")
_BARE_PATH = re.compile(r"^[\w.\-/\\~]+$")
_RANGE = re.compile(r":\d+(?:-\d+)?$")


def _split_commas(text: str) -> list[str]:
    """Split on commas that are not inside backticks."""
    if "`" not in text:
        return text.split(",")
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == "`":
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def _path_error(path: str) -> str | None:
    if path.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:[\\/]", path):
        return f"file path {path!r} is absolute; paths are relative to the repository root"
    if ".." in re.split(r"[\\/]", path):
        return f"file path {path!r} escapes the repository ('..')"
    return None


def file_refs(
    text: str, line: int, default_action: str = "modify", require_verb: bool = False
) -> tuple[list[FileRef], list[PlanIssue]]:
    """`Create: a.py, b.py`, `Modify \\`src/x.py:10-20\\``, `\\`a.py\\` + tests` -> file refs.

    The verb carries over commas (`Create a.py, b.py` creates both). A segment with no path in it
    (`+ tests`, `with all exports`) is prose and adds nothing.
    """
    refs: list[FileRef] = []
    errors: list[PlanIssue] = []
    action: str | None = None if require_verb else default_action
    for segment in _split_commas(text):
        m = _VERB.match(segment)
        if m:
            action = _VERBS[m.group(1).lower()]
            segment = segment[m.end() :]
        if action is None:
            continue
        quoted = _BACKTICKED.findall(segment)
        if quoted:
            candidates = quoted[:1]
        else:
            words = segment.strip().split()
            candidates = words[:1] if words else []
        for raw in candidates:
            path = _RANGE.sub("", raw.strip().rstrip(".;:"))
            drive = re.match(r"^[A-Za-z]:[\\/]", path)  # C:\x.py: absolute on Windows
            if not drive and (
                not path or not _BARE_PATH.match(path) or not re.search(r"[./\\]", path)
            ):
                continue
            problem = _path_error(path)
            if problem:
                errors.append(PlanIssue(line=line, message=problem))
            else:
                refs.append(
                    FileRef.model_construct(action=action, path=path.replace("\\", "/"), line=line)
                )
    return refs, errors


# ---------------------------------------------------------------- verification steps

# Programs whose name at the start of a plain step means the step is a command to run.
_PROGRAMS = frozenset(
    [
        "python",
        "python3",
        "pytest",
        "npm",
        "npx",
        "pnpm",
        "yarn",
        "node",
        "deno",
        "bun",
        "make",
        "bash",
        "sh",
        "cargo",
        "go",
        "ruff",
        "mypy",
        "uv",
        "pip",
        "tox",
        "nox",
        "tsc",
        "eslint",
        "jest",
        "vitest",
        "mvn",
        "gradle",
        "dotnet",
        "grep",
        "ls",
        "cat",
        "diff",
        "cmp",
    ]
)
_WHOLE_CODE = re.compile(r"^`([^`]+)`\.?$")
_RUN_CODE = re.compile(r"^(?:run|execute)\s*:?\s*`([^`]+)`\.?$", re.IGNORECASE)


def verification_step(text: str, line: int) -> Check:
    """A step in backticks (or `Run \\`cmd\\``) or starting with a known program is a command.

    Everything else is a criterion for the reviewer: `Test file exists` stays prose even though
    `test` is a shell builtin, because programs are matched case-sensitively.
    """
    text = text.strip()
    m = _WHOLE_CODE.match(text) or _RUN_CODE.match(text)
    if m:
        return Check.model_construct(text=m.group(1).strip(), kind=CheckKind.COMMAND, line=line)
    first = text.split()[0] if text.split() else ""
    if first in _PROGRAMS or first.startswith("./"):
        return Check.model_construct(text=text, kind=CheckKind.COMMAND, line=line)
    return Check.model_construct(text=text, kind=CheckKind.CRITERION, line=line)
