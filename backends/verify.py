"""Run a task's verification commands, and tell its own failures from failures it inherited.

A check that fails in the task's worktree is run once more on the base commit: if it fails there
too, the failure was already there before the task (`pre_existing`) and is not held against it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from backends._proc import run_process
from models.results import CheckResult

OUTPUT_TAIL = 2000
TIMEOUT_EXIT = 124  # what coreutils `timeout` reports, so a reader recognises it

BaseDirFactory = Callable[[], contextlib.AbstractAsyncContextManager[Path]]

# Set by a calling git hook, these would make a check's own git commands read the wrong repository.
_REPO_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")


async def _run(command: str, cwd: Path, timeout_s: float) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    res = await run_process(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        timeout_s=timeout_s,
        tail_chars=OUTPUT_TAIL,
    )
    if res.timed_out or res.exit_code is None:
        note = f"\n[timed out after {timeout_s:g}s; the command and its children were killed]"
        return TIMEOUT_EXIT, (res.output + note)[-OUTPUT_TAIL:]
    return res.exit_code, res.output[-OUTPUT_TAIL:]


async def run_checks(
    workdir: Path,
    commands: list[str],
    *,
    timeout_s: float,
    base_dir_factory: BaseDirFactory | None = None,
) -> list[CheckResult]:
    """Run each command with `bash -o pipefail -c` in `workdir`, in order, each under `timeout_s`.

    The base checkout is opened only when a command fails, and once for all of them.
    """
    results: list[CheckResult] = []
    async with contextlib.AsyncExitStack() as stack:
        base_dir: Path | None = None
        for command in commands:
            code, tail = await _run(command, workdir, timeout_s)
            pre_existing = False
            if code != 0 and base_dir_factory is not None:
                if base_dir is None:
                    base_dir = await stack.enter_async_context(base_dir_factory())
                base_code, _ = await _run(command, base_dir, timeout_s)
                pre_existing = base_code != 0
            results.append(
                CheckResult(
                    command=command,
                    exit_code=code,
                    passed=code == 0,
                    pre_existing=pre_existing,
                    output_tail=tail,
                )
            )
    return results


def checks_passed(results: Iterable[CheckResult]) -> bool:
    """Every check passed, or failed on the base commit as well."""
    return all(r.passed or r.pre_existing for r in results)
