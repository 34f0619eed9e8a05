"""The code host's steps as the worker runs them, against the stand-in for GitHub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.forge import ForgeActivities
from autonomous_pipeline.backends.workspace.clones import Clones
from autonomous_pipeline.backends.workspace.layout import Layout
from autonomous_pipeline.models.forge import RATE_LIMITED, ForgeConfig, MergePrIn, OpenPrIn
from tests.fixtures.github.repos import remote_with_task_branch
from tests.fixtures.github.server import FakeGitHub
from tests.gitutil import isolate_git

TOKEN = "ghp_" + "Hk7Vn2Qa" * 5
REPO = "acme/widgets"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    isolate_git(monkeypatch, tmp_path)
    bare = remote_with_task_branch(tmp_path)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    with FakeGitHub(TOKEN, {REPO: bare}) as gh:
        yield gh


def acts(tmp_path: Path) -> ForgeActivities:
    return ForgeActivities(Clones(Layout(tmp_path / "ws")))


async def test_a_merge_branch_protection_refuses_goes_to_the_merge_queue(
    hub: FakeGitHub, tmp_path: Path
) -> None:
    forge = ForgeConfig(api_url=hub.url, repository=REPO)
    env, a = ActivityEnvironment(), acts(tmp_path)
    pr = await env.run(a.open_pr, OpenPrIn(forge=forge, branch="task-1", target_branch="main",
                                           title="Task 1.1: b", body="b"))  # fmt: skip
    hub.site.protection = "queue"
    merge = MergePrIn(forge=forge, number=pr.number, target_branch="main",
                      head_sha=pr.head_sha, title="Task 1.1: b (#1)", message="Pipeline-Task: r/1.1")  # fmt: skip
    out = await env.run(a.merge_pr, merge)
    assert (out.merged, out.handed_to, out.conflict) == (False, "merge queue", False)
    assert hub.site.handed[1][0] == "merge queue"
    hub.site.finish_handed(REPO, 1)
    again = await env.run(a.merge_pr, merge)  # a retry after the host merged it
    assert again.merged and again.commit == hub.site.pull(REPO, 1).merge_commit


async def test_the_rate_limit_fails_the_step_for_the_task_to_wait(
    hub: FakeGitHub, tmp_path: Path
) -> None:
    forge = ForgeConfig(api_url=hub.url, repository=REPO)
    hub.site.limited, hub.site.limit_reset_s = 1, 40
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(
            acts(tmp_path).open_pr,
            OpenPrIn(forge=forge, branch="task-1", target_branch="main", title="t", body="b"),
        )
    assert err.value.type == RATE_LIMITED and err.value.non_retryable
    assert 35 <= err.value.details[0] <= 45
    assert TOKEN not in str(err.value)


async def test_no_token_on_the_worker_is_a_clear_final_failure(
    hub: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setattr("autonomous_pipeline.backends.forges.shutil.which", lambda _: None)
    forge = ForgeConfig(api_url=hub.url, repository=REPO)
    with pytest.raises(ApplicationError, match="set GITHUB_TOKEN") as err:
        await ActivityEnvironment().run(
            acts(tmp_path).open_pr,
            OpenPrIn(forge=forge, branch="task-1", target_branch="main", title="t", body="b"),
        )
    assert err.value.non_retryable
