"""Run a task's verification commands, and tell its own failures from failures it inherited.

A check that fails in the task's worktree is run once more on the base commit: if it fails there
too, the failure was already there before the task (`pre_existing`) and is not held against it.

Checks run code the agent wrote, so they get what the agent gets: the environment of
`backends.secrets.agent_env` and, when `writable` says so, writes confined to their checkout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from backends._proc import run_process
from backends.confine import with_tmpdir
from backends.secrets import agent_env
from models.results import CheckResult

OUTPUT_TAIL = 2000
TIMEOUT_EXIT = 124  # what coreutils `timeout` reports, so a reader recognises it

BaseDirFactory = Callable[[], contextlib.AbstractAsyncContextManager[Path]]
# Where a check running in a checkout may write; None: anywhere.
Writable = Callable[[Path], list[Path] | None]


async def _run(
    command: str, cwd: Path, timeout_s: float, env: Mapping[str, str], writable: Writable | None
) -> tuple[int, str]:
    confine = writable(cwd) if writable is not None else None
    res = await run_process(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env=with_tmpdir(env, confine, cwd),
        timeout_s=timeout_s,
        tail_chars=OUTPUT_TAIL,
        confine=confine,
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
    env: Mapping[str, str] | None = None,
    writable: Writable | None = None,
) -> list[CheckResult]:
    """Run each command with `bash -o pipefail -c` in `workdir`, in order, each under `timeout_s`.

    The base checkout is opened only when a command fails, and once for all of them.
    """
    env = agent_env() if env is None else env
    results: list[CheckResult] = []
    async with contextlib.AsyncExitStack() as stack:
        base_dir: Path | None = None
        for command in commands:
            code, tail = await _run(command, workdir, timeout_s, env, writable)
            pre_existing = False
            if code != 0 and base_dir_factory is not None:
                if base_dir is None:
                    base_dir = await stack.enter_async_context(base_dir_factory())
                base_code, _ = await _run(command, base_dir, timeout_s, env, writable)
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
