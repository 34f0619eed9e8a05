"""Black-box helpers for the integration tests: a real dev server, worker processes, a fake agent.

Everything here drives the product the way a user does: `temporal server start-dev`, `worker.py`
and `starter.py` as subprocesses, git on real repositories. Every process started here is tracked
and killed (with its whole process group) by `Procs.close()`, also when a test fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from autonomous_pipeline.models.search import server_flags
from examples.make_demo_repo import make_demo_repo
from tests.gitutil import IDENTITY
from tests.images import run_args as container_run_args
from tests.temporal_env import dev_server_path

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").is_dir() else sys.executable

# The fake coding agent. argv: LOG SLEEP_S TASK_ID [--fail=ID,ID] [--helper]
#  - appends "<task_id> <pid> <start_ts> <ticks>" to LOG.started as soon as it runs,
#  - with --helper, starts a grandchild (as a real agent's tool call would) that stays in the
#    agent's process group and does not die with the worker; logs "<task_id> <pid> <ticks>" of
#    it to LOG.helpers, and kills it itself when done,
#  - sleeps, writes out/<task_id>.txt in its working directory (the task's worktree),
#  - appends "<task_id> <pid> <start_ts> <end_ts> <ticks>" to LOG when it is done,
#  - exits 1 (after logging) when TASK_ID is one of the --fail ids.
# Each line is one write() on an O_APPEND descriptor, so parallel agents never interleave.
# In a sandbox's PID namespace a pid means nothing outside it; <ticks>, when the process
# started (clock ticks since boot), is the same inside and out: `AgentRun.host_pid` finds it.
AGENT_SCRIPT = """\
import os, subprocess, sys, time

log, sleep_s, task_id = sys.argv[1], float(sys.argv[2]), sys.argv[3]
flags = sys.argv[4:]
fail = [f for a in flags if a.startswith("--fail=") for f in a[7:].split(",")]
# --slow=TASK:SECONDS: that task takes longer (a test that must find an agent still running).
for a in flags:
    if a.startswith("--slow=") and a[7:].split(":")[0] == task_id:
        sleep_s = float(a[7:].split(":")[1])


def append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def ticks(pid="self"):
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[19]


start = time.time()
append(log + ".started", f"{task_id} {os.getpid()} {start:.6f} {ticks()}")
helper = None
if "--helper" in flags:
    helper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    append(log + ".helpers", f"{task_id} {helper.pid} {ticks(helper.pid)}")
print(f"agent {task_id} working", flush=True)
time.sleep(sleep_s)
os.makedirs("out", exist_ok=True)
with open(os.path.join("out", task_id + ".txt"), "w") as fh:
    fh.write(task_id + "\\n")
if helper is not None:
    helper.kill()
    helper.wait()
end = time.time()
append(log, f"{task_id} {os.getpid()} {start:.6f} {end:.6f} {ticks()}")
print(f"agent {task_id} done", flush=True)
sys.exit(1 if task_id in fail else 0)
"""


def processes_with(*markers: str) -> list[int]:
    """Host pids of live processes whose command line holds every one of `markers`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                cmdline = (entry / "cmdline").read_bytes()
                if all(m.encode() in cmdline for m in markers):
                    found.append(int(entry.name))
    return found


def find_process(ticks: str, *markers: bytes) -> int | None:
    """The host pid of the live process that started at `ticks` with `markers` in its command."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[19] == ticks and stat[0] != "Z":
                cmdline = (entry / "cmdline").read_bytes()
                if all(m in cmdline for m in markers):
                    return int(entry.name)
    return None


@dataclass(frozen=True)
class AgentRun:
    task_id: str
    pid: int  # as the agent saw it: inside a sandbox, its PID namespace's
    start: float
    end: float | None  # None: started, never finished (killed)
    ticks: str = ""

    def host_pid(self) -> int | None:
        return find_process(self.ticks, b"fake_agent.py", self.task_id.encode())

    def alive(self) -> bool:
        return self.host_pid() is not None


@dataclass(frozen=True)
class Helper:
    """A grandchild a fake agent started (--helper)."""

    task_id: str
    ticks: str

    def host_pid(self) -> int | None:
        return find_process(self.ticks, b"time.sleep(120)")

    def alive(self) -> bool:
        return self.host_pid() is not None


# Agents are confined to their worktree (backends.confine); the fake agent's logs live outside
# it, in this one directory every worker started here may write to (PIPELINE_AGENT_WRITABLE).
AGENT_LOG_ROOT = Path(tempfile.gettempdir()) / "pipeline-fake-agent-logs"


def agent_log_path(tmp: Path, name: str = "agents.log") -> Path:
    """A fresh log file for the fake agents of `tmp`'s test or bench run."""
    folder = AGENT_LOG_ROOT / f"{os.getpid()}-{abs(hash(str(tmp))):x}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def write_agent(tmp: Path) -> Path:
    path = tmp / "fake_agent.py"
    path.write_text(AGENT_SCRIPT)
    return path


def agent_command(
    agent: Path,
    log: Path,
    sleep_s: float,
    fail: tuple[str, ...] = (),
    helper: bool = False,
    python: str = sys.executable,
    slow: tuple[str, float] | None = None,
) -> str:
    """The `--agent-command` template running the fake agent (placeholders left for the product).
    `python`: the interpreter, as the agent's sandbox knows it (an image's own, in a container)."""
    argv = [python, str(agent), str(log), f"{sleep_s:g}", "{task_id}"]
    if fail:
        argv.append("--fail=" + ",".join(fail))
    if helper:
        argv.append("--helper")
    if slow:
        argv.append(f"--slow={slow[0]}:{slow[1]:g}")
    return shlex.join(argv)


def helpers(log: Path) -> list[Helper]:
    """Every grandchild the fake agents started (with --helper)."""
    path = Path(str(log) + ".helpers")
    if not path.exists():
        return []
    return [
        Helper(tid, ticks)
        for tid, _pid, ticks in (ln.split() for ln in path.read_text().splitlines())
    ]


def agent_runs(log: Path) -> list[AgentRun]:
    """Every agent process that started, with its end time when it finished."""
    ended: dict[tuple[str, str], float] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            tid, _pid, _start, end, ticks = line.split()
            ended[(tid, ticks)] = float(end)
    runs = []
    started = Path(str(log) + ".started")
    if started.exists():
        for line in started.read_text().splitlines():
            tid, pid, start, ticks = line.split()
            runs.append(AgentRun(tid, int(pid), float(start), ended.get((tid, ticks)), ticks))
    return runs


def runs_per_task(log: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in agent_runs(log):
        out[r.task_id] = out.get(r.task_id, 0) + 1
    return out


def finished_runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def kill_stray_agents(log: Path) -> list[int]:
    """Teardown: SIGKILL any fake agent (or its helper) of `log` still running; their pids."""
    stray = []
    for found in [*agent_runs(log), *helpers(log)]:
        pid = found.host_pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                stray.append(pid)
    return stray


def assert_no_agent_alive(log: Path) -> None:
    alive = [r for r in agent_runs(log) if r.alive()]
    assert not alive, f"agents outlived their run: {alive}"


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that are open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, delta in events:  # an end sorts before a start at the same instant
        cur += delta
        best = max(best, cur)
    return best


# ---------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie answers kill(0) but is gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


Diagnostics = Callable[[], str] | str


def _text(diagnostics: Diagnostics) -> str:
    return diagnostics() if callable(diagnostics) else diagnostics


def wait_for(
    cond: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.1,
    on_fail: Diagnostics = "",
) -> Any:
    """Poll `cond` until it returns something true (returned); on timeout, fail with `on_fail`
    (logs, read only then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{_text(on_fail)}")


def process_env(tmp: Path) -> dict[str, str]:
    """The environment of every process we start: unbuffered, and no user git config leaking in."""
    gitconfig = tmp / "gitconfig-global"
    if not gitconfig.exists():
        gitconfig.write_text("[init]\n\tdefaultBranch = main\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "TEMPORAL_"))}
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(key, None)
    return env | {
        "PYTHONUNBUFFERED": "1",
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        # No ~/.config/temporalio profile (or anything else of the user's home) is read.
        "HOME": str(tmp / "home"),
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "PIPELINE_AGENT_WRITABLE": str(AGENT_LOG_ROOT),
        # What this machine's podman needs (tests/images.py); harmless where no test uses it.
        "PIPELINE_CONTAINER_RUN_ARGS": container_run_args(),
    }


@dataclass
class Procs:
    """Every process a test starts; `close()` kills each one's process group."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
        fh = log.open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            fh.close()
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.started):
            kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            kill_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.started.clear()


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end on a fresh event loop in its own thread, so it never meets the
    session event loop pytest-asyncio keeps for the async tests in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


async def _healthy(address: str) -> bool:
    from temporalio.client import Client

    try:
        client = await asyncio.wait_for(Client.connect(address), timeout=5)
        await asyncio.wait_for(client.service_client.check_health(), timeout=5)
        return True
    except Exception:
        return False


class DevServer:
    """`temporal server start-dev` on a fixed port and SQLite file, so it can be restarted."""

    def __init__(self, procs: Procs, root: Path, env: dict[str, str]) -> None:
        self.procs, self.root, self.env = procs, root, env
        self.port, self.ui_port = free_port(), free_port()
        self.db = root / "temporal.db"
        self.log = root / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        wait_for(lambda: not port_open(self.port), 30, f"port {self.port} to be free")
        argv = [
            dev_server_path(),
            *("server", "start-dev", "--db-filename", str(self.db)),
            *("--ip", "127.0.0.1", "--port", str(self.port), "--ui-port", str(self.ui_port)),
            *("--headless", "--log-level", "error"),
            *server_flags(),  # as the embedded server registers them
        ]
        self.proc = self.procs.spawn(argv, self.log, self.env, self.root)
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the dev server exited: {self.log.read_text()[-2000:]}")
            return run_async(lambda: _healthy(self.address))

        wait_for(ready, timeout, "the dev server to serve", interval=0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        assert self.proc is not None
        kill_group(self.proc, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


def start_worker(
    procs: Procs,
    address: str,
    workspace: Path,
    log: Path,
    env: dict[str, str],
    *extra: str,
) -> subprocess.Popen:
    """A `worker.py` process; returns once it says it is serving."""
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0
    argv = [PYTHON, str(ROOT / "worker.py"), "--address", address, "--workspace", str(workspace)]
    argv += extra
    proc = procs.spawn(argv, log, env, ROOT)

    def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited: {log.read_text()[-2000:]}")
        return "worker serving" in log.read_bytes()[offset:].decode(errors="replace")

    wait_for(serving, 60, "the worker to start")
    return proc


@dataclass
class Stage:
    """What most integration tests start from: a dev server, a worker serving it from
    `workspace`, and a user's repository with uncommitted work in it."""

    env: dict[str, str]
    server: DevServer
    workspace: Path
    worker: subprocess.Popen
    repo: Path


def stage(procs: Procs, tmp: Path, env: dict[str, str] | None = None) -> Stage:
    env = env or process_env(tmp)
    server = DevServer(procs, tmp, env)
    server.start()
    workspace = tmp / "ws"
    worker = start_worker(procs, server.address, workspace, tmp / "worker.log", env)
    return Stage(env, server, workspace, worker, make_dirty_user_repo(tmp / "repo"))


def starter(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(ROOT / "starter.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def wait_finished(
    workflow_id: str,
    address: str,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    logs: Diagnostics = "",
) -> dict[str, Any]:
    """Poll `starter.py status --json` until the run has closed; its final result."""
    last: list[str] = []

    def done() -> dict[str, Any] | None:
        res = starter(["status", workflow_id, "--json", "--address", address], env, cwd, 60)
        last[:] = [res.stdout + res.stderr]
        if res.returncode != 0:  # the server may be restarting
            return None
        data = json.loads(res.stdout)
        return data if data["status"] != "running" else None

    try:
        return dict(wait_for(done, timeout, f"run {workflow_id} to finish", interval=0.5))
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nlast status: {last[-1] if last else ''}\n{_text(logs)}"
        ) from None


# ---------------------------------------------------------------------------------- git


def git(repo: Path, *args: str, check: bool = True) -> str:
    res = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {repo}: {res.stderr}")
    return res.stdout.strip()


def make_dirty_user_repo(path: Path) -> Path:
    """The demo repository with a user mid-work: a stash, an unstaged edit, a staged edit and an
    untracked file."""
    make_demo_repo(path)
    core = path / "toolkit" / "core.py"
    core.write_text(core.read_text() + "# stashed idea\n")
    git(path, "stash", "push", "-q", "-m", "user stash")
    core.write_text(core.read_text() + "# unstaged edit\n")
    (path / "README.md").write_text("# toolkit, staged edit\n")
    git(path, "add", "README.md")
    (path / "scratch.txt").write_text("untracked notes\n")
    return path


def _skip(rel: Path, target_branch: str) -> bool:
    """The target branch's ref and reflog: the one thing a run may add to the user's .git."""
    return str(rel) in (f".git/refs/heads/{target_branch}", f".git/logs/refs/heads/{target_branch}")


def repo_snapshot(repo: Path, target_branch: str) -> dict[str, Any]:
    """Every byte of a user's checkout and its .git, except the target branch's ref (and reflog);
    objects are recorded apart. Read-only (no `git status`: it would refresh the index)."""
    files: dict[str, bytes] = {}
    objects: dict[str, bytes] = {}
    for p in sorted(repo.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(repo)
        if rel.parts[:2] == (".git", "objects"):
            objects[str(rel)] = p.read_bytes()
        elif not _skip(rel, target_branch):
            files[str(rel)] = p.read_bytes()
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    return {
        "files": files,
        "objects": objects,
        "refs": [r for r in refs if not r.startswith(f"refs/heads/{target_branch} ")],
        "stash": git(repo, "stash", "list", "--format=%H %gs"),
        "HEAD": git(repo, "rev-parse", "HEAD"),
    }


def assert_untouched(before: dict[str, Any], after: dict[str, Any]) -> None:
    changed = sorted(
        k
        for k in before["files"].keys() | after["files"].keys()
        if before["files"].get(k) != after["files"].get(k)
    )
    assert not changed, f"the pipeline changed the user's checkout: {changed}"
    assert after["refs"] == before["refs"]
    assert after["stash"] == before["stash"] and before["stash"]
    assert after["HEAD"] == before["HEAD"]
    lost = [k for k, v in before["objects"].items() if after["objects"].get(k) != v]
    assert not lost, f"objects of the user's repository changed or vanished: {lost}"


def fsck(repo: Path) -> None:
    res = subprocess.run(
        ["git", "fsck", "--strict", "--no-progress", "--no-dangling"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, f"git fsck in {repo}: {res.stdout}{res.stderr}"
    assert "error" not in (res.stdout + res.stderr).lower(), res.stdout + res.stderr


def pipeline_clone(workspace: Path, repo: Path) -> Path:
    """The pipeline's bare clone of `repo` in `workspace` (found by its origin URL)."""
    found = [
        clone
        for clone in sorted((workspace / "repos").glob("*.git"))
        if git(clone, "config", "remote.origin.url") == str(repo.resolve())
    ]
    assert len(found) == 1, f"clones of {repo} under {workspace / 'repos'}: {found}"
    return found[0]


def assert_workspace_clean(
    workspace: Path, repo: Path, run_key: str, kept: tuple[str, ...] = ()
) -> None:
    """The pipeline's clone of `repo` is fsck clean, has no worktree but the bare entry and the
    checkouts parked for reuse (detached, in its pool, at most POOL_MAX), no task branch but those
    of the tasks in `kept` (a failed task's branch is kept for inspection), and the run left no
    folder under worktrees/."""
    from autonomous_pipeline.backends.workspace.tasks import POOL_MAX

    clone = pipeline_clone(workspace, repo)
    fsck(clone)
    listing = git(clone, "worktree", "list", "--porcelain")
    blocks = [b.splitlines() for b in listing.strip().split("\n\n")]
    assert Path(blocks[0][0].split(" ", 1)[1]).resolve() == clone.resolve(), listing
    assert "bare" in blocks[0], listing
    pool = (workspace / "pool" / clone.name).resolve()
    parked = blocks[1:]
    assert len(parked) <= POOL_MAX, listing
    for block in parked:
        assert Path(block[0].split(" ", 1)[1]).resolve().parent == pool, listing
        assert "detached" in block, listing
    branches = git(clone, "for-each-ref", "--format=%(refname)", "refs/heads/pipeline")
    left = [b for b in branches.splitlines() if b.rsplit("/task-", 1)[-1] not in kept]
    assert not left, f"task branches left in {clone}: {left}"
    bases = git(clone, "for-each-ref", "--format=%(refname)", f"refs/pipeline-base/{run_key}")
    assert sorted(bases.splitlines()) == sorted(
        f"refs/pipeline-base/{run_key}/{t}" for t in kept
    ), bases
    run_dir = workspace / "worktrees" / run_key
    assert not run_dir.exists(), f"left under {run_dir}: {list(run_dir.rglob('*'))}"
    detached = workspace / "worktrees" / "_detached"
    assert not detached.exists() or not any(detached.iterdir()), list(detached.iterdir())


def trailers(repo: Path, branch: str) -> list[str]:
    body = git(repo, "log", "--format=%B", f"refs/heads/{branch}")
    return [ln for ln in body.splitlines() if ln.startswith("Pipeline-Task: ")]


def assert_merged_once(repo: Path, branch: str, run_key: str, task_ids: list[str]) -> None:
    """Each task's trailer exactly once on the target, and its file there with its id inside."""
    found = trailers(repo, branch)
    for tid in task_ids:
        assert found.count(f"Pipeline-Task: {run_key}/{tid}") == 1, (tid, found)
        assert git(repo, "show", f"refs/heads/{branch}:out/{tid}.txt") == tid
    assert len(found) == len(task_ids), found
    files = git(repo, "ls-tree", "-r", "--name-only", f"refs/heads/{branch}", "out").splitlines()
    assert sorted(files) == sorted(f"out/{t}.txt" for t in task_ids)


def run_key_of(workflow_id: str) -> str:
    return workflow_id.removeprefix("pipeline-")


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return f"--- {path.name} ---\n" + path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
