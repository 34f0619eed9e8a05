"""Build the demo repository: a tiny package `toolkit` with its own unittest suite, on branch main.

python examples/make_demo_repo.py DIR
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FILES = {
    "README.md": "# toolkit\n\nA tiny text toolkit, grown by the Autonomous Pipeline demo plan.\n",
    "toolkit/__init__.py": '"""A tiny text toolkit."""\n',
    "toolkit/core.py": '"""Shared helpers."""\n\n\ndef normalise(text: str) -> str:\n    return " ".join(text.split())\n',
    "tests/__init__.py": "",
    "tests/test_core.py": (
        "import unittest\n\nfrom toolkit.core import normalise\n\n\n"
        "class CoreTest(unittest.TestCase):\n"
        "    def test_normalise(self):\n"
        '        self.assertEqual(normalise("  a   b "), "a b")\n'
    ),
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Demo", "-c", "user.email=demo@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def make_demo_repo(repo: Path) -> Path:
    if repo.exists() and any(repo.iterdir()):
        raise SystemExit(f"{repo} exists and is not empty; pick a new directory")
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    for name, text in FILES.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "toolkit: first commit")
    return repo


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(make_demo_repo(Path(sys.argv[1]).resolve()))
