"""`make chaos`, small: workers SIGKILLed and the dev server restarted during a run of 8 tasks.

Runs `bench/chaos.py` as a user does (a subprocess, its JSON summary on the last stdout line and
its exit code), so the bench itself is what is tested; see its docstring for what it does and
checks. Asked to stop, the bench kills every process it started.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from bench.chaos import SUMMARY_KEYS
from tests.integration.helpers import PYTHON, ROOT

pytestmark = pytest.mark.integration

ARGS = [
    *("--tasks", "8", "--kills", "2", "--server-restarts", "1", "--seed", "7"),
    *("--sleep-min", "1", "--sleep-max", "3", "--heartbeat-timeout", "3"),
    # ~40 s as a rule: every step heartbeats, so a kill costs the 3 s heartbeat timeout and a
    # retry; the limits leave room for a slow, loaded machine.
    *("--stall-limit", "60", "--timeout", "140"),
]


def run_bench(tmp: Path, timeout: float) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        [PYTHON, str(ROOT / "bench" / "chaos.py"), *ARGS, "--workdir", str(tmp)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM: the bench unwinds and kills its server and workers; SIGKILL would orphan them.
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"the chaos bench ran over {timeout:g} s\n{err[-6000:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def test_chaos_small_run_merges_every_task_once(tmp_path: Path) -> None:
    code, out, err = run_bench(tmp_path, timeout=200)
    lines = out.strip().splitlines()
    assert lines, f"no output\n{err[-6000:]}"
    summary = json.loads(lines[-1])
    assert set(SUMMARY_KEYS) <= set(summary), summary
    why = f"{summary}\n{err[-6000:]}"
    assert summary["tasks"] == 8, why
    assert summary["merged"] == summary["tasks"], why
    assert summary["duplicates"] == 0 and summary["lost"] == 0, why
    assert summary["kills"] >= 1 and summary["server_restarts"] >= 1, why
    assert summary["recovery_s_max"] is not None, why
    assert summary["ok"] and summary["problems"] == [], why
    assert code == 0, why
    assert not list(tmp_path.iterdir()), "the bench left its temporary directory behind"
