"""A reviewer's verdict: data in the workflow, never an exception."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Severity(StrEnum):
    BLOCKER = "blocker"
    MAJOR = "major"
    MINOR = "minor"
    NIT = "nit"


class Finding(BaseModel):
    severity: Severity = Severity.MAJOR
    file: str | None = None
    line: int | None = None
    message: str


class Verdict(BaseModel):
    approved: bool
    findings: list[Finding] = Field(default_factory=list)
    summary: str = ""

    @property
    def blocking(self) -> list[Finding]:
        """What a fix round must address: everything but nits."""
        return [f for f in self.findings if f.severity is not Severity.NIT]
