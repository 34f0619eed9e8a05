"""A task's change re-applied onto a newer target tip, for an agent to resolve its conflicts.

The change is squashed into one commit (the task branch may hold several) and cherry-picked
without committing: the files that conflict keep git's markers and stay unmerged in the index,
which is how a person would find a conflict too. What was done is recorded in a commit under
`refs/pipeline-conflict/<run>/<task>` (its message is JSON; its parents keep the change and the
tip alive), so that the step can be repeated with the same answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autonomous_pipeline.backends.git import GitError, git, rev_parse, split_z
from autonomous_pipeline.backends.workspace.checkout import Checkout

_SUBJECT = "pipeline conflict fix"


@dataclass(frozen=True)
class ConflictRecord:
    source: str  # the task's commit
    base: str  # the task's base: source's change is base..source
    tip: str  # the target's tip the change was applied onto
    change: str  # base..source squashed into one commit (parent: base)
    conflicts: list[str] = field(default_factory=list)


async def read_record(clone: Path, ref: str) -> ConflictRecord | None:
    if await rev_parse(ref, clone) is None:
        return None
    body = await git("show", "--no-patch", "--format=%B", ref, cwd=clone)
    try:
        info = json.loads(body.output.split("\n\n", 1)[1])
        return ConflictRecord(
            source=str(info["source"]),
            base=str(info["base"]),
            tip=str(info["tip"]),
            change=str(info["change"]),
            conflicts=[str(p) for p in info["conflicts"]],
        )
    except (IndexError, KeyError, TypeError, ValueError):
        return None  # not ours, or damaged: the caller starts over


async def write_record(clone: Path, ref: str, record: ConflictRecord) -> None:
    message = f"{_SUBJECT}\n\n{json.dumps(asdict(record))}"
    made = await git(
        "commit-tree", f"{record.change}^{{tree}}", "-p", record.change, "-p", record.tip,
        "-m", message,
        cwd=clone,
    )  # fmt: skip
    await git("update-ref", ref, made.output.strip(), cwd=clone)


async def squash(clone: Path, base: str, commit: str) -> str:
    """One commit with base..commit's whole change, on `base`, with `commit`'s subject."""
    for known in (base, commit):
        if await rev_parse(known, clone) is None:
            raise GitError(f"commit {known} is not in {clone}")
    subject = await git("show", "--no-patch", "--format=%s", commit, cwd=clone)
    made = await git(
        "commit-tree", f"{commit}^{{tree}}", "-p", base,
        "-m", subject.output.strip() or "task change",
        cwd=clone,
    )  # fmt: skip
    return made.output.strip()


async def apply_change(co: Checkout, change: str) -> list[str]:
    """Apply `change` uncommitted onto the clean checkout's HEAD: the conflicting paths."""
    res = await co.git("cherry-pick", "--no-commit", change, check=False)
    if res.ok:
        return []
    unmerged = await co.git("diff", "--name-only", "-z", "--diff-filter=U", check=False)
    # The conflict stays in the files and the index; the cherry-pick itself is forgotten.
    await co.git("cherry-pick", "--quit", check=False)
    paths = sorted(set(split_z(unmerged.output)))
    if not paths:
        raise GitError(f"applying {change} in {co.path} failed", argv=res.argv, output=res.output)
    return paths


async def holds_change(co: Checkout, tip: str) -> bool:
    """The checkout is as prepared on `tip`, or past it: a resolution is under way or committed."""
    head = await co.head()
    if head is None:
        return False
    if head != tip:
        return await co.is_ancestor(tip, head)
    status = await co.git("status", "--porcelain", "--untracked-files=all")
    return bool(status.output.strip())
