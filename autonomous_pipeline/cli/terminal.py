"""Text from a run (an agent's check output, a reviewer's finding, an error) on the operator's
terminal: printable only. An escape sequence in it could hide lines, fake them (a "fetch it:"
line of the agent's), or write the clipboard (OSC 52)."""

from __future__ import annotations

import re

# C0 and C1 controls but newline and tab, and DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(text: str) -> str:
    """`text` with every control character shown as its escape (ESC -> "\\x1b")."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
