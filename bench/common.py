"""Shared helpers of the bench scripts: environment, repositories, processes, Temporal histories.

Not a benchmark itself. Each bench script imports it after putting the repository root on
sys.path (examples/ and tests/ are not installed packages), prints progress to stderr and one JSON
object as its last stdout line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: examples/ and tests/ are not installed packages
    sys.path.insert(0, str(ROOT))

PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").is_dir() else sys.executable
IDENTITY = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def log(message: str) -> None:
    """Progress, on stderr (stdout's last line is the JSON result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def exit_on_sigterm() -> None:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so `finally` blocks kill what the bench started."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


@contextlib.contextmanager
def temp_dir(prefix: str, keep: bool) -> Iterator[Path]:
    """A fresh directory, removed afterwards unless `keep`."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    try:
        yield tmp
    finally:
        if keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def agent_logs(tmp: Path) -> Path:
    """Where a bench's fake agents log: the one place outside their worktree that confined agents
    (backends/confine.py) may write to, through PIPELINE_AGENT_WRITABLE in `bench_env`."""
    return tmp / "agent-logs"


def bench_env(tmp: Path) -> dict[str, str]:
    """The integration tests' isolated environment, with the bench's own agent-log folder."""
    from tests.integration.helpers import process_env

    (tmp / "home").mkdir(exist_ok=True)
    agent_logs(tmp).mkdir(exist_ok=True)
    return process_env(tmp) | {"PIPELINE_AGENT_WRITABLE": str(agent_logs(tmp))}


SANDBOXES = ("worktree", "no-isolation", "container")


def sandbox_setup(kind: str, tmp: Path, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Starter flags and environment for running a bench's tasks in `kind` of sandbox.

    worktree: the default (namespaces and Landlock); no-isolation: Landlock alone; container:
    the Debian test image (bash and python3, tests/images.py), a container per step, the agent
    log folder mounted so the fake agents can log from inside.
    """
    if kind == "worktree":
        return [], env
    if kind == "no-isolation":
        return ["--no-isolation"], env
    from tests.images import debian_image, run_args

    logs = agent_logs(tmp)
    mounts = f"{run_args()} -v {logs}:{logs}:rw".strip()
    flags = ["--sandbox", "container", "--container-image", debian_image()]
    return flags, env | {"PIPELINE_CONTAINER_RUN_ARGS": mounts}


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    res = subprocess.run(
        ["git", *args], cwd=repo, env=env | IDENTITY, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {repo}: {res.stderr.strip()}")
    return res.stdout.strip()


def stop_server(workspace: Path, env: dict[str, str]) -> None:
    """Stop the embedded dev server a starter started for `workspace` (none: nothing to do)."""
    if not workspace.exists():
        return
    pid = server_pid(workspace)
    subprocess.run(
        [PYTHON, str(ROOT / "starter.py"), "server", "stop", "--workspace", str(workspace)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # `server stop` skips a server that no longer answers on its port: kill that one too.
    with contextlib.suppress(OSError):
        if pid is not None and b"temporal" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.killpg(pid, signal.SIGKILL)


def server_address(workspace: Path) -> str:
    """The address of the embedded server a starter started for `workspace`."""
    info = json.loads((workspace / "server.json").read_text())
    return f"127.0.0.1:{info['port']}"


def server_pid(workspace: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return int(json.loads((workspace / "server.json").read_text())["pid"])
    return None


def kill_started(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the process group of each, then SIGKILL what is left (as helpers.Procs does)."""
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in reversed(procs):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    procs.clear()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------------- repositories


def make_repo(path: Path, env: dict[str, str], files: int, commits: int) -> Path:
    """A repository on `main` with `files` files and `commits` commits, built by `git fast-import`.

    The first commit adds every file (100 to a directory); each later one changes three of them.
    The working tree is checked out, as a user's would be.
    """
    if files < 1 or commits < 1:
        raise SystemExit("a repository needs at least one file and one commit")
    path.mkdir(parents=True)
    git(path, env, "init", "-q", "-b", "main")
    names = [f"src/pkg{i // 100:03d}/file{i:05d}.txt" for i in range(files)]
    chunks: list[bytes] = []

    def data(text: str) -> None:
        raw = text.encode()
        chunks.append(b"data %d\n" % len(raw) + raw + b"\n")

    when = 1_700_000_000
    for c in range(commits):
        who = f"Bench <bench@example.invalid> {when + c * 60} +0000"
        chunks.append(f"commit refs/heads/main\nauthor {who}\ncommitter {who}\n".encode())
        data(f"commit {c + 1}\n")
        changed = range(files) if c == 0 else [(c * 7 + k * 1663) % files for k in range(3)]
        for i in changed:
            chunks.append(f"M 100644 inline {names[i]}\n".encode())
            body = f"file {i}\n" + "".join(f"line {j} of file {i}\n" for j in range(8))
            data(body + (f"changed in commit {c + 1}\n" if c else ""))
    res = subprocess.run(
        ["git", "fast-import", "--quiet"],
        cwd=path,
        env=env | IDENTITY,
        input=b"".join(chunks),
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"git fast-import failed: {res.stderr.decode(errors='replace')}")
    git(path, env, "reset", "-q", "--hard", "main")
    return path


# ---------------------------------------------------------------------------------- processes


def _machine_ticks() -> list[int]:
    """The machine's CPU time so far, by kind (the "cpu" line of /proc/stat, in ticks)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return []


@dataclass
class MachineTimes:
    """How the machine's CPUs spent a `with` block: busy (here), idle, and stolen by the host
    (other virtual machines' work on the same cores: what makes a figure noisy)."""

    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)

    def __enter__(self) -> Self:
        self.start = _machine_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = _machine_ticks()

    def report(self) -> dict[str, float] | None:
        if len(self.start) < 8 or len(self.end) < 8:
            return None
        d = [b - a for a, b in zip(self.start, self.end, strict=False)]
        tick = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal
        busy = sum(d[:3]) + sum(d[5:7])
        total = sum(d[:8]) or 1
        return {
            "busy_s": round(busy / tick, 1),
            "idle_s": round((d[3] + d[4]) / tick, 1),
            "steal_s": round(d[7] / tick, 1),
            "steal_share": round(d[7] / total, 3),
        }


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(own CPU seconds, CPU seconds of its reaped children) of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    # After the ")": state is field 0, utime 11, stime 12, cutime 13, cstime 14.
    own = (int(fields[11]) + int(fields[12])) / tick
    children = (int(fields[13]) + int(fields[14])) / tick
    return own, children


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                out += [int(p) for p in (task / "children").read_text().split()]
    return out


def tree_rss_kb(pid: int) -> int:
    """Resident memory of `pid` and all its descendants, in KiB."""
    total, todo, seen = 0, [pid], set()
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        total += _status_kb(cur, "VmRSS") or 0
        todo += _children(cur)
    return total


class Periodic:
    """`sample()` every `interval` seconds in a thread, while the `with` block runs (first at
    its start when `sample_at_start`)."""

    interval: float
    sample_at_start: ClassVar[bool] = True
    _stop: threading.Event
    _thread: threading.Thread | None

    def sample(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Self:
        if self.sample_at_start:
            self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@dataclass
class Sampler(Periodic):
    """Samples a process (memory of its tree, its peak RSS, its CPU times) in a thread."""

    pid: int
    interval: float = 0.2
    tree_peak_kb: int = 0
    hwm_kb: int = 0
    cpu: tuple[float, float] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        self.tree_peak_kb = max(self.tree_peak_kb, tree_rss_kb(self.pid))
        self.hwm_kb = max(self.hwm_kb, _status_kb(self.pid, "VmHWM") or 0)
        self.cpu = cpu_seconds(self.pid) or self.cpu


@dataclass
class DiskSampler(Periodic):
    """Peaks of a workspace's disk use, sampled in a thread: its checkouts (task worktrees and
    the parked ones in pool/), their bytes, and the bytes of the shared clones (object stores)."""

    workspace: Path
    interval: float = 2.0
    checkouts_peak: int = 0
    checkouts_peak_kb: int = 0
    clones_peak_kb: int = 0
    total_peak_kb: int = 0
    sample_at_start: ClassVar[bool] = False  # nothing is there yet
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _checkouts(self) -> list[Path]:
        found = []
        for top in (self.workspace / "worktrees", self.workspace / "pool"):
            with contextlib.suppress(OSError):
                found += [p.parent for p in top.glob("*/*/.git") if p.is_file()]
        return found

    def sample(self) -> None:
        checkouts = self._checkouts()
        sizes = du_kb([*checkouts, self.workspace / "repos", self.workspace])
        self.checkouts_peak = max(self.checkouts_peak, len(checkouts))
        self.checkouts_peak_kb = max(self.checkouts_peak_kb, sum(sizes[:-2]))
        self.clones_peak_kb = max(self.clones_peak_kb, sizes[-2])
        self.total_peak_kb = max(self.total_peak_kb, sizes[-1])

    def report(self) -> dict[str, float]:
        return {
            "checkouts_peak": self.checkouts_peak,
            "checkouts_peak_mb": round(self.checkouts_peak_kb / 1024, 1),
            "clones_peak_mb": round(self.clones_peak_kb / 1024, 1),
            "workspace_peak_mb": round(self.total_peak_kb / 1024, 1),
        }


def du_kb(paths: list[Path]) -> list[int]:
    """Each path's disk use in KiB (`du -s`, each counted alone); 0 for what is gone."""
    sizes = []
    for path in paths:
        out = subprocess.run(
            ["du", "-sk", str(path)], capture_output=True, text=True, check=False
        ).stdout.split()
        sizes.append(int(out[0]) if out and out[0].isdigit() else 0)
    return sizes


def py_spy(pid: int, out: Path, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """`py-spy record` on `pid` until it exits (raw collapsed stacks for .txt, else a flamegraph)."""
    exe = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
    if exe is None:
        log("py-spy is not installed (.venv/bin/pip install py-spy); not profiling")
        return None
    fmt = "raw" if out.suffix == ".txt" else "flamegraph"
    argv = [exe, "record", "--pid", str(pid), "--rate", "50", "--format", fmt, "-o", str(out)]
    log(f"profiling pid {pid} into {out}")
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


# ---------------------------------------------------------------------------------- histories


@dataclass
class ActivityRun:
    name: str
    scheduled: float
    started: float | None
    closed: float | None

    @property
    def queued_s(self) -> float:
        return (self.started or self.scheduled) - self.scheduled

    @property
    def run_s(self) -> float:
        if self.started is None or self.closed is None:
            return 0.0
        return self.closed - self.started


@dataclass
class History:
    """One workflow's history, reduced to what the benches read."""

    workflow_id: str
    events: int
    size_bytes: int
    input_bytes: int  # the payloads of the first event's input
    started: float
    closed: float | None
    activities: list[ActivityRun]
    children: dict[str, tuple[float, float | None]]  # child id -> (initiated, closed)
    workflow_tasks: int
    # Each workflow task's (scheduled -> started, started -> completed) seconds: the wait for a
    # worker to pick it up, and the worker's own time on it (replay, workflow code, codec).
    workflow_task_spans: list[tuple[float, float]] = field(default_factory=list)
    # A task prepared ahead: seconds from telling the run it is ready to the run's `go`.
    slot_wait_s: float = 0.0
    # Workflow tasks that timed out or failed: a replay too slow for the task timeout, a bug.
    workflow_task_timeouts: int = 0
    workflow_task_failures: int = 0


def _ts(event: Any) -> float:
    return float(event.event_time.ToMicroseconds()) / 1e6


def reduce_history(workflow_id: str, events: list[Any]) -> History:
    from temporalio.api.enums.v1 import EventType as E

    closing = {
        E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
        E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        E.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        E.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
    child_closing = {
        E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED: "child_workflow_execution_completed_event_attributes",
        E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED: "child_workflow_execution_failed_event_attributes",
        E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED: "child_workflow_execution_canceled_event_attributes",
        E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT: "child_workflow_execution_timed_out_event_attributes",
        E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED: "child_workflow_execution_terminated_event_attributes",
    }
    first = events[0]
    payloads = first.workflow_execution_started_event_attributes.input.payloads
    acts: dict[int, ActivityRun] = {}
    initiated: dict[int, tuple[str, float]] = {}
    children: dict[str, tuple[float, float | None]] = {}
    closed: float | None = None
    wfts = wft_timeouts = wft_failures = 0
    wft_at: dict[int, float] = {}  # workflow task scheduled/started event id -> its time
    spans: list[tuple[float, float]] = []
    ready_at: float | None = None
    slot_wait = 0.0
    for ev in events:
        t, kind = _ts(ev), ev.event_type
        if kind == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = ev.activity_task_scheduled_event_attributes.activity_type.name
            acts[ev.event_id] = ActivityRun(name, t, None, None)
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            acts[ev.activity_task_started_event_attributes.scheduled_event_id].started = t
        elif kind in (
            E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            E.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
            E.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
        ):
            attrs = getattr(ev, str(ev.WhichOneof("attributes")))
            acts[attrs.scheduled_event_id].closed = t
        elif kind == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            wid = ev.start_child_workflow_execution_initiated_event_attributes.workflow_id
            initiated[ev.event_id] = (wid, t)
        elif kind in child_closing:
            attrs = getattr(ev, child_closing[kind])
            wid, at = initiated[attrs.initiated_event_id]
            children[wid] = (at, t)
        elif kind == E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
            attrs = ev.signal_external_workflow_execution_initiated_event_attributes
            if attrs.signal_name == "task_ready":
                ready_at = t
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            if ev.workflow_execution_signaled_event_attributes.signal_name == "go" and ready_at:
                slot_wait += t - ready_at
                ready_at = None
        elif kind in (E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, E.EVENT_TYPE_WORKFLOW_TASK_STARTED):
            wft_at[ev.event_id] = t
        elif kind == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            wfts += 1
            done = ev.workflow_task_completed_event_attributes
            started = wft_at.get(done.started_event_id)
            scheduled = wft_at.get(done.scheduled_event_id)
            if started is not None and scheduled is not None:
                spans.append((started - scheduled, t - started))
        elif kind == E.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            wft_timeouts += 1
        elif kind == E.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            wft_failures += 1
        elif kind in closing:
            closed = t
    for wid, at in initiated.values():
        children.setdefault(wid, (at, None))
    return History(
        workflow_id=workflow_id,
        events=len(events),
        size_bytes=sum(ev.ByteSize() for ev in events),
        input_bytes=sum(p.ByteSize() for p in payloads),
        started=_ts(first),
        closed=closed,
        activities=list(acts.values()),
        children=children,
        workflow_tasks=wfts,
        workflow_task_spans=spans,
        slot_wait_s=slot_wait,
        workflow_task_timeouts=wft_timeouts,
        workflow_task_failures=wft_failures,
    )


async def _histories(address: str, only: str | None, concurrency: int) -> list[History]:
    from temporalio.client import Client

    client = await Client.connect(address)
    ids = []
    async for wf in client.list_workflows(page_size=1000):
        if only is None or wf.id == only or wf.id.startswith(only + "/"):
            ids.append((wf.id, wf.run_id))
    gate = asyncio.Semaphore(concurrency)

    async def one(wid: str, run_id: str) -> History:
        async with gate:
            hist = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
            return reduce_history(wid, list(hist.events))

    return list(await asyncio.gather(*(one(w, r) for w, r in ids)))


def fetch_histories(address: str, only: str | None = None, concurrency: int = 16) -> list[History]:
    """Every workflow on the server (or the run `only` and its children), reduced."""
    return asyncio.run(_histories(address, only, concurrency))


def activity_breakdown(children: list[History]) -> dict[str, dict[str, float]]:
    """Per activity type: p50 and p95 of its run time and of its wait in the queue, in ms."""
    runs: dict[str, list[float]] = {}
    queued: dict[str, list[float]] = {}
    for h in children:
        for a in h.activities:
            runs.setdefault(a.name, []).append(a.run_s)
            queued.setdefault(a.name, []).append(a.queued_s)
    return {
        name: {
            "count": len(runs[name]),
            "run_ms_p50": round(percentile(runs[name], 50) * 1000, 1),
            "run_ms_p95": round(percentile(runs[name], 95) * 1000, 1),
            "queue_ms_p50": round(percentile(queued[name], 50) * 1000, 1),
            "queue_ms_p95": round(percentile(queued[name], 95) * 1000, 1),
        }
        for name in sorted(runs)
    }


# ---------------------------------------------------------------------------------- git traces


def git_trace_summary(path: Path) -> dict[str, dict[str, float]]:
    """Per git command of a GIT_TRACE2_EVENT file: processes, total and p50/max wall seconds.

    Commands git started itself (fetch's upload-pack, push's receive-pack ...) are named by their
    hierarchy, e.g. "push/receive-pack", and counted apart from the pipeline's own calls.
    """
    names: dict[str, str] = {}
    argv1: dict[str, str] = {}
    elapsed: dict[str, float] = {}
    if not path.exists():
        return {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            sid, kind = ev.get("sid", ""), ev.get("event")
            if kind == "start":
                args = [a for a in ev.get("argv", [])[1:] if not a.startswith("-")]
                # Skip the `-c key=value` pairs the pipeline passes before the subcommand.
                argv1[sid] = next((a for a in args if "=" not in a), "?")
            elif kind == "cmd_name":
                names[sid] = ev.get("hierarchy") or ev.get("name", "?")
            elif kind == "exit":
                elapsed[sid] = float(ev.get("t_abs", 0.0))
    per: dict[str, list[float]] = {}
    for sid, secs in elapsed.items():
        name = names.get(sid) or argv1.get(sid, "?")
        if "/" in sid and "/" not in name:
            name = f"(child) {name}"
        per.setdefault(name, []).append(secs)
    return {
        name: {
            "count": len(v),
            "total_s": round(sum(v), 2),
            "p50_ms": round(percentile(v, 50) * 1000, 1),
            "max_ms": round(max(v) * 1000, 1),
        }
        for name, v in sorted(per.items(), key=lambda kv: -sum(kv[1]))
    }


def time_split(children: list[History]) -> dict[str, float]:
    """p50 over tasks of where a task workflow's time goes, in seconds: activities running,
    activities waiting in their queue, and the rest (workflow tasks, child start/close)."""
    run, queued, rest, wft_queued, wft_run, wft_count = [], [], [], [], [], []
    for h in children:
        if h.closed is None:
            continue
        r = sum(a.run_s for a in h.activities)
        q = sum(a.queued_s for a in h.activities)
        run.append(r)
        queued.append(q)
        rest.append(h.closed - h.started - r - q - h.slot_wait_s)
        wft_queued.append(sum(s[0] for s in h.workflow_task_spans))
        wft_run.append(sum(s[1] for s in h.workflow_task_spans))
        wft_count.append(len(h.workflow_task_spans))
    return {
        "activities_run_s_p50": round(percentile(run, 50), 3),
        "activities_queued_s_p50": round(percentile(queued, 50), 3),
        "workflow_rest_s_p50": round(percentile(rest, 50), 3),
        # Of the rest: workflow tasks waiting for the worker, and the worker's time on them.
        "workflow_tasks_p50": percentile(wft_count, 50),
        "workflow_tasks_queued_s_p50": round(percentile(wft_queued, 50), 3),
        "workflow_tasks_run_s_p50": round(percentile(wft_run, 50), 3),
    }


# ---------------------------------------------------------------------------------- stalls


def stall_report(pid: int) -> str:
    """What a stalled worker is doing: its Python stacks (py-spy dump, when installed) and any
    child that is a fork of it that never exec'ed (same command line: stuck before exec)."""
    lines = [f"worker pid {pid} made no progress; its state:"]
    exe = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
    if exe is not None:
        res = subprocess.run(
            [exe, "dump", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines.append(res.stdout[-6000:] + res.stderr[-1000:])
    else:
        lines.append("(py-spy is not installed: no stacks)")
    with contextlib.suppress(OSError):
        own = Path(f"/proc/{pid}/cmdline").read_bytes()
        for child in _children(pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/cmdline").read_bytes() == own:
                    wchan = Path(f"/proc/{child}/wchan").read_text()
                    lines.append(
                        f"child {child} is a fork of the worker that never exec'ed ({wchan})"
                    )
    return "\n".join(lines)
