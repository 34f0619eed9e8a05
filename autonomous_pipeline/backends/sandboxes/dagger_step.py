"""What one step of the `dagger` sandbox asks of the engine. Pure: facts in, a plan out.

The plan is the container (the image, then its setup commands, which the engine caches as
layers), the directories copied in (the checkout at /workspace, the task's TMPDIR and HOME), the
environment (literal values, and the worker's named variables as Dagger secrets, so that their
values stay out of the engine's logs and caches), and the command. The checkout's `.git` pointer
stays out: it names the worker's paths, which the container does not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autonomous_pipeline.backends.sandboxes.container_argv import (
    HOME,
    NOT_FORWARDED,
    TMPDIR,
    WORKDIR,
)


@dataclass(frozen=True)
class Mount:
    host: Path
    inside: Path
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class DaggerStep:
    image: str
    setup: list[str]
    mounts: list[Mount]
    env: dict[str, str]  # literal values
    secrets: list[str]  # names whose values are read from the worker's environment
    argv: list[str]
    workdir: Path = WORKDIR
    stdin: str | None = None
    exports: list[Mount] = field(default_factory=list)  # copied back to the host afterwards


def plan_step(
    image: str,
    setup: list[str],
    checkout: Path,
    tmp: Path,
    home: Path,
    env_values: dict[str, str],
    forwarded: list[str],
    argv: list[str],
    stdin: bytes | None = None,
) -> DaggerStep:
    mounts = [
        Mount(checkout, WORKDIR, exclude=(".git",)),
        Mount(tmp, TMPDIR),
        Mount(home, HOME),
    ]
    named = [n for n in sorted(forwarded) if n not in NOT_FORWARDED]
    # The operator's variables win over the image's literal ones (a repository's file).
    literal = {k: v for k, v in env_values.items() if k not in named}
    env = {**literal, "HOME": str(HOME), "TMPDIR": str(TMPDIR)}
    return DaggerStep(
        image=image,
        setup=list(setup),
        mounts=mounts,
        env=env,
        secrets=named,
        argv=list(argv),
        stdin=stdin.decode("utf-8", "replace") if stdin is not None else None,
        exports=mounts,
    )
