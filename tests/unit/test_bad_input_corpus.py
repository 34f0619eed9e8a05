"""A corpus of malformed plans and bad invocations: each is exit 2, one clear message that says what
and where, no traceback, and nothing written (no workspace, the repository unchanged)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from autonomous_pipeline.cli.main import main
from tests.gitutil import make_dirty, make_user_repo, snapshot

GOOD = "## Batch 1: b\n**Dependencies:** None\n### Task 1.1: t\nCreate `a.txt`:\n```\nhi\n```\n"
TWO = GOOD + "## Batch 2: c\n**Dependencies:** Batch 1\n### Task 2.1: u\n**Depends on:** Task 1.1\n"


@dataclass
class Case:
    name: str
    plan: str | bytes | None  # None: no file at all
    args: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()  # words the message must hold
    line: int | None = None  # a plan error: `PLAN:LINE:` must lead the message
    dry: bool = True
    setup: Callable[[Path], list[str]] | None = None  # extra args from a prepared tmp dir
    plan_name: str = "plan.md"


def _not_a_repo(tmp: Path) -> list[str]:
    (tmp / "plain").mkdir()
    return ["--repo", str(tmp / "plain")]


def _empty_repo(tmp: Path) -> list[str]:
    subprocess.run(["git", "init", "-q", str(tmp / "empty")], check=True)
    return ["--repo", str(tmp / "empty")]


def _user_repo(tmp: Path) -> list[str]:
    return ["--repo", str(tmp / "user")]


PLANS = [
    Case(
        "unknown execution mode",
        "## Batch 1: b\n**Execution Mode:** kubernetes\n### Task 1.1: t\n",
        expect=("unknown execution mode 'kubernetes'", "local", "container", "dagger"),
        line=2,
    ),
    Case("empty file", "", expect=("no batches found",), line=1),
    Case("prose only", "# Title\n\nJust words.\n", expect=("no batches found",), line=1),
    Case(
        "table plan",
        "| Batch | Task |\n|---|---|\n| 1 | x |\n",
        expect=("no batches found",),
        line=1,
    ),
    Case(
        "headers only in a fence",
        "```\n## Batch 1: a\n### Task 1.1: b\n```\n",
        expect=("no batches",),
        line=1,
    ),
    Case(
        "unclosed fence swallows all",
        "```\n## Batch 1: a\n### Task 1.1: b\n",
        expect=("no batches",),
        line=1,
    ),
    Case("batch without tasks", "## Batch 1: a\nprose\n", expect=("batch 1 has no tasks",), line=1),
    Case(
        "task outside any batch", "### Task 0.1: x\n" + GOOD, expect=("outside any batch",), line=1
    ),
    Case(
        "duplicate batch id",
        GOOD + "## Batch 1: again\n### Task 9.1: t\n",
        expect=("duplicate batch id",),
        line=8,
    ),
    Case(
        "duplicate task id", GOOD + "### Task 1.1: again\n", expect=("duplicate task id",), line=8
    ),
    Case(
        "unknown batch dependency",
        GOOD.replace("None", "Batch 7"),
        expect=("unknown batch '7'",),
        line=2,
    ),
    Case(
        "unknown task dependency",
        GOOD + "**Depends on:** Task 5.5\n",
        expect=("unknown task '5.5'",),
        line=8,
    ),
    Case(
        "unreadable task dependency",
        GOOD + "**Depends on:** the other one\n",
        expect=("cannot read task dependency",),
        line=8,
    ),
    Case(
        "unreadable batch dependency",
        GOOD.replace("None", "the first, obviously!"),
        expect=("cannot read batch dependency",),
        line=2,
    ),
    Case(
        "self-dependent batch",
        GOOD.replace("None", "Batch 1"),
        expect=("depends on itself",),
        line=2,
    ),
    Case(
        "batch cycle",
        "## Batch 1: a\n**Dependencies:** Batch 2\n### Task 1.1: t\n## Batch 2: b\n**Dependencies:** Batch 1\n### Task 2.1: u\n",
        expect=("dependency cycle",),
        line=2,
    ),
    Case(
        "task cycle",
        GOOD + "**Depends on:** 1.2\n### Task 1.2: u\n**Depends on:** 1.1\n",
        expect=("dependency cycle",),
        line=8,
    ),
    Case(
        "cycle through a batch's implicit order",
        "## Batch 1: a\n### Task 1.1: t\n**Depends on:** 2.1\n## Batch 2: b\n### Task 2.1: u\n",
        expect=("dependency cycle", "previous batch"),
        line=3,
    ),
    Case("not UTF-8", GOOD.encode() + b"caf\xe9\n", expect=("not valid UTF-8",), line=8),
    Case(
        "absolute path", GOOD + "**Files:**\n- Create: /etc/passwd\n", expect=("absolute",), line=9
    ),
    Case("escaping path", GOOD + "**Files:**\n- Modify: ../../x.py\n", expect=("escapes",), line=9),
    Case("home path", GOOD + "**Files:**\n- Create: ~/x.py\n", expect=("absolute",), line=9),
    Case("windows path", GOOD + "**Files:**\n- Create: C:\\x.py\n", expect=("absolute",), line=9),
    Case(
        "selection of nothing",
        TWO,
        args=("--start-batch", "9"),
        expect=("selects no batch",),
        line=1,
    ),
    Case(
        "selection of an unknown batch",
        "## Batch A: a\n### Task 1.1: t\n",
        args=("--start-batch", "Z"),
        expect=("no batch 'Z'",),
        line=1,
    ),
    Case(
        "selection without its dependency",
        TWO,
        args=("--start-batch", "2"),
        expect=("--start-batch 1",),
        line=8,
    ),
    Case("missing plan", None, expect=("cannot read the plan",), line=1),
    # Refused here with its line, not by every activity of the run, retried for minutes.
    Case(
        "task id too long for a folder and a branch",
        f"## Batch 1: b\n### Task 1.{'1' * 200}: t\nCreate `a.txt`.\n",
        expect=("202 characters long", "at most 100"),
        line=2,
    ),
    Case(
        "task id git refuses in a branch",
        "## Batch 1: b\n### Task 1.lock: t\nCreate `a.txt`.\n",
        expect=("ends in '.lock'",),
        line=2,
    ),
    # Refused before it is parsed: a plan of hundreds of MB took a minute and 2 GB to read.
    Case(
        "plan file over the size limit",
        GOOD + "x" * (5 * 1024 * 1024),
        expect=("is 5 MiB", "at most 4 MiB", "split it"),
        line=1,
    ),
    Case(
        "plan path with spaces and unicode",
        "nothing",
        expect=("no batches found",),
        line=1,
        plan_name="my plän v2.md",
    ),
]

# 3,000 tasks of 600 characters each: over the run input's limit of 1.8 MB.
HUGE = "## Batch 1: b\n**Dependencies:** None\n" + "".join(
    f"### Task 1.{i}: t\n{'x' * 600}\n" for i in range(1, 3001)
)

RUNS = [
    Case(
        "plan too large for one run",
        HUGE,
        args=("--agent", "literal"),
        expect=("too large for one run", "3000 tasks", "--start-batch"),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "agent env with a bad name",
        GOOD,
        args=("--agent", "literal", "--agent-env", "OK,1BAD"),
        expect=("--agent-env", "'1BAD'"),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "fewer checkouts than agents",
        GOOD,
        args=("--agent", "literal", "--max-concurrent", "4", "--max-checkouts", "2"),
        expect=("--max-checkouts 2 is fewer than --max-concurrent 4",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "repo that does not exist",
        GOOD,
        args=("--agent", "literal", "--repo", "/nonexistent/repo"),
        expect=("no such directory",),
        dry=False,
    ),
    Case(
        "repo that is not a repo",
        GOOD,
        args=("--agent", "literal"),
        expect=("not a git repository",),
        dry=False,
        setup=_not_a_repo,
    ),
    Case(
        "empty repo",
        GOOD,
        args=("--agent", "literal"),
        expect=("no commits yet",),
        dry=False,
        setup=_empty_repo,
    ),
    Case(
        "unknown base",
        GOOD,
        args=("--agent", "literal", "--base", "nope"),
        expect=("--base nope",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "target checked out",
        GOOD,
        args=("--agent", "literal", "--target-branch", "main"),
        expect=("checked out",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "invalid target name",
        GOOD,
        args=("--agent", "literal", "--target-branch", "a..b"),
        expect=("not a valid branch name",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "unknown agent backend",
        GOOD,
        args=("--agent", "gpt-magic"),
        expect=("gpt-magic",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "missing agent binary",
        GOOD,
        args=("--agent", "command", "--agent-command", "no-such-agent {prompt_file}"),
        expect=("not found",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        # A typo would reach the agent as literal text: every task a no_op, the run green.
        "unknown placeholder in the agent command",
        GOOD,
        args=("--agent", "command", "--agent-command", "sh -c 'x \"$1\"' sh {task}"),
        expect=("unknown placeholder {task}", "{task_id}"),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "unknown placeholder in the reviewer command",
        GOOD,
        args=(
            *("--agent", "command", "--agent-command", "true {prompt_file}"),
            *("--reviewer", "command", "--reviewer-command", "review {diff}"),
        ),
        expect=("--reviewer-command: unknown placeholder {diff}",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "command agent without a command",
        GOOD,
        args=("--agent", "command"),
        expect=("--agent-command",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "missing claude binary",
        GOOD,
        args=("--agent", "claude", "--claude-bin", "/nonexistent/claude"),
        expect=("not found",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "unknown reviewer",
        GOOD,
        args=("--agent", "literal", "--reviewer", "nobody"),
        expect=("--reviewer", "nobody"),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "unreachable address",
        GOOD,
        args=("--agent", "literal", "--address", "127.0.0.1:1"),
        expect=("cannot reach Temporal",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "zero concurrency",
        GOOD,
        args=("--max-concurrent", "0"),
        expect=("max_concurrent",),
        dry=False,
    ),
    Case(
        "negative fix rounds",
        GOOD,
        args=("--max-fix-rounds", "-1"),
        expect=("max_fix_rounds",),
        dry=False,
    ),
    Case(
        "detach with dry run",
        GOOD,
        args=("--detach",),
        expect=("--detach has no meaning with --dry-run",),
    ),
    Case(
        "retry-failed with dry run",
        GOOD,
        args=("--retry-failed",),
        expect=("--retry-failed has no meaning",),
    ),
    Case(
        "agent command for another agent",
        GOOD,
        args=("--agent", "literal", "--agent-command", "x"),
        expect=("--agent-command is for --agent command",),
        dry=False,
    ),
    Case(
        "container image without a container",
        GOOD,
        args=("--agent", "literal", "--container-image", "localhost/x:1"),
        expect=("--container-image is for batches that run in a container",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "container batch without an image",
        GOOD,
        args=("--agent", "literal", "--sandbox", "container"),
        expect=("no image is named", "--container-image", "container.toml"),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "an image the runtime does not have",
        GOOD,
        args=("--agent", "literal", "--sandbox", "container", "--container-image", "nope:0"),
        expect=("--sandbox container:",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "a runtime that is missing or has no engine",
        GOOD,
        args=(
            "--agent",
            "literal",
            "--sandbox",
            "container",
            "--container-image",
            "x:1",
            "--container-runtime",
            "docker",
        ),
        expect=("--sandbox container:", "docker"),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "no isolation where no batch runs in a worktree",
        GOOD,
        args=("--agent", "literal", "--sandbox", "container", "--no-isolation"),
        expect=("--no-isolation is for the worktree sandbox",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "a dagger batch here",
        GOOD.replace(
            "**Dependencies:** None", "**Dependencies:** None\n**Execution Mode:** dagger"
        ),
        args=("--agent", "literal", "--container-image", "localhost/x:1"),
        expect=("--sandbox dagger:",),
        dry=False,
        setup=_user_repo,
    ),
    Case(
        "reviewer command for another reviewer",
        GOOD,
        args=("--reviewer", "claude", "--reviewer-command", "x"),
        expect=("--reviewer-command is for --reviewer command",),
        dry=False,
    ),
]


@pytest.mark.parametrize("case", PLANS + RUNS, ids=[c.name for c in PLANS + RUNS])
def test_bad_input(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_user_repo(tmp_path)
    make_dirty(repo)
    before = snapshot(repo)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    plan = tmp_path / case.plan_name
    if isinstance(case.plan, str):
        plan.write_text(case.plan)
    elif isinstance(case.plan, bytes):
        plan.write_bytes(case.plan)
    workspace = tmp_path / "ws"
    argv = ["--plan", case.plan_name, "--workspace", str(workspace), *case.args]
    argv += ["--dry-run"] if case.dry else []
    argv += case.setup(tmp_path) if case.setup else []
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and out == ""
    # The plan's warnings may come first; the error follows them.
    first = next(line for line in err.splitlines() if ": warning: " not in line)
    if case.line is not None:
        assert first.startswith(f"{case.plan_name}:{case.line}: "), err
    else:
        assert first.startswith("error: "), err
    for word in case.expect:
        assert word in err, (word, err)
    assert not workspace.exists(), "nothing is written for a refused run"
    assert snapshot(repo) == before


def test_the_corpus_is_large_enough() -> None:
    assert len(PLANS) + len(RUNS) >= 40
