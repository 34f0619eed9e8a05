from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_PLANS = ROOT.parent / "shared" / "plans"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def md(text: str) -> str:
    """Plans written inline in tests are indented with the test; strip that."""
    return textwrap.dedent(text).lstrip("\n")


@pytest.fixture
def shared_plans() -> Path:
    if not SHARED_PLANS.is_dir():
        pytest.skip(f"{SHARED_PLANS} is not present (the shared folder sits beside the checkout)")
    return SHARED_PLANS
