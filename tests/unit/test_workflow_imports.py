"""Workflow code is deterministic: it imports only models, pure helpers and temporalio."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

ALLOWED_ROOTS = {
    "__future__",
    "asyncio",
    "datetime",
    "typing",
    "dataclasses",
    "collections",
    "enum",
    "temporalio",
    "autonomous_pipeline.models",
    "autonomous_pipeline.workflows",
    # The parser's own whole-plan checks (pure), run again on a revision of a running plan.
    "autonomous_pipeline.plan_format",
    # Deterministic computation: a decision's signature, checked against the run's public key
    # (and, for runs from before signatures, a token against its recorded digest).
    "cryptography",
    "hashlib",
    "hmac",
}
FORBIDDEN_CALLS = {"open", "print", "input"}


def _root(name: str) -> str:
    """The package an import comes from: the first part, or our own subpackage."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "autonomous_pipeline" else parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
    return found


def test_workflow_modules_import_only_deterministic_code() -> None:
    bad = []
    files = sorted((ROOT / "workflows").glob("*.py"))
    assert len(files) >= 4
    for path in files:
        for line, name in _imports(path):
            if _root(name) not in ALLOWED_ROOTS:
                bad.append(f"{path.name}:{line}: imports {name}")
    assert bad == []


def test_workflow_modules_do_no_io() -> None:
    bad = []
    for path in sorted((ROOT / "workflows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                bad.append(f"{path.name}:{node.lineno}: calls {node.func.id}()")
    assert bad == []


def test_models_import_no_io_either() -> None:
    # Workflows import models, so models must not pull in I/O modules or settings.
    for path in sorted((ROOT / "autonomous_pipeline" / "models").glob("*.py")):
        for line, name in _imports(path):
            assert _root(name) in {
                "__future__",
                "enum",
                "pydantic",
                "autonomous_pipeline.models",
                "typing",
            }, f"{path.name}:{line}: {name}"
