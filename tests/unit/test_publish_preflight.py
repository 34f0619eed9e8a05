"""--publish pr's preflight: the remote, the repository on the host, the token, its permission."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from autonomous_pipeline.cli.publish import forge_config, repository_of
from autonomous_pipeline.config import load_settings
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.forge import MergeMethod
from tests.fixtures.github.server import FakeGitHub
from tests.gitutil import isolate_git, sh

TOKEN = "ghp_" + "p4Q8r2Lx" * 5


@pytest.mark.parametrize(
    ("url", "repository"),
    [
        ("git@github.com:acme/widgets.git", "acme/widgets"),
        ("https://github.com/acme/widgets", "acme/widgets"),
        ("https://ghe.example.com/acme/widgets.git/", "acme/widgets"),
        ("ssh://git@github.com/acme/widgets.git", "acme/widgets"),
        ("/srv/git/widgets.git", "git/widgets"),
        ("widgets", None),
    ],
)
def test_the_repository_on_the_host_comes_from_the_remotes_url(
    url: str, repository: str | None
) -> None:
    assert repository_of(url) == repository


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_git(monkeypatch, tmp_path)
    path = tmp_path / "repo"
    path.mkdir()
    sh(path, "init", "-q", "-b", "main")
    (path / "a.txt").write_text("a\n")
    sh(path, "add", ".")
    sh(path, "commit", "-q", "-m", "a")
    sh(tmp_path, "clone", "-q", "--bare", str(path), str(tmp_path / "remote.git"))
    sh(path, "remote", "add", "origin", str(tmp_path / "remote.git"))
    return path


@pytest.fixture
def hub(repo: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(TOKEN, {"acme/widgets": repo.parent / "remote.git"}) as gh:
        yield gh


def settings(hub: FakeGitHub, **given: object):
    values = {"forge_url": hub.url, "forge_repo": "acme/widgets"} | given
    return load_settings(**values)


async def test_a_run_publishes_from_the_remote_with_what_the_flags_say(
    repo: Path, hub: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    url, config = await forge_config(
        settings(hub, merge_method=MergeMethod.REBASE, require_checks=True, pr_poll=5), repo
    )
    assert url == str(repo.parent / "remote.git")
    assert (config.repository, config.api_url) == ("acme/widgets", hub.url)
    assert (config.merge_method, config.require_checks, config.poll_s) == (
        MergeMethod.REBASE, True, 5.0,
    )  # fmt: skip
    assert TOKEN not in config.model_dump_json()


async def test_what_cannot_publish_is_refused_before_anything_starts(
    repo: Path, hub: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No `gh` to ask for a token either.
    monkeypatch.setattr("autonomous_pipeline.backends.forges.shutil.which", lambda _: None)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(UsageError, match="no token for the code host: set GITHUB_TOKEN"):
        await forge_config(settings(hub), repo)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_not_the_right_one_at_all")
    with pytest.raises(UsageError, match=r"401.*Bad credentials") as err:
        await forge_config(settings(hub), repo)
    assert "ghp_not_the_right_one_at_all" not in str(err.value)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    hub.site.push = False
    with pytest.raises(UsageError, match="may not push to acme/widgets"):
        await forge_config(settings(hub), repo)
    with pytest.raises(UsageError, match="has no remote 'upstream'"):
        await forge_config(settings(hub, remote="upstream"), repo)
    sh(repo, "remote", "set-url", "origin", "widgets")
    with pytest.raises(UsageError, match="name it with --forge-repo"):
        await forge_config(settings(hub, forge_repo=None), repo)


async def test_a_remote_url_that_carries_a_token_is_refused(
    repo: Path, hub: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    sh(repo, "remote", "set-url", "origin", f"https://x-access-token:{TOKEN}@github.com/a/b.git")
    with pytest.raises(UsageError, match="carries a password or token") as err:
        await forge_config(settings(hub), repo)
    assert TOKEN not in str(err.value)
