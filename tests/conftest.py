from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.webhooks.receiver import Receiver

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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a local port, for --notify."""
    r = Receiver()
    try:
        yield r
    finally:
        r.close()
