"""Host-side workspaces on real repositories: clone, checkouts, commits, reset and removal."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autonomous_pipeline.backends.git import (
    GitError,
    git,
    redact,
    repo_lock,
    rev_parse,
    with_trailer,
)
from autonomous_pipeline.backends.workspace.clones import Clones
from autonomous_pipeline.backends.workspace.collect import Committed
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from tests.gitutil import IDENTITY, commit_file, isolate_git, make_user_repo, push_outside, sh

TARGET = "pipeline/out"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = make_user_repo(tmp)
        self.main = sh(self.repo, "rev-parse", "main")
        self.sb = Workspaces(tmp / "ws")

    async def task(self, task_id: str = "1.1", run_key: str = "r1") -> tuple[str, Path]:
        await self.sb.prepare_run(str(self.repo), self.main, TARGET)
        base, co = await self.sb.prepare(TaskRef(run_key, task_id), str(self.repo), TARGET)
        return base, co.path

    async def collect(self, base: str, message: str = "Task 1.1", task: str = "1.1") -> Committed:
        return await self.sb.collect(TaskRef("r1", task), base, message)

    @property
    def clone(self) -> Path:
        return self.sb.layout.clone_dir(str(self.repo))


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
    # Two workspace objects on one workspace, racing to create the target: one creates it.
    w1, w2 = Workspaces(env.tmp / "ws"), Workspaces(env.tmp / "ws")
    runs = await asyncio.gather(
        *(w.prepare_run(str(env.repo), env.main, TARGET) for w in (w1, w2, w1, w2))
    )
    assert {tip for tip, _ in runs} == {env.main}
    assert sum(created for _, created in runs) == 1
    preps = await asyncio.gather(
        *(
            w.prepare(TaskRef("r1", t), str(env.repo), TARGET)
            for w, t in ((w1, "1"), (w2, "2"), (w2, "1"))
        )
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
    assert wt == env.sb.layout.worktree_dir(TaskRef("r1", "1.1")) and wt.is_dir()
    (wt / "work.txt").write_text("in progress\n")
    push_outside(env.repo, TARGET, "b.txt", "b\n", env.tmp)  # the target moves meanwhile
    again, co = await env.sb.prepare(TaskRef("r1", "1.1"), str(env.repo), TARGET)
    assert (again, co.path) == (base, wt)
    assert (wt / "work.txt").read_text() == "in progress\n"
    branch = sh(wt, "symbolic-ref", "HEAD")
    assert branch == "refs/heads/pipeline/r1/task-1.1"
    assert sh(env.clone, "rev-parse", branch) == base
    # The user's repository has no task branch: those live in the pipeline's clone only.
    assert sh(env.repo, "branch", "--list", "pipeline/r1/*") == ""


async def test_a_fresh_prepare_leaves_nothing_of_a_try_before(env: Env) -> None:
    # What a crash or an earlier try of the task left in its own checkout: kept for an agent
    # that resumes, gone for one that starts afresh (which then trusts the checkout as it is).
    base, wt = await env.task()
    (wt / "left.txt").write_text("from a try before\n")
    (wt / "a.txt").write_text("edited\n")
    commit_file(wt, "committed.txt", "a commit of the try before\n", "the try before")
    await env.sb.prepare(TaskRef("r1", "1.1"), str(env.repo), TARGET)
    assert (wt / "left.txt").exists() and sh(wt, "rev-parse", "HEAD") != base
    again, co = await env.sb.prepare(TaskRef("r1", "1.1"), str(env.repo), TARGET, fresh=True)
    assert (again, co.path) == (base, wt)
    assert sh(wt, "rev-parse", "HEAD") == base
    assert sh(wt, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""


async def test_parallel_prepares_get_distinct_worktrees(env: Env) -> None:
    await env.sb.prepare_run(str(env.repo), env.main, TARGET)
    ids = ["1.1", "1.2", "1.3", "2.1"]
    out = await asyncio.gather(
        *(env.sb.prepare(TaskRef("r1", t), str(env.repo), TARGET) for t in ids)
    )
    paths = [co.path for _, co in out]
    assert len(set(paths)) == len(ids)
    assert {base for base, _ in out} == {env.main}
    listed = {Path(p).resolve() for p in worktrees(env.clone)}
    assert {p.resolve() for p in paths} <= listed
    assert sh(env.clone, "fsck", "--strict", "--no-progress", check=True) == ""


async def test_nothing_changed_is_a_no_op(env: Env) -> None:
    base, wt = await env.task()
    assert (await env.collect(base)).commit is None
    # Changes that cancel out are no change either.
    agent_commit(wt, "a.txt", "changed\n")
    agent_commit(wt, "a.txt", "one\ntwo\nthree\n")
    assert (await env.collect(base)).commit is None


async def test_commit_all_commits_everything_once(env: Env) -> None:
    base, wt = await env.task()
    (wt / "new dir").mkdir()
    (wt / "new dir" / "ünï.txt").write_text("new\n")
    (wt / "a.txt").write_text("edited\n")
    (wt / "src" / "lib.py").unlink()
    first = await env.collect(base, "Task 1.1: do it")
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
    assert await env.collect(base, "Task 1.1: do it") == first


async def test_agent_commits_are_accepted_with_leftovers_on_top(env: Env) -> None:
    base, wt = await env.task()
    own = agent_commit(wt, "agent.txt", "by the agent\n")
    (wt / "leftover.txt").write_text("not committed\n")
    done = await env.collect(base)
    head, files = done.commit, done.changed
    assert head is not None and sh(wt, "rev-parse", f"{head}^") == own
    assert sorted(files) == ["agent.txt", "leftover.txt"]
    assert sh(wt, "show", "-s", "--format=%an", own) == IDENTITY["GIT_AUTHOR_NAME"]


async def test_agent_commits_alone_get_a_marker_commit(env: Env) -> None:
    base, wt = await env.task()
    own = agent_commit(wt, "agent.txt", "by the agent\n")
    done = await env.collect(base)
    head, files = done.commit, done.changed
    assert head is not None and head != own and sh(wt, "rev-parse", f"{head}^") == own
    assert "Pipeline-Task: r1/1.1" in sh(wt, "show", "-s", "--format=%B", head)
    assert files == ["agent.txt"]
    assert await env.collect(base) == done


async def test_agent_on_another_branch_becomes_the_task_branch(env: Env) -> None:
    base, wt = await env.task()
    sh(wt, "checkout", "-q", "-b", "agent-branch")
    agent_commit(wt, "x.txt", "x\n")
    done = await env.collect(base)
    head, files = done.commit, done.changed
    assert files == ["x.txt"]
    assert sh(wt, "symbolic-ref", "HEAD") == "refs/heads/pipeline/r1/task-1.1"
    assert sh(wt, "rev-parse", "HEAD") == head


async def test_history_rewrite_is_detected(env: Env) -> None:
    base, wt = await env.task()
    sh(wt, "reset", "-q", "--hard", "HEAD~1")
    agent_commit(wt, "x.txt", "x\n")
    done = await env.collect(base)
    assert done.commit is None and "rewrote history" in (done.rejected or "")


async def test_reset_cleans_a_dirty_worktree(env: Env) -> None:
    base, wt = await env.task()
    agent_commit(wt, "x.txt", "x\n")
    (wt / "a.txt").write_text("dirty\n")
    (wt / ".gitignore").write_text("build/\n")
    (wt / "build").mkdir()
    (wt / "build" / "out.o").write_text("ignored\n")
    sh(wt / "build", "init", "-q", "nested")  # an agent that cloned something
    assert (await env.sb.reset(TaskRef("r1", "1.1"), base)).path == wt
    assert sh(wt, "rev-parse", "HEAD") == base
    assert sh(wt, "status", "--porcelain", "--ignored") == ""
    assert sh(wt, "symbolic-ref", "HEAD") == "refs/heads/pipeline/r1/task-1.1"


async def test_reset_recreates_a_worktree_whose_git_file_was_deleted(env: Env) -> None:
    base, wt = await env.task()
    (wt / ".git").unlink()
    (wt / "junk.txt").write_text("junk\n")
    done = await env.collect(base)
    assert done.commit is None and ".git" in (done.rejected or "")
    assert (await env.sb.reset(TaskRef("r1", "1.1"), base)).path == wt
    assert not (wt / "junk.txt").exists()
    assert sh(wt, "rev-parse", "HEAD") == base
    assert (wt / "a.txt").read_text() == "one\ntwo\nthree\n"
    # A fresh workspace object (another worker process) finds the task through its refs.
    other = Workspaces(env.tmp / "ws")
    (wt / "new.txt").write_text("n\n")
    done = await other.collect(TaskRef("r1", "1.1"), base, "Task 1.1")
    assert done.commit is not None and done.changed == ["new.txt"]


async def test_remove_is_idempotent_and_leaves_nothing_behind(env: Env) -> None:
    await env.task("1.1")
    await env.task("1.2")
    t1, t2 = TaskRef("r1", "1.1"), TaskRef("r1", "1.2")
    assert await env.sb.remove(t1, delete_branch=True) == (True, True)
    assert await env.sb.remove(t1, delete_branch=True) == (False, False)
    assert await env.sb.remove(t2, delete_branch=False) == (True, False)
    assert await env.sb.remove(t2, delete_branch=True) == (False, True)
    assert await env.sb.remove(t2, delete_branch=True) == (False, False)
    # The checkouts are parked for the next tasks, off every branch; nothing else is left.
    pool = env.sb.layout.pool_dir(env.clone)
    parked = sorted(Path(p).resolve() for p in worktrees(env.clone)[1:])
    assert parked == sorted(p.resolve() for p in pool.iterdir()) and len(parked) == 2
    assert all(sh(p, "branch", "--show-current") == "" for p in parked)
    assert sh(env.clone, "for-each-ref", "refs/heads/pipeline", "refs/pipeline-base") == ""
    assert not (env.tmp / "ws" / "worktrees" / "r1").exists()
    assert await env.sb.remove(TaskRef("never", "9.9"), delete_branch=True) == (False, False)


async def test_a_detached_checkout_is_temporary_and_needs_no_git_file(env: Env) -> None:
    base, wt = await env.task()
    first = sh(env.repo, "rev-list", "--max-parents=0", "main")
    (wt / ".git").unlink()  # the agent broke its own pointer: the task's refs still say where
    fresh = Workspaces(env.tmp / "ws")  # another worker: no cache
    async with fresh.detached(TaskRef("r1", "1.1"), first) as co:
        assert (co.path / "README.md").exists() and not (co.path / "a.txt").exists()
        assert await co.head() == first
    assert not co.path.exists()
    assert str(co.path) not in worktrees(env.clone)
    with pytest.raises(GitError):
        async with fresh.detached(TaskRef("r1", "9.9"), base):
            pass


async def test_host_git_never_follows_a_rewritten_git_pointer(env: Env) -> None:
    # An agent points its checkout's .git at a git directory of its own whose config runs a
    # program (core.fsmonitor) for any status or add. Host-side git must not read it.
    base, wt = await env.task()
    evil = env.tmp / "evil"
    sh(env.tmp, "init", "-q", "--bare", str(evil))
    ran = env.tmp / "ran"
    hook = env.tmp / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {ran}\n")
    hook.chmod(0o755)
    sh(evil, "config", "core.fsmonitor", str(hook))
    (wt / ".git").write_text(f"gitdir: {evil}\n")
    (wt / "a.txt").write_text("changed\n")
    done = await env.collect(base)
    assert done.commit is None and ".git" in (done.rejected or "")
    co = await env.sb.reset(TaskRef("r1", "1.1"), base)
    assert await co.head() == base and not (wt / "a.txt").read_text().startswith("changed")
    await co.git("status", "--porcelain")
    assert not ran.exists()


async def test_a_sandbox_sees_the_clone_config_without_its_remote(env: Env) -> None:
    url_repo = "https://bot:ghp_secret123@example.com/org/repo.git"
    sh(env.repo, "remote", "add", "upstream", url_repo)  # the user's own remotes stay theirs
    await env.task()
    shown = Clones.sandbox_config(env.clone).read_text()
    assert "bare = true" in shown and "remote" not in shown and str(env.repo) not in shown
    assert "ghp_secret123" not in shown


async def test_names_and_paths(env: Env) -> None:
    layout = env.sb.layout
    t = layout.transcript_path(TaskRef("r1", "1.1"))
    assert t == env.tmp / "ws" / "transcripts" / "r1" / "1.1.log" and t.parent.is_dir()
    for bad in ("../x", "a b", "a..b", ".hidden", "x.lock", ""):
        with pytest.raises(ValueError):
            TaskRef("r1", bad)
    assert layout.clone_dir("git@github.com:org/My Repo.git").name.startswith("My_Repo-")
    assert layout.clone_dir("/a/b/") == layout.clone_dir("/a/b")


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


async def test_an_ended_tasks_checkout_is_reused_clean_for_the_next_task(env: Env) -> None:
    _, wt = await env.task("1.1")
    # What the last agent may leave: a changed file, new files, ignored junk, a nested repo.
    (wt / "README.md").write_text("changed\n")
    (wt / "new.txt").write_text("new\n")
    (wt / ".gitignore").write_text("build/\n")
    (wt / "build").mkdir()
    (wt / "build" / "out.o").write_text("junk\n")
    subprocess.run(["git", "init", "-q", str(wt / "nested")], check=True)
    inode = wt.stat().st_ino
    await env.sb.remove(TaskRef("r1", "1.1"), delete_branch=True)
    base2, wt2 = await env.task("2.1", run_key="r2")
    assert wt2.stat().st_ino == inode, "the parked checkout was not reused"
    assert list(env.sb.layout.pool_dir(env.clone).iterdir()) == []
    assert sh(wt2, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert sh(wt2, "rev-parse", "HEAD") == base2 and sh(wt2, "branch", "--show-current")
    assert not (wt2 / "new.txt").exists() and not (wt2 / "nested").exists()
    assert (wt2 / "README.md").read_text() == "# demo\n"


async def test_a_parked_checkout_that_will_not_come_clean_is_replaced(env: Env) -> None:
    await env.task("1.1")
    await env.sb.remove(TaskRef("r1", "1.1"), delete_branch=True)
    (slot,) = env.sb.layout.pool_dir(env.clone).iterdir()
    # A crash between parking and reuse broke its pointer to the clone.
    (slot / ".git").write_text("gitdir: /nowhere\n")
    base, wt2 = await env.task("1.2")
    assert sh(wt2, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert sh(wt2, "rev-parse", "HEAD") == base
    assert not slot.exists() and list(env.sb.layout.pool_dir(env.clone).iterdir()) == []


async def test_the_pool_is_bounded(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from autonomous_pipeline.backends.workspace import tasks

    monkeypatch.setattr(tasks, "POOL_MAX", 2)
    for i in range(4):
        await env.task(f"1.{i}")
    for i in range(4):
        await env.sb.remove(TaskRef("r1", f"1.{i}"), delete_branch=True)
    assert len(list(env.sb.layout.pool_dir(env.clone).iterdir())) == 2
    assert len(worktrees(env.clone)) == 3  # the clone and the two parked


async def test_a_checkout_a_crash_left_half_taken_is_cleaned_before_use(env: Env) -> None:
    _, wt = await env.task("1.1")
    (wt / "left-by-1.1.txt").write_text("another task's file\n")
    await env.sb.remove(TaskRef("r1", "1.1"), delete_branch=True)
    (slot,) = env.sb.layout.pool_dir(env.clone).iterdir()
    # A worker killed just after taking the parked checkout for task 1.2, before cleaning it.
    target = env.sb.layout.worktree_dir(TaskRef("r1", "1.2"))
    target.parent.mkdir(parents=True, exist_ok=True)
    sh(env.clone, "worktree", "move", str(slot), str(target))
    base, wt2 = await env.task("1.2")  # the retried prepare
    assert wt2 == target and not (wt2 / "left-by-1.1.txt").exists()
    assert sh(wt2, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert sh(wt2, "rev-parse", "HEAD") == base and sh(wt2, "branch", "--show-current")


async def test_a_new_checkout_a_crash_left_half_written_is_reset_before_use(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new checkout is registered under the clone's lock and written after it: a worker killed
    # in between leaves one with no files. It is detached until written, so it is never taken
    # for the task's own (kept as it is, for a resumed agent).
    from autonomous_pipeline.backends.workspace.checkout import Checkout

    real = Checkout.git

    async def killed(self: Checkout, *args: str, **kw: object):  # type: ignore[no-untyped-def]
        if args[:1] == ("read-tree",):
            raise OSError("the worker was killed here")
        return await real(self, *args, **kw)  # type: ignore[arg-type]

    await env.sb.prepare_run(str(env.repo), env.main, TARGET)
    monkeypatch.setattr(Checkout, "git", killed)
    with pytest.raises(OSError, match="killed"):
        await env.sb.prepare(TaskRef("r1", "1.1"), str(env.repo), TARGET)
    monkeypatch.setattr(Checkout, "git", real)
    wt = env.sb.layout.worktree_dir(TaskRef("r1", "1.1"))
    assert wt.is_dir() and not (wt / "a.txt").exists()  # registered, never written
    base, again = await env.sb.prepare(TaskRef("r1", "1.1"), str(env.repo), TARGET)
    assert again.path == wt and (wt / "a.txt").is_file()
    assert sh(wt, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert sh(wt, "rev-parse", "HEAD") == base
    assert sh(wt, "symbolic-ref", "HEAD") == "refs/heads/pipeline/r1/task-1.1"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(["a", "b", " ", "\t", "#"]), max_size=6), max_size=8
    ).filter(lambda lines: any(line.strip() for line in lines))
)
def test_a_commit_message_is_cleaned_as_git_commit_cleans_it(lines: list[str]) -> None:
    from autonomous_pipeline.backends.workspace.collect import _cleaned

    message = "\n".join(lines)
    git_says = subprocess.run(
        ["git", "stripspace"], input=message, capture_output=True, text=True, check=True
    ).stdout
    assert _cleaned(message) == git_says


async def test_a_fifo_made_after_a_scrub_is_found_by_the_next_even_with_its_times_set_back(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Folders unchanged since the last scrub are not read again; an agent that adds a FIFO to
    # one and sets the folder's times back does not make it look unchanged (its change time
    # moves all the same).
    from autonomous_pipeline.backends.workspace import checkout

    monkeypatch.setattr(checkout, "_SETTLED_NS", 0)  # every folder remembered at once
    _, wt = await env.task()
    assert checkout.scrub_special_files(wt) == []
    folder = wt / "src"
    before = folder.stat()
    os.mkfifo(folder / ".gitignore")
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert checkout.scrub_special_files(wt) == ["src/.gitignore"]
    assert not (folder / ".gitignore").exists()
    os.mkfifo(wt / "deep")  # and at the top
    assert checkout.scrub_special_files(wt) == ["deep"]


async def test_two_prepares_of_one_task_at_once_leave_one_whole_checkout(env: Env) -> None:
    # Two attempts of a claim overlap (the first timed out but lives on): one prepares while the
    # other is writing the same checkout. Neither may drop the other's half-written files.
    for i in range(3000):  # enough files that writing them takes a while
        (env.repo / f"f{i}.txt").write_text(f"{i}\n")
    sh(env.repo, "add", "-A")
    sh(env.repo, "commit", "-qm", "many files")
    env.main = sh(env.repo, "rev-parse", "main")
    await env.sb.prepare_run(str(env.repo), env.main, TARGET)
    task = TaskRef("r1", "1.1")
    first, second = await asyncio.gather(
        env.sb.prepare(task, str(env.repo), TARGET, fresh=True),
        env.sb.prepare(task, str(env.repo), TARGET, fresh=True),
    )
    assert first[0] == second[0] == env.main
    wt = first[1].path
    assert second[1].path == wt and worktrees(env.clone).count(str(wt)) == 1
    assert sh(wt, "status", "--porcelain") == ""  # every file there, as committed
    assert sh(wt, "symbolic-ref", "HEAD") == f"refs/heads/{task.branch}"
