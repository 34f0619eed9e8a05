"""The task sandbox on real repositories: clone, worktrees, commits, reset and removal."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.git import GitError, git, redact, repo_lock, rev_parse, with_trailer
from backends.sandboxes.git_worktree import GitWorktreeSandbox
from tests.gitutil import IDENTITY, commit_file, isolate_git, make_user_repo, push_outside, sh

TARGET = "pipeline/out"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = make_user_repo(tmp)
        self.main = sh(self.repo, "rev-parse", "main")
        self.sb = GitWorktreeSandbox(tmp / "ws")

    async def task(self, task_id: str = "1.1", run_key: str = "r1") -> tuple[str, Path]:
        await self.sb.prepare_run(str(self.repo), self.main, TARGET)
        return await self.sb.prepare(run_key, task_id, str(self.repo), TARGET)

    @property
    def clone(self) -> Path:
        return self.sb.clone_dir(str(self.repo))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    isolate_git(monkeypatch, tmp_path)
    return Env(tmp_path)


def agent_commit(wt: Path, path: str, text: str) -> str:
    """An agent that commits on its own (with its own identity)."""
    return commit_file(wt, path, text, f"agent: {path}")


def worktrees(clone: Path) -> list[str]:
    return [
        line[9:] for line in sh(clone, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]  # fmt: skip


async def test_prepare_run_creates_the_target_once(env: Env) -> None:
    tip, created = await env.sb.prepare_run(str(env.repo), env.main, TARGET)
    assert (tip, created) == (env.main, True)
    assert sh(env.repo, "rev-parse", f"refs/heads/{TARGET}") == env.main
    assert await env.sb.prepare_run(str(env.repo), env.main, TARGET) == (env.main, False)
    moved = push_outside(env.repo, TARGET, "b.txt", "b\n", env.tmp)
    assert await env.sb.prepare_run(str(env.repo), env.main, TARGET) == (moved, False)
    assert env.clone.is_dir() and env.clone.name.endswith(".git")
    assert sh(env.clone, "config", "--get", "core.bare") == "true"


async def test_two_workers_sharing_a_workspace(env: Env) -> None:
    # Two sandbox objects on one workspace, racing to create the target: one creates it.
    w1, w2 = GitWorktreeSandbox(env.tmp / "ws"), GitWorktreeSandbox(env.tmp / "ws")
    runs = await asyncio.gather(
        *(w.prepare_run(str(env.repo), env.main, TARGET) for w in (w1, w2, w1, w2))
    )
    assert {tip for tip, _ in runs} == {env.main}
    assert sum(created for _, created in runs) == 1
    preps = await asyncio.gather(
        *(w.prepare("r1", t, str(env.repo), TARGET) for w, t in ((w1, "1"), (w2, "2"), (w2, "1")))
    )
    assert preps[0] == preps[2] and preps[0][1] != preps[1][1]
    assert len(worktrees(env.clone)) == 3
    assert sh(env.clone, "fsck", "--strict", "--no-progress") == ""


async def test_the_clone_lock_excludes_other_processes(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        async with repo_lock(lock):
            waited = time.monotonic() - start
        assert waited >= 0.3  # it waited for the other process to let go
    finally:
        holder.wait(timeout=10)


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(0.5)
"""


async def test_a_base_reachable_only_from_a_tag(env: Env) -> None:
    sh(env.repo, "checkout", "-q", "--detach")
    tagged = commit_file(env.repo, "t.txt", "t\n", "tagged only")
    sh(env.repo, "tag", "v1")
    sh(env.repo, "checkout", "-q", "main")
    assert await env.sb.prepare_run(str(env.repo), tagged, "from-tag") == (tagged, True)


async def test_prepare_twice_reuses_the_worktree_and_its_base(env: Env) -> None:
    base, wt = await env.task()
    assert base == env.main
    assert wt == env.sb.worktree_dir("r1", "1.1") and wt.is_dir()
    (wt / "work.txt").write_text("in progress\n")
    push_outside(env.repo, TARGET, "b.txt", "b\n", env.tmp)  # the target moves meanwhile
    assert await env.sb.prepare("r1", "1.1", str(env.repo), TARGET) == (base, wt)
    assert (wt / "work.txt").read_text() == "in progress\n"
    branch = sh(wt, "symbolic-ref", "HEAD")
    assert branch == "refs/heads/pipeline/r1/task-1.1"
    assert sh(env.clone, "rev-parse", branch) == base
    # The user's repository has no task branch: those live in the pipeline's clone only.
    assert sh(env.repo, "branch", "--list", "pipeline/r1/*") == ""


async def test_parallel_prepares_get_distinct_worktrees(env: Env) -> None:
    await env.sb.prepare_run(str(env.repo), env.main, TARGET)
    ids = ["1.1", "1.2", "1.3", "2.1"]
    out = await asyncio.gather(*(env.sb.prepare("r1", t, str(env.repo), TARGET) for t in ids))
    paths = [wt for _, wt in out]
    assert len(set(paths)) == len(ids)
    assert {base for base, _ in out} == {env.main}
    listed = {Path(p).resolve() for p in worktrees(env.clone)}
    assert {p.resolve() for p in paths} <= listed
    assert sh(env.clone, "fsck", "--strict", "--no-progress", check=True) == ""


async def test_nothing_changed_is_a_no_op(env: Env) -> None:
    base, wt = await env.task()
    assert (await env.sb.commit_all("r1", "1.1", base, "Task 1.1")).commit is None
    # Changes that cancel out are no change either.
    agent_commit(wt, "a.txt", "changed\n")
    agent_commit(wt, "a.txt", "one\ntwo\nthree\n")
    assert (await env.sb.commit_all("r1", "1.1", base, "Task 1.1")).commit is None


async def test_commit_all_commits_everything_once(env: Env) -> None:
    base, wt = await env.task()
    (wt / "new dir").mkdir()
    (wt / "new dir" / "ünï.txt").write_text("new\n")
    (wt / "a.txt").write_text("edited\n")
    (wt / "src" / "lib.py").unlink()
    first = await env.sb.commit_all("r1", "1.1", base, "Task 1.1: do it")
    head, files = first.commit, first.changed
    assert head is not None and head != base
    assert sorted(files) == ["a.txt", "new dir/ünï.txt", "src/lib.py"]
    message = sh(env.clone, "show", "-s", "--format=%B", head)
    assert message.splitlines()[0] == "Task 1.1: do it"
    assert message.count("Pipeline-Task: r1/1.1") == 1
    assert sh(env.clone, "show", "-s", "--format=%an <%ae>", head) == (
        "Autonomous Pipeline <pipeline@autonomous-pipeline.invalid>"
    )
    assert sh(env.clone, "rev-parse", "refs/heads/pipeline/r1/task-1.1") == head
    assert await env.sb.commit_all("r1", "1.1", base, "Task 1.1: do it") == first


async def test_agent_commits_are_accepted_with_leftovers_on_top(env: Env) -> None:
    base, wt = await env.task()
    own = agent_commit(wt, "agent.txt", "by the agent\n")
    (wt / "leftover.txt").write_text("not committed\n")
    done = await env.sb.commit_all("r1", "1.1", base, "Task 1.1")
    head, files = done.commit, done.changed
    assert head is not None and sh(wt, "rev-parse", f"{head}^") == own
    assert sorted(files) == ["agent.txt", "leftover.txt"]
    assert sh(wt, "show", "-s", "--format=%an", own) == IDENTITY["GIT_AUTHOR_NAME"]


async def test_agent_commits_alone_get_a_marker_commit(env: Env) -> None:
    base, wt = await env.task()
    own = agent_commit(wt, "agent.txt", "by the agent\n")
    done = await env.sb.commit_all("r1", "1.1", base, "Task 1.1")
    head, files = done.commit, done.changed
    assert head is not None and head != own and sh(wt, "rev-parse", f"{head}^") == own
    assert "Pipeline-Task: r1/1.1" in sh(wt, "show", "-s", "--format=%B", head)
    assert files == ["agent.txt"]
    assert await env.sb.commit_all("r1", "1.1", base, "Task 1.1") == done


async def test_agent_on_another_branch_becomes_the_task_branch(env: Env) -> None:
    base, wt = await env.task()
    sh(wt, "checkout", "-q", "-b", "agent-branch")
    agent_commit(wt, "x.txt", "x\n")
    done = await env.sb.commit_all("r1", "1.1", base, "Task 1.1")
    head, files = done.commit, done.changed
    assert files == ["x.txt"]
    assert sh(wt, "symbolic-ref", "HEAD") == "refs/heads/pipeline/r1/task-1.1"
    assert sh(wt, "rev-parse", "HEAD") == head


async def test_history_rewrite_is_detected(env: Env) -> None:
    base, wt = await env.task()
    sh(wt, "reset", "-q", "--hard", "HEAD~1")
    agent_commit(wt, "x.txt", "x\n")
    done = await env.sb.commit_all("r1", "1.1", base, "Task 1.1")
    assert done.commit is None and "rewrote history" in (done.rejected or "")


async def test_reset_cleans_a_dirty_worktree(env: Env) -> None:
    base, wt = await env.task()
    agent_commit(wt, "x.txt", "x\n")
    (wt / "a.txt").write_text("dirty\n")
    (wt / ".gitignore").write_text("build/\n")
    (wt / "build").mkdir()
    (wt / "build" / "out.o").write_text("ignored\n")
    sh(wt / "build", "init", "-q", "nested")  # an agent that cloned something
    assert await env.sb.reset("r1", "1.1", base) == wt
    assert sh(wt, "rev-parse", "HEAD") == base
    assert sh(wt, "status", "--porcelain", "--ignored") == ""
    assert sh(wt, "symbolic-ref", "HEAD") == "refs/heads/pipeline/r1/task-1.1"


async def test_reset_recreates_a_worktree_whose_git_file_was_deleted(env: Env) -> None:
    base, wt = await env.task()
    (wt / ".git").unlink()
    (wt / "junk.txt").write_text("junk\n")
    done = await env.sb.commit_all("r1", "1.1", base, "Task 1.1")
    assert done.commit is None and ".git" in (done.rejected or "")
    assert await env.sb.reset("r1", "1.1", base) == wt
    assert not (wt / "junk.txt").exists()
    assert sh(wt, "rev-parse", "HEAD") == base
    assert (wt / "a.txt").read_text() == "one\ntwo\nthree\n"
    # A fresh sandbox object (another worker process) finds the task through its refs.
    other = GitWorktreeSandbox(env.tmp / "ws")
    (wt / "new.txt").write_text("n\n")
    done = await other.commit_all("r1", "1.1", base, "Task 1.1")
    assert done.commit is not None and done.changed == ["new.txt"]


async def test_remove_is_idempotent_and_leaves_nothing_behind(env: Env) -> None:
    await env.task("1.1")
    await env.task("1.2")
    assert await env.sb.remove("r1", "1.1", delete_branch=True) == (True, True)
    assert await env.sb.remove("r1", "1.1", delete_branch=True) == (False, False)
    assert await env.sb.remove("r1", "1.2", delete_branch=False) == (True, False)
    assert await env.sb.remove("r1", "1.2", delete_branch=True) == (False, True)
    assert await env.sb.remove("r1", "1.2", delete_branch=True) == (False, False)
    assert [Path(p).resolve() for p in worktrees(env.clone)] == [env.clone.resolve()]
    assert sh(env.clone, "for-each-ref", "refs/heads/pipeline", "refs/pipeline-base") == ""
    assert not (env.tmp / "ws" / "worktrees" / "r1").exists()
    assert await env.sb.remove("never", "9.9", delete_branch=True) == (False, False)


async def test_checkout_detached_is_temporary(env: Env) -> None:
    await env.sb.ensure_clone(str(env.repo))
    first = sh(env.repo, "rev-list", "--max-parents=0", "main")
    async with env.sb.checkout_detached(str(env.repo), first) as d:
        assert (d / "README.md").exists() and not (d / "a.txt").exists()
        assert sh(d, "rev-parse", "HEAD") == first
    assert not d.exists()
    assert len(worktrees(env.clone)) == 1


async def test_worktree_repo_finds_the_clone_even_without_git_file(env: Env) -> None:
    base, wt = await env.task()
    fresh = GitWorktreeSandbox(env.tmp / "ws")  # another worker: no cache
    assert Path(fresh.worktree_repo("r1", "1.1")) == env.clone
    (wt / ".git").unlink()
    assert Path(fresh.worktree_repo("r1", "1.1")) == env.clone
    async with fresh.checkout_detached(fresh.worktree_repo("r1", "1.1"), base) as d:
        assert sh(d, "rev-parse", "HEAD") == base
    with pytest.raises(GitError):
        fresh.worktree_repo("r1", "9.9")


async def test_names_and_paths(env: Env) -> None:
    t = env.sb.transcript_path("r1", "1.1")
    assert t == env.tmp / "ws" / "transcripts" / "r1" / "1.1.log" and t.parent.is_dir()
    for bad in ("../x", "a b", "a..b", ".hidden", "x.lock", ""):
        with pytest.raises(ValueError):
            env.sb.worktree_dir("r1", bad)
    assert env.sb.clone_dir("git@github.com:org/My Repo.git").name.startswith("My_Repo-")
    assert env.sb.clone_dir("/a/b/") == env.sb.clone_dir("/a/b")


async def test_git_helpers(env: Env) -> None:
    with pytest.raises(GitError) as info:
        await git("rev-parse", "--verify", "no-such-ref", cwd=env.repo)
    assert info.value.exit_code == 128 and "no-such-ref" in info.value.argv
    assert await rev_parse("no-such-ref", env.repo) is None
    assert await rev_parse("main", env.repo) == env.main
    t = "Pipeline-Task: r/1.1"
    assert with_trailer("Do it", t) == f"Do it\n\n{t}\n"
    assert with_trailer(f"Do it\n\n{t}\n", t) == f"Do it\n\n{t}\n"
    assert with_trailer("Do it\n\nSigned-off-by: A <a@b>", t) == (
        f"Do it\n\nSigned-off-by: A <a@b>\n{t}\n"
    )


def test_credentials_in_urls_never_reach_an_error() -> None:
    url = "https://bot:ghp_secret@example.com/org/repo.git"
    assert redact(f"fatal: {url}") == "fatal: https://***@example.com/org/repo.git"
    err = GitError(f"cannot fetch {url}", argv=("git", "clone", url), output=f"from {url}")
    assert "ghp_secret" not in f"{err} {err.argv} {err.output}"
