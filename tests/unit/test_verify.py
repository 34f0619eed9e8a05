"""Verification commands: pass/fail, failures inherited from the base, timeouts, output caps."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from autonomous_pipeline.backends.base import Runner
from autonomous_pipeline.backends.verify import OUTPUT_TAIL, TIMEOUT_EXIT, checks_passed, run_checks
from autonomous_pipeline.models.results import CheckResult
from tests.sandboxes import HostRunner

ENV = {"PATH": os.environ["PATH"]}


class BaseDir:
    """A stand-in base checkout that counts how often it is opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened = 0
        self.closed = 0

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[Runner]:
        self.opened += 1
        try:
            yield HostRunner(self.path)
        finally:
            self.closed += 1


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[HostRunner, BaseDir]:
    work, base = tmp_path / "work", tmp_path / "base"
    work.mkdir()
    base.mkdir()
    (work / "task-file").write_text("x\n")
    (base / "only-on-base").write_text("x\n")
    return HostRunner(work), BaseDir(base)


async def test_passing_checks_never_open_the_base(dirs: tuple[HostRunner, BaseDir]) -> None:
    work, base = dirs
    results = await run_checks(
        work, ["test -f task-file", "echo hi"], timeout_s=10, env=ENV, base=base
    )
    assert [r.passed for r in results] == [True, True]
    assert results[1].output_tail.strip() == "hi"
    assert base.opened == 0 and checks_passed(results)


async def test_pre_existing_failure_is_told_from_a_new_one(
    dirs: tuple[HostRunner, BaseDir],
) -> None:
    work, base = dirs
    commands = [
        "test -f never-anywhere",  # fails on the base too: not the task's fault
        "test -f only-on-base",  # passes on the base: the task broke it
        "exit 3",
    ]
    results = await run_checks(work, commands, timeout_s=10, env=ENV, base=base)
    assert [(r.passed, r.pre_existing, r.exit_code) for r in results] == [
        (False, True, 1),
        (False, False, 1),
        (False, True, 3),
    ]
    assert (base.opened, base.closed) == (1, 1)  # once, reused, closed
    assert not checks_passed(results)
    assert checks_passed([results[0], results[2]])


async def test_without_a_base_a_failure_is_the_task_s(dirs: tuple[HostRunner, BaseDir]) -> None:
    work, _ = dirs
    [r] = await run_checks(work, ["false"], timeout_s=10, env=ENV, base=None)
    assert (r.passed, r.pre_existing) == (False, False)


async def test_pipefail_and_bash(dirs: tuple[HostRunner, BaseDir]) -> None:
    work, _ = dirs
    [r, ok] = await run_checks(work, ["false | cat", "[[ 1 == 1 ]]"], timeout_s=10, env=ENV)
    assert not r.passed and ok.passed


async def test_timeout_kills_the_command_and_its_children(dirs: tuple[HostRunner, BaseDir]) -> None:
    work, _ = dirs
    start = time.monotonic()
    [r] = await run_checks(work, ["sleep 60 & echo $! > child.pid; wait"], timeout_s=0.5, env=ENV)
    assert time.monotonic() - start < 5
    assert (r.passed, r.exit_code) == (False, TIMEOUT_EXIT)
    assert "timed out" in r.output_tail
    child = int((work.host.workdir / "child.pid").read_text())
    for _ in range(50):
        if not _alive(child):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the background child outlived the timeout")


def _alive(pid: int) -> bool:
    """Running, that is: a killed child waiting to be reaped by init counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


async def test_output_tail_is_capped(dirs: tuple[HostRunner, BaseDir]) -> None:
    work, _ = dirs
    [r] = await run_checks(work, ["seq 1 20000; echo END; exit 1"], timeout_s=10, env=ENV)
    assert len(r.output_tail) <= OUTPUT_TAIL and r.output_tail.rstrip().endswith("END")


def test_checks_passed_rules() -> None:
    ok = CheckResult(command="a", exit_code=0, passed=True)
    old = CheckResult(command="b", exit_code=1, passed=False, pre_existing=True)
    new = CheckResult(command="c", exit_code=1, passed=False)
    assert checks_passed([]) and checks_passed([ok, old]) and not checks_passed([ok, new])
