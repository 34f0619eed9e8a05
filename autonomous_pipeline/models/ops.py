"""Settings of how the processes report on themselves (their logs)."""

from __future__ import annotations

from enum import StrEnum


class LogFormat(StrEnum):
    AUTO = "auto"  # JSON lines unless stderr is a terminal
    JSON = "json"
    CONSOLE = "console"
