"""Fence-aware line scanning: the only place that decides what is structure and what is text."""

from __future__ import annotations

import re
from typing import NamedTuple

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
_HEADER = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*(?:#+[ \t]*)?$")


class Line(NamedTuple):
    no: int  # 1-based
    text: str
    fenced: bool  # inside a fenced code block, or one of its delimiters
    level: int  # markdown header level, 0 when the line is not a header
    heading: str  # header text without the hashes
    indent: int
    fence_start: bool = False  # the opening delimiter of a fenced block
    fence_end: bool = False  # the closing delimiter

    @property
    def blank(self) -> bool:
        return not self.text.strip()


def scan(text: str) -> list[Line]:
    """Split `text` into lines and mark fences and headers.

    A fence opens with three or more backticks or tildes (at any indentation, since plans put
    fences inside list items) and closes with a run of the same character at least as long and
    nothing after it. Lines inside are never headers, so `## Batch 9` in a code sample is text.
    An unclosed fence runs to the end of the file, as in CommonMark.
    """
    lines: list[Line] = []
    fence: str | None = None
    # Lines are counted by "\n" alone, as editors and compilers count them; a CRLF file works.
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    for no, raw in enumerate((r.removesuffix("\r") for r in rows), start=1):
        stripped = raw.lstrip(" \t")
        indent = len(raw) - len(stripped)
        # Cheap first-character tests keep a 30,000-line plan well under the parse budget.
        m = _FENCE.match(raw) if stripped[:1] in ("`", "~") else None
        if fence is not None:
            if (
                m
                and m.group(1)[0] == fence[0]
                and len(m.group(1)) >= len(fence)
                and not m.group(2).strip()
            ):
                fence = None
                lines.append(Line(no, raw, True, 0, "", indent, fence_end=True))
            else:
                lines.append(Line(no, raw, True, 0, "", indent))
            continue
        if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
            fence = m.group(1)
            lines.append(Line(no, raw, True, 0, "", indent, fence_start=True))
            continue
        h = _HEADER.match(raw) if raw[:1] == "#" else None
        if h:
            lines.append(Line(no, raw, False, len(h.group(1)), h.group(2), indent))
        else:
            lines.append(Line(no, raw, False, 0, "", indent))
    return lines


def skip_front_matter(lines: list[Line]) -> int:
    """Index of the first line after a YAML front-matter block (`---` ... `---` at the top)."""
    if not lines or lines[0].text.strip() != "---":
        return 0
    for i in range(1, len(lines)):
        if lines[i].text.strip() in ("---", "..."):
            return i + 1
    return 0
