"""The literal agent: applies the code blocks a plan writes out in full, and nothing else.

It makes demos and end-to-end tests deterministic and free. A block counts only when it names its
file, either on the nearest non-blank line before the fence (a backticked path on a line ending in
':', such as "Create `src/app.py`:") or in the fence's info string (```python title="src/app.py"
or ```python:src/app.py). Blocks that show a command, its output or a fragment to check are left
alone, since writing them to disk would corrupt the file they mention.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from autonomous_pipeline.backends.base import AgentOutcome, AgentRequest, Heartbeat, Runner
from autonomous_pipeline.plan_format.lines import Line, scan

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
_BACKTICKED = re.compile(r"`([^`\n]+)`")
_PATHLIKE = re.compile(r"^[\w./@+~:-]+$")
_INFO_PATH = re.compile(r"""(?:title|file|filename|path)\s*=\s*["']?([^"'\s]+)""")
_INFO_COLON = re.compile(r"^[\w+#-]+:(\S+)$")  # ```python:a/b.py
_LEAD = re.compile(r"^(?:[-*+]\s+|\d+[.)]\s+|#+\s+)?[*_\s]*")
_FILE_VERB = re.compile(
    r"^(?:create|add|update|modify|edit|write|replace|change|overwrite|save|new|file|append)\b",
    re.IGNORECASE,
)
# Without a file verb, a line that introduces a command, its output or something to check names a
# file without showing its content: "Run `scripts/check.sh`:" must never overwrite the script.
_NOT_CONTENT = re.compile(
    r"^(?:run|running|execute|invoke|call|test|verify|check|expect(?:ed)?|example|usage|e\.g\.)\b"
    r"|\b(?:output|command|commands|prints?|shows?|returns?|should\s+contain)\b",
    re.IGNORECASE,
)
# A fragment to splice in ("In `app.py`, after main():", "Insert into `x`:") is not a whole file.
_PARTIAL = re.compile(r"^in\b|\b(?:insert|add\s+to|snippet|excerpt|fragment)\b", re.IGNORECASE)
_DELETE_VERB = re.compile(r"^(?:delete|remove)\b", re.IGNORECASE)


@dataclass(frozen=True)
class FileBlock:
    path: str
    content: str
    line: int  # 1-based line of the opening fence within the instructions
    append: bool = False  # "Append to `x`:" adds to the file instead of replacing it
    is_diff: bool = False  # a diff shown for a source file cannot be written as its content


def named_blocks(markdown: str) -> list[FileBlock]:
    """Every fenced block of `markdown` that names the file it holds, in order."""
    lines = scan(markdown)
    blocks: list[FileBlock] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.fence_start:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].fence_end:
            end += 1
        body = [x.text for x in lines[i + 1 : end]]
        m = _FENCE.match(ln.text)
        info = m.group(2).strip() if m else ""
        named = _path_from_info(info) or _path_from_intro(lines, i)
        if named is not None:
            path, verb = named
            content = textwrap.dedent("\n".join(body))
            lang = info.split()[0].lower() if info.split() else ""
            blocks.append(
                FileBlock(
                    path=path,
                    content=content + "\n" if body else "",
                    line=ln.no,
                    append=verb == "append",
                    is_diff=lang in ("diff", "patch") and not path.endswith((".diff", ".patch")),
                )
            )
        i = end + 1
    return blocks


def _path_from_info(info: str) -> tuple[str, str] | None:
    m = _INFO_PATH.search(info) or _INFO_COLON.match(info)
    return (m.group(1), "") if m else None


def _path_from_intro(lines: list[Line], fence_index: int) -> tuple[str, str] | None:
    """The path named by the nearest non-blank line before the fence, with its leading verb."""
    j = fence_index - 1
    while j >= 0 and lines[j].blank:
        j -= 1
    if j < 0 or lines[j].fenced:
        return None
    text = lines[j].text.strip()
    is_heading = lines[j].level > 0
    if not is_heading and not text.rstrip("*_ ").endswith(":"):
        return None
    lead = _LEAD.sub("", text, count=1)
    verb_m = _FILE_VERB.match(lead)
    verb = verb_m.group(0).lower() if verb_m else ""
    if _DELETE_VERB.match(lead) or _PARTIAL.search(lead):
        return None
    if not verb and _NOT_CONTENT.search(lead):
        return None
    # A heading names a file only when it is nothing but that path: "#### `src/app.py`".
    if is_heading and _BACKTICKED.sub("", lead).strip("*_: "):
        return None
    for token in _BACKTICKED.findall(lead):
        token = token.strip()
        if not _PATHLIKE.match(token) or token in (".", ".."):
            continue
        only_path = not _BACKTICKED.sub("", lead).strip("*_: ")
        if "/" in token or "." in token.lstrip(".")[1:] or verb or only_path:
            return token, verb
    return None


def safe_target(workdir: Path, rel: str) -> Path:
    """Where `rel` lands inside `workdir`; ValueError when it would land anywhere else."""
    if rel.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise ValueError(f"{rel}: absolute paths are refused")
    parts = Path(rel).parts
    if ".." in parts:
        raise ValueError(f"{rel}: paths containing '..' are refused")
    if parts and parts[0] == ".git":
        raise ValueError(f"{rel}: the repository's .git is off limits")
    root = workdir.resolve()
    # resolve() follows symlinks of the parents that exist, so a link to elsewhere is caught.
    target = (root / rel).resolve()
    if not target.is_relative_to(root) or target == root:
        raise ValueError(f"{rel}: resolves outside the worktree (to {target})")
    return target


class LiteralAgent:
    name = "literal"

    async def run(
        self, request: AgentRequest, heartbeat: Heartbeat, runner: Runner | None = None
    ) -> AgentOutcome:
        # The pipeline's own code writes the files: nothing of the plan runs, so no sandbox.
        blocks = named_blocks(request.instructions)
        if not request.workdir.is_dir():
            return _fail(request, f"worktree {request.workdir} does not exist")
        if not blocks:
            _note(request, ["no code blocks to apply"])
            return AgentOutcome(succeeded=True, summary="no code blocks to apply")
        # Check every block before writing any, so a refused path leaves the worktree untouched.
        refused: list[str] = []
        for b in blocks:
            try:
                safe_target(request.workdir, b.path)
            except ValueError as exc:
                refused.append(str(exc))
            if b.is_diff:
                refused.append(f"{b.path}: a diff block cannot be applied as the file's content")
        if refused:
            return _fail(request, "refused: " + "; ".join(refused))
        written: list[str] = []
        for b in blocks:
            # Checked again at write time: an earlier block may have changed the tree.
            target = safe_target(request.workdir, b.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a" if b.append else "w", encoding="utf-8", newline="") as fh:
                fh.write(b.content)
            verb = "appended to" if b.append else "wrote"
            written.append(f"{verb} {b.path} ({len(b.content.encode())} bytes)")
            heartbeat(f"{verb} {b.path}")
        _note(request, written)
        names = sorted({b.path for b in blocks})
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return AgentOutcome(
            succeeded=True, summary=f"applied {len(blocks)} code block(s) to {shown}"
        )


def _fail(request: AgentRequest, error: str) -> AgentOutcome:
    _note(request, [error])
    return AgentOutcome(succeeded=False, error=error)


def _note(request: AgentRequest, lines: list[str]) -> None:
    request.transcript.parent.mkdir(parents=True, exist_ok=True)
    with request.transcript.open("a", encoding="utf-8") as fh:
        fh.write(f"[literal agent, task {request.task_id}]\n")
        fh.writelines(f"{line}\n" for line in lines)
