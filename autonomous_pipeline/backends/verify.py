"""Run a task's verification commands, and tell its own failures from failures it inherited.

A check that fails in the task's checkout is run once more on the base commit: if it fails there
too, the failure was already there before the task (`pre_existing`) and is not held against it.

Checks run code the agent wrote, so they run where the agent does: in the task's sandbox, with
the environment of `backends.secrets.agent_env`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping

from autonomous_pipeline.backends.base import Exec, Runner
from autonomous_pipeline.models.results import CheckResult

OUTPUT_TAIL = 2000
TIMEOUT_EXIT = 124  # what coreutils `timeout` reports, so a reader recognises it
# bash where the sandbox has it (plans write bash), else the POSIX shell of a small image.
SHELL = (
    "sh",
    "-c",
    'if command -v bash >/dev/null 2>&1; then exec bash -o pipefail -c "$1"; fi\n'
    # In dash, `set` refusing an option ends the shell: try it in a subshell first.
    '(set -o pipefail) 2>/dev/null && set -o pipefail; eval "$1"',
    "sh",
)

# A runner in a checkout of the base commit, opened only when a check fails.
BaseRunner = Callable[[], contextlib.AbstractAsyncContextManager[Runner]]


async def _run(
    command: str, runner: Runner, timeout_s: float, env: Mapping[str, str]
) -> tuple[int, str]:
    res = await runner.run(
        Exec(argv=[*SHELL, command], env=dict(env), timeout_s=timeout_s, tail_chars=OUTPUT_TAIL)
    )
    if res.timed_out or res.exit_code is None:
        note = f"\n[timed out after {timeout_s:g}s; the command and its children were killed]"
        return TIMEOUT_EXIT, (res.output + note)[-OUTPUT_TAIL:]
    return res.exit_code, res.output[-OUTPUT_TAIL:]


async def run_checks(
    runner: Runner,
    commands: list[str],
    *,
    timeout_s: float,
    env: Mapping[str, str],
    base: BaseRunner | None = None,
) -> list[CheckResult]:
    """Run each command in the runner's checkout, in order, each under `timeout_s`.

    The base checkout is opened only when a command fails, and once for all of them.
    """
    results: list[CheckResult] = []
    async with contextlib.AsyncExitStack() as stack:
        on_base: Runner | None = None
        for command in commands:
            code, tail = await _run(command, runner, timeout_s, env)
            pre_existing = False
            if code != 0 and base is not None:
                if on_base is None:
                    on_base = await stack.enter_async_context(base())
                base_code, _ = await _run(command, on_base, timeout_s, env)
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
