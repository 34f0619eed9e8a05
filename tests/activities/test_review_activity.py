"""review_task: diff sizes, the verdict of a command or claude reviewer, a worktree left alone."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.activities.agent import AUTH_ERROR
from autonomous_pipeline.activities.review import (
    MODIFIED,
    REVIEWER_ERROR,
    ReviewActivities,
    diff_counts,
)
from autonomous_pipeline.backends.registry import make_reviewer_agent
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.activity_io import ReviewIn, ReviewOut
from autonomous_pipeline.models.review import Severity
from autonomous_pipeline.models.run import ClaudeOptions, ReviewerConfig
from tests.activities.conftest import RUN, Workspace, activity_env, task
from tests.gitutil import sh

VERDICT = '{"approved": false, "summary": "almost", "findings": [{"severity": "major", "file": "a.txt", "line": 1, "message": "keep line one"}]}'


async def task_commit(ws: Workspace) -> tuple[str, str, Path]:
    """A task commit: a.txt loses two lines and gains one, README.md goes, a binary file comes."""
    base, wt = await ws.prepare()
    (wt / "a.txt").write_text("one\nTHREE\n")  # "one\ntwo\nthree\n" before
    (wt / "README.md").unlink()  # one line
    (wt / "logo.bin").write_bytes(bytes(range(256)))
    sh(wt, "add", "--all")
    sh(wt, "commit", "-q", "-m", "task")
    return base, sh(wt, "rev-parse", "HEAD"), wt


def review_in(base: str, commit: str, reviewer: ReviewerConfig) -> ReviewIn:
    return ReviewIn(
        run_key=RUN,
        task=task(),
        base_commit=base,
        commit=commit,
        reviewer=reviewer,
        checks=["pytest -q"],
    )


async def review(ws: Workspace, inp: ReviewIn) -> ReviewOut:
    acts = ReviewActivities(ws.sandboxes, make_reviewer_agent)
    return await activity_env().run(acts.review_task, inp)


def script_reviewer(tmp: Path, body: str) -> ReviewerConfig:
    script = tmp / "reviewer.py"
    script.write_text(textwrap.dedent(body))
    return ReviewerConfig(
        backend="command", command=[sys.executable, str(script), "{prompt_file}"], timeout_s=30
    )


def test_numstat_counts() -> None:
    numstat = "3\t2\ta.txt\n0\t1\tREADME.md\n-\t-\tlogo.bin\n5\t0\tsrc/{old => new}.py\n"
    assert diff_counts(numstat) == (4, 3)
    assert diff_counts("") == (0, 0)


async def test_no_reviewer_approves_and_still_measures_the_change(ws: Workspace) -> None:
    base, commit, _ = await task_commit(ws)
    out = await review(ws, review_in(base, commit, ReviewerConfig(backend="none")))
    assert out.verdict.approved and out.verdict.summary == "no reviewer"
    assert (out.files_changed, out.lines_deleted) == (3, 3)
    assert out.cost_usd == 0 and out.transcript is None


async def test_a_command_reviewer_gives_its_verdict(ws: Workspace, tmp_path: Path) -> None:
    base, commit, wt = await task_commit(ws)
    reviewer = script_reviewer(
        tmp_path,
        f"""
        import sys
        prompt = open(sys.argv[1]).read()
        assert "-two" in prompt and "README.md" in prompt and "`pytest -q`" in prompt, prompt
        print("thinking...")
        print('{{"approved": true, "note": "an earlier object"}}')
        print({VERDICT!r})
        print("done")
        """,
    )
    out = await review(ws, review_in(base, commit, reviewer))
    assert (out.files_changed, out.lines_deleted) == (3, 3)
    verdict = out.verdict
    assert not verdict.approved and verdict.summary == "almost"
    (finding,) = verdict.findings
    assert (finding.severity, finding.file, finding.line) == (Severity.MAJOR, "a.txt", 1)
    assert out.transcript is not None and out.transcript.endswith("1.1.review-1.log")
    assert "thinking..." in Path(out.transcript).read_text()
    assert sh(wt, "status", "--porcelain") == "" and sh(wt, "rev-parse", "HEAD") == commit
    again = await review(ws, review_in(base, commit, reviewer))
    assert again.transcript is not None and again.transcript.endswith("1.1.review-2.log")


async def test_what_a_reviewer_changes_is_discarded(ws: Workspace, tmp_path: Path) -> None:
    base, commit, wt = await task_commit(ws)
    reviewer = script_reviewer(
        tmp_path,
        """
        from pathlib import Path
        Path("a.txt").write_text("rewritten by the reviewer\\n")
        Path("notes.md").write_text("my notes\\n")
        Path("build").mkdir()
        Path("build", "out.o").write_text("x")
        print('{"approved": true, "summary": "fine"}')
        """,
    )
    (wt / "cache.tmp").write_text("left by verification\n")  # there before: not the reviewer's
    out = await review(ws, review_in(base, commit, reviewer))
    assert out.verdict.approved and out.verdict.summary == "fine"
    assert [(f.severity, f.message) for f in out.verdict.findings] == [(Severity.NIT, MODIFIED)]
    assert out.verdict.blocking == []
    assert sh(wt, "status", "--porcelain", "--untracked-files=all") == ""
    assert (wt / "a.txt").read_text() == "one\nTHREE\n"
    assert sh(wt, "rev-parse", "HEAD") == commit
    assert sh(wt, "symbolic-ref", "HEAD") == f"refs/heads/{TaskRef(RUN, '1.1').branch}"


async def test_a_reviewer_that_leaves_things_alone_gets_no_finding(
    ws: Workspace, tmp_path: Path
) -> None:
    base, commit, wt = await task_commit(ws)
    (wt / "cache.tmp").write_text("left by verification\n")
    reviewer = script_reviewer(tmp_path, "print('{\"approved\": true}')\n")
    out = await review(ws, review_in(base, commit, reviewer))
    assert out.verdict.approved and out.verdict.findings == []
    assert (wt / "cache.tmp").exists()


async def test_a_reviewer_that_fails_to_run_is_retried(ws: Workspace, tmp_path: Path) -> None:
    base, commit, _ = await task_commit(ws)
    reviewer = script_reviewer(tmp_path, "import sys\nprint('crashed')\nsys.exit(3)\n")
    with pytest.raises(ApplicationError) as caught:
        await review(ws, review_in(base, commit, reviewer))
    assert caught.value.type == REVIEWER_ERROR and not caught.value.non_retryable
    assert "exited with code 3" in caught.value.message


async def test_an_unreadable_answer_is_a_rejection(ws: Workspace, tmp_path: Path) -> None:
    base, commit, _ = await task_commit(ws)
    reviewer = script_reviewer(tmp_path, "print('looks good to me')\n")
    out = await review(ws, review_in(base, commit, reviewer))
    assert not out.verdict.approved and out.verdict.summary == "unreadable review"


async def test_a_claude_reviewer_is_read_only_and_fresh(ws: Workspace) -> None:
    base, commit, _ = await task_commit(ws)
    ws.stub("review_verdict")
    out = await review(ws, review_in(base, commit, ReviewerConfig(backend="claude")))
    assert not out.verdict.approved
    assert out.verdict.summary == "The greeting is right but main() is never called."
    assert [f.severity for f in out.verdict.findings] == [Severity.MAJOR, Severity.NIT]
    assert (out.cost_usd, out.tokens_in, out.tokens_out) == (0.0231402, 18 + 4390 + 32170, 214)
    (argv,) = ws.stub_calls()
    assert argv[argv.index("--permission-mode") + 1] == "plan"
    assert "--session-id" not in argv and "--resume" not in argv


async def test_a_claude_reviewer_with_bad_credentials_is_not_retried(ws: Workspace) -> None:
    base, commit, _ = await task_commit(ws)
    ws.stub("auth_not_logged_in")
    cfg = ReviewerConfig(backend="claude", claude=ClaudeOptions(permission_mode="plan"))
    with pytest.raises(ApplicationError) as caught:
        await review(ws, review_in(base, commit, cfg))
    assert caught.value.type == AUTH_ERROR and caught.value.non_retryable


async def test_a_rate_limited_reviewer_is_retried_at_its_reset(ws: Workspace) -> None:
    base, commit, _ = await task_commit(ws)
    ws.stub("usage_limit_legacy")  # resets at 1735689600: long past, so retried soon
    with pytest.raises(ApplicationError) as caught:
        await review(ws, review_in(base, commit, ReviewerConfig(backend="claude")))
    assert caught.value.type == REVIEWER_ERROR and not caught.value.non_retryable
    assert caught.value.next_retry_delay is not None
    assert caught.value.next_retry_delay.total_seconds() == 1
