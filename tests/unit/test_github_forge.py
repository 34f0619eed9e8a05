"""The GitHub forge against a local stand-in for GitHub's REST API over a real bare repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from autonomous_pipeline.backends.forges.base import ForgeError, RateLimited, command_of
from autonomous_pipeline.backends.forges.github import GitHubForge
from autonomous_pipeline.models.forge import CheckState, EventKind, ForgeConfig, MergeMethod
from autonomous_pipeline.models.review import Finding, Verdict
from tests.fixtures.github.repos import remote_with_task_branch
from tests.fixtures.github.server import FakeGitHub
from tests.gitutil import isolate_git, sh

TOKEN = "ghp_" + "x1y2z3" * 6
REPO = "acme/widgets"


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bare repository with main and a task branch that adds one file."""
    isolate_git(monkeypatch, tmp_path)
    return remote_with_task_branch(tmp_path)


@pytest.fixture
def hub(bare: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(TOKEN, {REPO: bare}, prefix="/api/v3") as gh:
        yield gh


def forge(hub: FakeGitHub, token: str = TOKEN) -> GitHubForge:
    return GitHubForge(ForgeConfig(api_url=hub.url, repository=REPO), token)


async def test_a_pull_request_is_opened_once_per_branch(hub: FakeGitHub) -> None:
    f = forge(hub)
    first = await f.open_pr("task-1", "main", "Task 1.1: a feature", "body")
    again = await f.open_pr("task-1", "main", "Task 1.1: a feature", "body")
    assert first.number == again.number == 1
    assert len(hub.site.pulls[REPO]) == 1
    assert first.open and not first.merged and first.head_branch == "task-1"
    assert len(first.head_sha) == 40
    # Through the Enterprise prefix, with the token in the header only.
    assert all(path.startswith("/api/v3/") for _, path, _ in hub.site.requests)
    assert all(TOKEN not in path for _, path, _ in hub.site.requests)


async def test_a_closed_pull_request_is_found_not_replaced(hub: FakeGitHub) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    hub.site.close(REPO, pr.number, user="bob")
    found = await f.open_pr("task-1", "main", "t", "b")
    assert found.number == pr.number and not found.open and found.closed_by == "bob"
    assert len(hub.site.pulls[REPO]) == 1


async def test_the_verdict_is_posted_once_and_falls_back_to_a_comment_on_ones_own_pr(
    hub: FakeGitHub,
) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    verdict = Verdict(
        approved=False,
        summary="one problem",
        findings=[
            Finding(file="feature.py", line=2, message="y is unused"),
            Finding(file="elsewhere.py", line=1, message="not in the diff"),
        ],
    )
    assert await f.post_review(pr.number, pr.head_sha, verdict) is True
    assert await f.post_review(pr.number, pr.head_sha, verdict) is False
    (review,) = hub.site.reviews[(REPO, 1)]
    # GitHub refuses a change request on one's own PR, and a comment on a file the PR does not
    # change: what is left is a comment review carrying every finding in its body.
    assert review["state"] == "COMMENTED"
    assert "y is unused" in review["body"] and "not in the diff" in review["body"]
    # The pipeline's own review is never read back as a person's.
    view = await f.read(pr.number, "main")
    assert view.events == []


async def test_inline_findings_land_on_their_lines(hub: FakeGitHub) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    verdict = Verdict(approved=True, findings=[Finding(file="feature.py", line=2, message="nit")])
    await f.post_review(pr.number, pr.head_sha, verdict)
    (review,) = hub.site.reviews[(REPO, 1)]
    assert hub.site.review_comments[review["id"]] == [
        {"id": review["id"] + 1, "path": "feature.py", "line": 2, "body": "**major**: nit"}
    ]


async def test_people_with_write_access_steer_strangers_do_not(hub: FakeGitHub) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    site = hub.site
    site.comment(REPO, 1, "/approve", user="mallory", association="NONE")
    site.comment(REPO, 1, "/skip", user="drive-by", association="CONTRIBUTOR")
    site.comment(REPO, 1, "looks fine to me")
    site.comment(REPO, 1, "/fix rename y to height\nand test it")
    site.comment(REPO, 1, "/approve")
    site.review(REPO, 1, "CHANGES_REQUESTED", "see inline", user="carol", association="MEMBER",
                comments=[{"path": "feature.py", "line": 1, "body": "x needs a docstring"}])  # fmt: skip
    site.review(REPO, 1, "APPROVED", user="mallory", association="NONE")
    view = await f.read(pr.number, "main")
    kinds = [(e.kind, e.author) for e in view.events]
    assert kinds == [
        (EventKind.FIX, "alice"),
        (EventKind.APPROVE, "alice"),
        (EventKind.FIX, "carol"),
    ]
    fix, _, review = view.events
    assert fix.body == "rename y to height\nand test it"
    assert review.findings == [Finding(file="feature.py", line=1, message="x needs a docstring")]
    assert len({e.id for e in view.events}) == 3


def test_only_a_comment_that_starts_with_a_command_is_one() -> None:
    assert command_of("/fix the import") == (EventKind.FIX, "the import")
    assert command_of("  /SKIP") == (EventKind.SKIP, "")
    assert command_of("please /approve this") is None
    assert command_of("/fixture files") is None
    assert command_of("/approve <!-- autonomous-pipeline review abc -->") is None


async def test_checks_and_required_checks_are_read(hub: FakeGitHub) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    hub.site.check(pr.head_sha, "tests", "failure", url="https://ci.example/run/7")
    hub.site.check(pr.head_sha, "lint", None)
    view = await f.read(pr.number, "main")
    assert [(c.name, c.state) for c in view.checks] == [
        ("tests", CheckState.FAILED),
        ("lint", CheckState.PENDING),
    ]
    assert view.checks[0].url == "https://ci.example/run/7"
    assert view.required == []
    hub.site.required["main"] = ["tests"]
    assert (await f.read(pr.number, "main")).required == ["tests"]
    # A ruleset's required checks are read too (with read access; protection needs admin).
    hub.site.ruled["main"] = ["lint", "tests"]
    assert (await f.read(pr.number, "main")).required == ["lint", "tests"]


@pytest.mark.parametrize("method", list(MergeMethod))
async def test_a_merge_really_merges_in_the_repository_once(
    hub: FakeGitHub, bare: Path, method: MergeMethod
) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    message = "What it does\n\nPipeline-Task: run/1.1"
    merged = await f.merge(pr.number, pr.head_sha, method, "Task 1.1: a feature (#1)", message)
    assert merged.merged and merged.merge_commit == sh(bare, "rev-parse", "main")
    assert sh(bare, "show", "main:feature.py") == "x = 1\ny = 2"
    assert "Pipeline-Task: run/1.1" in sh(bare, "log", "-1", "--format=%B", "main")
    parents = sh(bare, "log", "-1", "--format=%P", "main").split()
    assert len(parents) == (2 if method is MergeMethod.MERGE else 1)
    # Again (a retried step): the merge it made, not a second one.
    again = await f.merge(pr.number, pr.head_sha, method, "x", "y")
    assert again.merge_commit == merged.merge_commit
    assert sh(bare, "rev-parse", "main") == merged.merge_commit


async def test_a_head_that_moved_is_not_merged(hub: FakeGitHub, bare: Path) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    with pytest.raises(ForgeError) as err:
        await f.merge(pr.number, "1" * 40, MergeMethod.SQUASH, "t", "m")
    assert err.value.status == 409
    assert not (await f.read(pr.number, "main")).pr.merged


async def test_the_rate_limit_is_raised_with_its_reset_not_slept(hub: FakeGitHub) -> None:
    hub.site.limited, hub.site.limit_reset_s = 1, 30
    with pytest.raises(RateLimited) as err:
        await forge(hub).open_pr("task-1", "main", "t", "b")
    assert 25 <= err.value.retry_after_s <= 35
    assert "rate limit" in str(err.value)


async def test_permission_and_credentials_are_checked(hub: FakeGitHub) -> None:
    assert await forge(hub).can_publish() is None
    hub.site.push = False
    assert "may not push" in (await forge(hub).can_publish() or "")
    why = await forge(hub, token="ghp_wrong").can_publish()
    assert why is not None and "401" in why and "Bad credentials" in why


@pytest.mark.parametrize(
    ("protection", "handed_to"), [("auto", "auto-merge"), ("queue", "merge queue")]
)
async def test_protection_hands_the_pr_to_the_host_which_merges_it(
    hub: FakeGitHub, bare: Path, protection: str, handed_to: str
) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    hub.site.protection = protection
    with pytest.raises(ForgeError) as err:
        await f.merge(
            pr.number, pr.head_sha, MergeMethod.SQUASH, "Task 1.1 (#1)", "Pipeline-Task: run/1.1"
        )
    assert err.value.status == 405
    assert (
        await f.hand_over(pr, MergeMethod.SQUASH, "Task 1.1 (#1)", "Pipeline-Task: run/1.1")
        == handed_to
    )
    assert not (await f.read(pr.number, "main")).pr.merged
    merged = hub.site.finish_handed(REPO, pr.number)
    view = await f.read(pr.number, "main")
    assert view.pr.merged and view.pr.merge_commit == merged == sh(bare, "rev-parse", "main")
    if protection == "auto":  # squash, with the message it was given
        assert "Pipeline-Task: run/1.1" in sh(bare, "log", "-1", "--format=%B", "main")


async def test_a_moved_head_is_not_handed_over(hub: FakeGitHub) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    stale = pr.model_copy(update={"head_sha": "2" * 40})
    with pytest.raises(ForgeError, match="Head sha didn't match"):
        await f.hand_over(stale, MergeMethod.SQUASH, "t", "m")
    assert hub.site.handed == {}


async def test_a_command_past_the_first_page_of_comments_is_read(hub: FakeGitHub) -> None:
    # GitHub pages comments oldest first: a stranger's hundred comments must not bury a
    # collaborator's command.
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    for i in range(150):
        hub.site.comment(REPO, pr.number, f"spam {i}", user="mallory", association="NONE")
    hub.site.comment(REPO, pr.number, "/skip")
    view = await f.read(pr.number, "main")
    assert [(e.kind, e.author) for e in view.events] == [(EventKind.SKIP, "alice")]
    pages = [p for m, p, _ in hub.site.requests if "/issues/1/comments" in p]
    assert len(pages) == 2


async def test_a_collaborator_with_read_access_alone_does_not_steer(hub: FakeGitHub) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    hub.site.permissions["triager"] = "read"
    hub.site.comment(REPO, pr.number, "/approve", user="triager", association="COLLABORATOR")
    hub.site.review(REPO, pr.number, "APPROVED", user="triager", association="COLLABORATOR")
    hub.site.comment(REPO, pr.number, "/approve", user="maintainer", association="MEMBER")
    view = await f.read(pr.number, "main")
    assert [e.author for e in view.events] == ["maintainer"]


def test_words_after_approve_or_skip_make_it_no_command() -> None:
    assert command_of("/approve not yet") is None
    assert command_of("/skip?") is None
    assert command_of("/approve\n\nlooks good") == (EventKind.APPROVE, "looks good")
    assert command_of("/fix: the import") is None


async def test_a_review_names_the_head_it_approved(hub: FakeGitHub) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    hub.site.review(REPO, pr.number, "APPROVED", user="carol", association="MEMBER")
    (event,) = (await f.read(pr.number, "main")).events
    assert event.commit == pr.head_sha and event.at


async def test_a_pr_closed_before_this_try_began_is_replaced(hub: FakeGitHub) -> None:
    f = forge(hub)
    first = await f.open_pr("task-1", "main", "t", "b")
    hub.site.close(REPO, first.number)
    later = "2999-01-01T00:00:00Z"  # a retry of the task, begun after the close
    again = await f.open_pr("task-1", "main", "t", "b", not_before=later)
    assert again.number != first.number and again.open
    # This try's own PR, closed by a person, is its answer.
    assert (await f.open_pr("task-1", "main", "t", "b", not_before="")).number == again.number


async def test_a_pr_given_up_is_closed_saying_why_once(hub: FakeGitHub) -> None:
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    assert await f.close(pr.number, "The pipeline ended task 1.1 failed: out of fix rounds") is True
    assert await f.close(pr.number, "again") is False  # a retried step: closed already
    said = [c["body"] for c in hub.site.comments[(REPO, pr.number)]]
    assert len(said) == 1 and said[0].startswith("The pipeline ended task 1.1 failed")
    assert (await f.read(pr.number, "main")).pr.open is False
    assert (await f.read(pr.number, "main")).events == []  # its own words are not a command


async def test_a_read_asks_only_what_the_task_waits_for(hub: FakeGitHub) -> None:
    # The rate limit is 5,000 calls an hour for all of a run's waiting PRs.
    f = forge(hub)
    pr = await f.open_pr("task-1", "main", "t", "b")
    hub.site.comment(REPO, pr.number, "/approve", user="maintainer", association="MEMBER")
    hub.site.requests.clear()
    await f.read(pr.number, "main", checks=False)
    first = [p.split("?")[0] for _, p, _ in hub.site.requests]
    assert not [p for p in first if "check-runs" in p or "/status" in p or "/rules/" in p]
    assert sum("/permission" in p for p in first) == 1
    hub.site.requests.clear()
    await f.read(pr.number, "main", checks=False)
    again = [p.split("?")[0] for _, p, _ in hub.site.requests]
    assert len(again) == 3 and not [p for p in again if "/permission" in p]  # kept a while
