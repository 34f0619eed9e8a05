"""Chaos run: a plan of many dependent tasks survives killed workers and a restarted server.

On a fresh temporary directory this builds a user repository with uncommitted work in it (a stash,
staged and unstaged edits, an untracked file) and a generated plan of `--tasks` tasks in four
batches (batch 1; then batches 2 and 3 side by side; then batch 4 after both), with task-level
`**Depends on:**` inside batches and across them. Each task's command agent sleeps a seeded random
`--sleep-min`..`--sleep-max` seconds and writes `out/<task id>.txt`.

It starts a real `temporal server start-dev` on a SQLite file and two `worker.py` processes on one
workspace, starts the run as a user would (`starter.py --detach --address ...`), and while it runs:

- kills a worker with SIGKILL `--kills` times, at random points of the run's progress (a worker
  running an agent when there is one), each time starting a replacement;
- restarts the dev server `--server-restarts` times (SIGTERM or SIGKILL, then the same port and
  database file).

Recovery of a kill is the time from the SIGKILL until the work the killed worker held is moving
again: every agent it was running has started again (the fake agents log their starts), and every
other activity the server saw it running has started its next attempt (the server's own start
time, from the pending activity or the workflow's history); a kill that held nothing counts until
the next agent start. An activity still held by a dead worker `--stall-limit` seconds after the
kill ends the run early as a failure that names it: nothing retries that activity before its own
heartbeat or start-to-close timeout.

Once the run has finished it checks: every task merged; each task's `Pipeline-Task:` trailer
exactly once on the target branch, with its file; dependencies merged before their dependants;
`git fsck` clean on the pipeline's clone and the user's repository; no worktree, task branch or
base ref left; no workflow still running; no agent process left; the workers that were not killed
still up; the user's checkout byte for byte as it was.

Progress goes to stderr; the last stdout line is one JSON object:
{"tasks", "merged", "duplicates", "lost", "kills", "server_restarts", "recovery_s_p50",
"recovery_s_max", "wall_s", "ok", "problems"}. The exit code is 0 only when every check passed.
Every process it starts is killed on exit, also on failure, Ctrl-C or SIGTERM.

    make chaos
    .venv/bin/python bench/chaos.py [--tasks 24] [--kills 3] [--server-restarts 1] [--seed 1]
        [--sleep-min 1] [--sleep-max 5] [--max-concurrent 4] [--heartbeat-timeout 5]
        [--stall-limit 90] [--timeout 300] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: examples/ and tests/ are not installed packages
    sys.path.insert(0, str(ROOT))

from tests.integration.helpers import (  # noqa: E402
    AgentRun,
    DevServer,
    Procs,
    agent_log_path,
    agent_runs,
    assert_merged_once,
    assert_no_agent_alive,
    assert_untouched,
    assert_workspace_clean,
    fsck,
    git,
    kill_stray_agents,
    make_dirty_user_repo,
    pipeline_clone,
    process_env,
    repo_snapshot,
    run_async,
    run_key_of,
    runs_per_task,
    start_worker,
    starter,
    tail,
    trailers,
    wait_finished,
    wait_for,
    write_agent,
)
from tests.temporal_env import dev_server_path  # noqa: E402

PLAN_NAME = "chaos-plan"
TARGET = f"pipeline/{PLAN_NAME}"
SUMMARY_KEYS = (
    "tasks",
    "merged",
    "duplicates",
    "lost",
    "kills",
    "server_restarts",
    "recovery_s_p50",
    "recovery_s_max",
    "wall_s",
)

# Looks up its task's sleep in the JSON map written by the bench and becomes the shared fake agent
# (exec: same pid, so the start the fake agent logs is the process the worker started).
# argv: SLEEPS_JSON FAKE_AGENT LOG TASK_ID
WRAPPER_SCRIPT = """\
import json, os, sys

sleeps, agent, log, task_id = sys.argv[1:5]
with open(sleeps) as fh:
    sleep_s = json.load(fh)[task_id]
os.execv(sys.executable, [sys.executable, agent, log, repr(sleep_s), task_id])
"""


@dataclass(frozen=True)
class ChaosOptions:
    tasks: int = 24
    kills: int = 3
    server_restarts: int = 1
    seed: int = 1
    sleep_min: float = 1.0
    sleep_max: float = 5.0
    max_concurrent: int = 4
    # Short, so a killed worker's agents are noticed and re-run within seconds (default is 30).
    heartbeat_timeout: float = 5.0
    # Longer than any heartbeat timeout the product sets (the merge's is 60 s), far shorter than
    # the 10-minute start-to-close timeouts a heartbeat-less activity would wait out.
    stall_limit: float = 90.0
    timeout: float = 300.0  # the whole run, chaos included
    workdir: Path | None = None  # where the temporary directory is made (default: the system's)
    keep: bool = False

    def validate(self) -> None:
        if self.tasks < 4:
            raise ValueError("--tasks must be >= 4 (four batches)")
        if self.kills < 0 or self.server_restarts < 0:
            raise ValueError("--kills and --server-restarts must be >= 0")
        if not 0 <= self.sleep_min <= self.sleep_max:
            raise ValueError("need 0 <= --sleep-min <= --sleep-max")
        if self.max_concurrent < 1 or self.heartbeat_timeout < 1:
            raise ValueError("need --max-concurrent >= 1 and --heartbeat-timeout >= 1")
        if self.stall_limit <= 0 or self.timeout <= 0:
            raise ValueError("need --stall-limit > 0 and --timeout > 0")


@dataclass(frozen=True)
class Pending:
    """One pending activity as the server describes it."""

    workflow_id: str
    activity_id: str
    kind: str
    started: bool
    attempt: int
    worker_pid: int | None  # of the last worker that took it
    last_started: float  # epoch seconds, 0 if never
    heartbeat_timeout_s: float
    start_to_close_s: float

    @property
    def key(self) -> tuple[str, str]:
        return self.workflow_id, self.activity_id

    @property
    def task(self) -> str:
        return self.workflow_id.rsplit("/task-", 1)[-1]

    def describe(self) -> str:
        hb = f"{self.heartbeat_timeout_s:g} s" if self.heartbeat_timeout_s else "none"
        return (
            f"{self.kind} of task {self.task} (attempt {self.attempt}, "
            f"heartbeat timeout {hb}, start-to-close {self.start_to_close_s:g} s)"
        )


@dataclass(frozen=True)
class ServerView:
    closed: bool
    pending: list[Pending]


@dataclass
class Kill:
    at: float  # wall clock (time.time), the clock the fake agents log with
    worker: str
    pid: int
    interrupted: list[str]  # tasks whose agent ran on the killed worker
    held: list[Pending] = field(default_factory=list)  # activities the server saw it running
    # When each started again elsewhere (server clock); None: it closed between two looks, the
    # time is read from its workflow's history afterwards.
    released: dict[tuple[str, str], float | None] = field(default_factory=dict)
    replacement_serving: float = 0.0
    recovery_s: float | None = None

    def unreleased(self) -> list[Pending]:
        return [p for p in self.held if p.key not in self.released]


@dataclass
class Restart:
    at: float
    signal: str
    down_s: float
    back: float = 0.0


@dataclass
class PlanSpec:
    text: str
    ids: list[str]
    deps: dict[str, list[str]]  # task -> the tasks it must come after (batch and task deps)


def make_plan(n: int) -> PlanSpec:
    """Four batches: 1; 2 and 3 both after 1 (side by side); 4 after 2 and 3. Inside a batch every
    third task waits for the one before it; the first task of batch 3 also waits for task 2.1,
    which its batch does not depend on."""
    sizes = [n // 4 + (1 if b < n % 4 else 0) for b in range(4)]
    batch_ids = [[f"{b + 1}.{i}" for i in range(1, size + 1)] for b, size in enumerate(sizes)]
    batch_deps = {1: [], 2: [1], 3: [1], 4: [2, 3]}
    dep_text = {1: "None", 2: "Batch 1", 3: "Batch 1", 4: "Batches 2 and 3"}
    lines = [f"# {PLAN_NAME}", ""]
    deps: dict[str, list[str]] = {}
    for b, ids in enumerate(batch_ids, start=1):
        lines += [f"## Batch {b}: Chaos batch {b}", f"**Dependencies:** {dep_text[b]}", ""]
        before = [t for d in batch_deps[b] for t in batch_ids[d - 1]]
        for i, tid in enumerate(ids, start=1):
            own = [ids[i - 2]] if i % 3 == 0 else []
            if b == 3 and i == 1:
                own.append("2.1")
            deps[tid] = before + own
            lines += [
                f"### Task {tid}: chaos file {tid}",
                "**Files:**",
                f"- Create: `out/{tid}.txt`",
                "**Verification:**",
                f"- `grep -qx {tid} out/{tid}.txt`",
            ]
            if own:
                lines.append("**Depends on:** " + ", ".join(f"Task {d}" for d in own))
            lines.append("")
    return PlanSpec("\n".join(lines), [t for ids in batch_ids for t in ids], deps)


def epoch(ts: Any) -> float:
    """A protobuf Timestamp as epoch seconds (0 when unset)."""
    return float(ts.seconds) + float(ts.nanos) / 1e9


def ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # comm may hold spaces and parentheses


async def _server_view(address: str, workflow_id: str) -> ServerView | None:
    """Whether the run has closed, and the pending activities of it and its open task workflows;
    None when the server does not answer (it may be restarting)."""
    from temporalio.api.enums.v1 import PendingActivityState
    from temporalio.client import Client, WorkflowExecutionStatus

    def seconds(opts: Any, name: str) -> float:
        return getattr(opts, name).ToTimedelta().total_seconds() if opts.HasField(name) else 0.0

    try:
        client = await asyncio.wait_for(Client.connect(address), timeout=5)
        desc = await asyncio.wait_for(client.get_workflow_handle(workflow_id).describe(), 5)
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return ServerView(True, [])
        described = [(workflow_id, desc)]
        for child in desc.raw_description.pending_children:
            handle = client.get_workflow_handle(child.workflow_id, run_id=child.run_id)
            described.append((child.workflow_id, await asyncio.wait_for(handle.describe(), 5)))
    except Exception:
        return None
    pending = []
    for wid, d in described:
        for pa in d.raw_description.pending_activities:
            pid = pa.last_worker_identity.partition("@")[0]
            pending.append(
                Pending(
                    workflow_id=wid,
                    activity_id=pa.activity_id,
                    kind=pa.activity_type.name,
                    started=pa.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
                    attempt=pa.attempt,
                    worker_pid=int(pid) if pid.isdigit() else None,
                    last_started=epoch(pa.last_started_time),
                    heartbeat_timeout_s=seconds(pa.activity_options, "heartbeat_timeout"),
                    start_to_close_s=seconds(pa.activity_options, "start_to_close_timeout"),
                )
            )
    return ServerView(False, pending)


async def _resumed_at(address: str, held: Pending) -> float | None:
    """From the history of the held activity's workflow: when its next attempt started, or when
    it closed if the attempt the dead worker held was its last."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client

    client = await asyncio.wait_for(Client.connect(address), timeout=5)
    history = await client.get_workflow_handle(held.workflow_id).fetch_history()
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_id == held.activity_id
    }
    closing = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
    }
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = e.activity_task_started_event_attributes
            if attrs.scheduled_event_id in scheduled and attrs.attempt > held.attempt:
                return epoch(e.event_time)  # the last attempt's start
        elif (
            e.event_type in closing
            and getattr(e, closing[e.event_type]).scheduled_event_id in scheduled
        ):
            return epoch(e.event_time)
    return None


@dataclass
class Chaos:
    """One chaos run in its own temporary directory."""

    opts: ChaosOptions
    tmp: Path
    procs: Procs = field(default_factory=Procs)
    t0: float = field(default_factory=time.monotonic)
    problems: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    closed: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.opts.seed)
        self.env = process_env(self.tmp)
        self.server = DevServer(self.procs, self.tmp, self.env)
        self.workspace = self.tmp / "ws"
        # Outside the temporary directory: the one place the confined agents may write besides
        # their worktree.
        self.log = agent_log_path(self.tmp)
        self.spec = make_plan(self.opts.tasks)
        self.worker_count = 0

    # ------------------------------------------------------------------------------ reporting

    def say(self, msg: str) -> None:
        print(f"[chaos {time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def problem(self, msg: str) -> None:
        self.problems.append(msg)
        self.say(f"PROBLEM {msg[:400]}")

    def logs(self) -> str:
        names = sorted(p.name for p in self.tmp.glob("*.log"))
        return "\n".join(tail(self.tmp / n) for n in names)

    def check(self, what: str, fn: Callable[[], object]) -> None:
        """Run one check; a failure is recorded (with its evidence) and the others still run."""
        try:
            fn()
        except AssertionError as exc:
            self.problem(f"{what}: {str(exc).strip()[:1500]}")

    # ------------------------------------------------------------------------------ set-up

    def setup(self) -> None:
        self.repo = make_dirty_user_repo(self.tmp / "repo")
        self.before = repo_snapshot(self.repo, TARGET)
        self.plan = self.tmp / f"{PLAN_NAME}.md"
        self.plan.write_text(self.spec.text)
        self.sleeps = {
            tid: round(self.rng.uniform(self.opts.sleep_min, self.opts.sleep_max), 2)
            for tid in self.spec.ids
        }
        sleeps_file = self.tmp / "sleeps.json"
        sleeps_file.write_text(json.dumps(self.sleeps))
        wrapper = self.tmp / "chaos_agent.py"
        wrapper.write_text(WRAPPER_SCRIPT)
        agent = write_agent(self.tmp)
        argv = [sys.executable, str(wrapper), str(sleeps_file), str(agent), str(self.log)]
        self.command = shlex.join([*argv, "{task_id}"])
        self.say(
            f"{len(self.spec.ids)} tasks in 4 batches, agents sleep "
            f"{sum(self.sleeps.values()):.0f} s in all, workdir {self.tmp}"
        )

    def start_worker(self) -> tuple[str, subprocess.Popen[bytes]]:
        self.worker_count += 1
        name = f"worker-{self.worker_count}"
        proc = start_worker(
            self.procs, self.server.address, self.workspace, self.tmp / f"{name}.log", self.env
        )
        self.workers[name] = proc
        return name, proc

    def start_run(self) -> str:
        args = [
            *("--plan", str(self.plan), "--repo", str(self.repo)),
            *("--address", self.server.address, "--workspace", str(self.workspace)),
            *("--agent", "command", "--agent-command", self.command),
            *("--max-concurrent", str(self.opts.max_concurrent)),
            *("--heartbeat-timeout", f"{self.opts.heartbeat_timeout:g}"),
            *("--detach", "--json"),
        ]
        res = starter(args, self.env, self.tmp)
        if res.returncode != 0:
            raise AssertionError(f"starter --detach exited {res.returncode}: {res.stderr[-2000:]}")
        started = json.loads(res.stdout.strip().splitlines()[-1])
        if started["target_branch"] != TARGET:
            raise AssertionError(f"target {started['target_branch']!r}, expected {TARGET!r}")
        return str(started["workflow_id"])

    # ------------------------------------------------------------------------------ chaos

    def view(self, workflow_id: str) -> ServerView | None:
        return run_async(lambda: _server_view(self.server.address, workflow_id))

    def running_agents(self) -> dict[str, list[AgentRun]]:
        """Live worker name -> the agents it is running now."""
        by_pid = {p.pid: name for name, p in self.workers.items() if name not in self.killed}
        out: dict[str, list[AgentRun]] = {name: [] for name in by_pid.values()}
        for run in agent_runs(self.log):
            pid = run.host_pid() if run.end is None else None
            # Its worker is an ancestor: the sandbox (bubblewrap, twice) stands between them.
            for _ in range(4):
                pid = ppid(pid) if pid is not None else None
                if pid in by_pid:
                    out[by_pid[pid]].append(run)
                    break
        return out

    def kill_worker(self, workflow_id: str) -> None:
        # Aim at a worker that is running an agent, so the kill interrupts work in flight.
        busy: dict[str, list[AgentRun]] = {}
        give_up = time.monotonic() + 15
        while not busy and time.monotonic() < give_up:
            busy = {n: runs for n, runs in self.running_agents().items() if runs}
            if not busy:
                time.sleep(0.1)
        live = sorted(n for n in self.workers if n not in self.killed)
        name = self.rng.choice(sorted(busy)) if busy else self.rng.choice(live)
        proc = self.workers[name]
        kill = Kill(time.time(), name, proc.pid, sorted(r.task_id for r in busy.get(name, [])))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.killed.add(name)
        self.kills.append(kill)
        # The server goes on showing what the dead worker had started until each one times out.
        view = None
        for _ in range(10):
            view = self.view(workflow_id)
            if view is not None:
                break
            time.sleep(0.5)
        if view is not None:
            kill.held = [p for p in view.pending if p.started and p.worker_pid == kill.pid]
        held = "; ".join(p.describe() for p in kill.held) or "nothing"
        self.say(
            f"kill #{len(self.kills)}: SIGKILL {name} (pid {proc.pid}), its agents: "
            f"{', '.join(kill.interrupted) or 'none'}; held: {held}"
        )
        new, new_proc = self.start_worker()
        kill.replacement_serving = time.time()
        self.say(f"replacement {new} (pid {new_proc.pid}) serving after {self.since(kill.at)} s")

    def restart_server(self) -> None:
        sig = self.rng.choice([signal.SIGTERM, signal.SIGKILL])
        down = round(self.rng.uniform(1.0, 3.0), 2)
        restart = Restart(time.time(), sig.name, down)
        self.server.stop(sig)
        self.say(f"server restart #{len(self.restarts) + 1}: {sig.name}, down for {down:g} s")
        time.sleep(down)
        self.server.start()  # same port, same database file
        restart.back = time.time()
        self.restarts.append(restart)
        self.say(f"server serving again after {self.since(restart.at)} s")

    @staticmethod
    def since(wall: float) -> str:
        return f"{time.time() - wall:.1f}"

    def finished_tasks(self) -> int:
        return len({r.task_id for r in agent_runs(self.log) if r.end is not None})

    def track_held(self, view: ServerView) -> str | None:
        """Mark the killed workers' activities that have been handed on; a description of one
        still held past the stall limit, if any."""
        now = time.time()
        current = {p.key: p for p in view.pending}
        for k, kill in enumerate(self.kills, start=1):
            for p in kill.unreleased():
                q = current.get(p.key)
                if q is None:
                    kill.released[p.key] = None
                elif q.attempt > p.attempt and q.started:
                    kill.released[p.key] = q.last_started
                elif now - kill.at > self.opts.stall_limit:
                    where = (
                        f"still held by {kill.worker}"
                        if q.attempt == p.attempt
                        else f"attempt {q.attempt} not started"
                    )
                    timeout = (
                        f"heartbeat timeout ({p.heartbeat_timeout_s:g} s)"
                        if p.heartbeat_timeout_s
                        else f"start-to-close timeout ({p.start_to_close_s:g} s)"
                    )
                    return (
                        f"stalled: {p.describe()} {where}, {now - kill.at:.0f} s after "
                        f"{kill.worker} was SIGKILLed (kill #{k}); nothing retries it before its "
                        f"{timeout}"
                    )
        return None

    def drive(self, workflow_id: str, deadline: float) -> None:
        """Fire the kills and restarts, in random order, each at a random point of the run's
        progress (tasks whose agent has finished), and follow the run until it closes."""
        events = ["kill"] * self.opts.kills + ["restart"] * self.opts.server_restarts
        self.rng.shuffle(events)
        n = len(self.spec.ids)
        # Within the first ~70% of the work, so the run is still going for the last one; apart
        # from each other while there are enough tasks for that.
        span = range(max(1, math.ceil(0.05 * n)), max(2, math.floor(0.7 * n) + 1))
        if len(events) <= len(span):
            points = sorted(self.rng.sample(span, len(events)))
        else:
            points = sorted(self.rng.choice(span) for _ in events)
        schedule = ", ".join(f"{e} at {p}/{n}" for e, p in zip(events, points, strict=True))
        self.say(f"chaos plan: {schedule or 'nothing'}")
        last_poll = last_report = 0.0
        reported = -1
        while True:
            now = time.monotonic()
            if now > deadline:
                view = self.view(workflow_id)
                still = "; ".join(p.describe() for p in view.pending) if view else "unknown"
                self.problem(
                    f"timed out after {self.opts.timeout:g} s: {len(events)} chaos events left, "
                    f"pending activities: {still}"
                )
                return
            done = self.finished_tasks()
            if done != reported and now - last_report > 5:
                self.say(f"progress: {done}/{n} agents finished")
                reported, last_report = done, now
            if events and done >= points[0]:
                time.sleep(self.rng.uniform(0.0, 1.5))  # not always right at a task boundary
                event, _ = events.pop(0), points.pop(0)
                if event == "kill":
                    self.kill_worker(workflow_id)
                else:
                    self.restart_server()
                continue
            # Often while a killed worker's activities are still to be handed on: they time
            # the recovery.
            unreleased = any(k.unreleased() for k in self.kills)
            if now - last_poll >= (0.5 if unreleased else 2.0):
                last_poll = now
                view = self.view(workflow_id)
                if view is not None:
                    stalled = self.track_held(view)
                    if stalled:
                        self.problem(stalled)
                        return
                    if view.closed:
                        self.closed = True
                        if events:
                            self.say(f"the run closed before the chaos events {events}")
                        return
            time.sleep(0.2)

    def measure_recovery(self) -> None:
        runs = agent_runs(self.log)

        def next_start(after: float, task: str | None = None) -> float | None:
            starts = [r.start for r in runs if r.start > after and task in (None, r.task_id)]
            return min(starts) if starts else None

        for k, kill in enumerate(self.kills, start=1):
            resumed: dict[str, float | None] = {
                f"agent {t}": next_start(kill.at, t) for t in kill.interrupted
            }
            for p in kill.held:
                if p.kind == "run_agent" and p.task in kill.interrupted:
                    continue  # the agent's own restart says when that work resumed
                if p.key in kill.released and kill.released[p.key] is None:
                    kill.released[p.key] = run_async(partial(_resumed_at, self.server.address, p))
                resumed[p.describe()] = kill.released.get(p.key)
            if not resumed:
                resumed = {"any agent": next_start(kill.at)}
            missing = [what for what, at in resumed.items() if at is None]
            if missing:
                if self.closed:  # else the stall or time-out is the problem, reported already
                    self.problem(
                        f"recovery: after kill #{k} ({kill.worker}) never resumed: {missing}"
                    )
                else:
                    self.say(f"kill #{k}: {kill.worker}, never resumed: {missing}")
                continue
            kill.recovery_s = round(
                max(at for at in resumed.values() if at is not None) - kill.at, 2
            )
            self.say(
                f"kill #{k}: {kill.worker}, agents {kill.interrupted or 'none'}, "
                f"{len(kill.held)} activities held; replacement serving after "
                f"{kill.replacement_serving - kill.at:.1f} s; work resumed after {kill.recovery_s} s"
            )
        for r, restart in enumerate(self.restarts, start=1):
            start = next_start(restart.back)
            after = "never" if start is None else f"{start - restart.at:.1f} s"
            self.say(
                f"server restart #{r} ({restart.signal}, down {restart.down_s:g} s): serving "
                f"after {restart.back - restart.at:.1f} s, next agent start after {after}"
            )

    # ------------------------------------------------------------------------------ checks

    def running_workflows(self) -> list[Any]:
        argv = [
            *(dev_server_path(), "workflow", "list", "--address", self.server.address),
            *("--query", 'ExecutionStatus="Running"', "--output", "json"),
        ]
        res = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if res.returncode != 0:
            raise AssertionError(f"temporal workflow list failed: {res.stderr[-1000:]}")
        out = res.stdout.strip()
        if not out or out == "null":
            return []
        listed = json.loads(out)
        return listed if isinstance(listed, list) else [listed]

    def status(self, workflow_id: str) -> dict[str, Any] | None:
        """The run's status as `starter.py status --json` gives it; None if it does not answer."""
        args = ["status", workflow_id, "--json", "--address", self.server.address]
        res = starter(args, self.env, self.tmp, 60)
        return dict(json.loads(res.stdout)) if res.returncode == 0 else None

    def verify(self, workflow_id: str, result: dict[str, Any] | None) -> dict[str, int]:
        ids, key = self.spec.ids, run_key_of(workflow_id)
        statuses = {t["id"]: t["status"] for t in (result or {}).get("tasks", [])}
        has_target = bool(git(self.repo, "rev-parse", "--verify", "-q", TARGET, check=False))
        found = trailers(self.repo, TARGET) if has_target else []
        counts = {tid: found.count(f"Pipeline-Task: {key}/{tid}") for tid in ids}
        merged = [t for t in ids if statuses.get(t) == "merged" and counts[t] >= 1]
        duplicates = [t for t in ids if counts[t] > 1]
        lost = [t for t in ids if t not in merged]
        summary = {"merged": len(merged), "duplicates": len(duplicates), "lost": len(lost)}
        if duplicates:
            self.problem(f"merged more than once: {duplicates}")

        def outcome() -> None:
            assert result is not None, "no final result"
            errors = {t["id"]: t.get("error") for t in result.get("tasks", [])}
            not_merged = {t: f"{s}: {errors.get(t)}" for t, s in statuses.items() if s != "merged"}
            assert set(statuses) == set(ids) and not not_merged, f"not merged: {not_merged}"
            assert result["status"] == "completed", f"run status {result['status']}"
            assert not lost, f"not on {TARGET}: {lost}"
            tip = git(self.repo, "rev-parse", f"refs/heads/{TARGET}")
            assert result["target_commit"] == tip, (result["target_commit"], tip)

        def order() -> None:
            # Oldest first: a dependant is rebased onto a tip that already holds its dependencies.
            pos = {ln.rsplit("/", 1)[1]: i for i, ln in enumerate(reversed(found))}
            wrong = [
                (t, d)
                for t, ds in self.spec.deps.items()
                for d in ds
                if t in pos and pos.get(d, len(pos)) > pos[t]
            ]
            assert not wrong, f"merged before their dependencies (task, dependency): {wrong}"

        def no_workflow_running() -> None:
            # Visibility is written a moment after a workflow closes.
            wait_for(
                lambda: not self.running_workflows(),
                15,
                "no workflow to be running",
                interval=0.5,
                on_fail=lambda: json.dumps(self.running_workflows())[:1500],
            )

        def workers_survived() -> None:
            dead = [
                n for n, p in self.workers.items() if n not in self.killed and p.poll() is not None
            ]
            assert not dead, f"workers died without being killed: {dead}"

        # What a run that did not finish cannot be held to is left out: its problem is recorded.
        if self.closed:
            self.check("outcome", outcome)
            self.check("merged once", lambda: assert_merged_once(self.repo, TARGET, key, ids))
            self.check("dependency order", order)
            self.check(
                "fsck pipeline clone", lambda: fsck(pipeline_clone(self.workspace, self.repo))
            )
            self.check(
                "workspace clean", lambda: assert_workspace_clean(self.workspace, self.repo, key)
            )
            self.check("no workflow running", no_workflow_running)
            self.check("no agent left", lambda: assert_no_agent_alive(self.log))
        self.check("workers survived", workers_survived)
        self.check("fsck user repo", lambda: fsck(self.repo))
        self.check(
            "user checkout untouched",
            lambda: assert_untouched(self.before, repo_snapshot(self.repo, TARGET)),
        )
        reruns = {t: n for t, n in runs_per_task(self.log).items() if n > 1}
        self.say(f"tasks whose agent ran more than once: {reruns or 'none'}")
        return summary

    # ------------------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        counts = {"merged": 0, "duplicates": 0, "lost": self.opts.tasks}
        try:
            self.setup()
            self.server.start()
            self.say(f"dev server on {self.server.address}")
            for _ in range(2):
                name, proc = self.start_worker()
                self.say(f"{name} (pid {proc.pid}) serving")
            workflow_id = self.start_run()
            self.say(f"run {workflow_id} started")
            self.drive(workflow_id, self.t0 + self.opts.timeout)
            if self.closed:
                result: dict[str, Any] | None = wait_finished(
                    workflow_id, self.server.address, self.env, self.tmp, 60
                )
            else:
                result = self.status(workflow_id)
            self.say(
                f"run {'finished' if self.closed else 'NOT finished'}: "
                f"{(result or {}).get('status')}"
            )
            self.measure_recovery()
            counts = self.verify(workflow_id, result)
        except AssertionError as exc:
            self.problem(f"run: {str(exc).strip()[:3000]}")
            self.say(self.logs()[-6000:])
        if len(self.kills) < self.opts.kills:
            self.problem(f"only {len(self.kills)} of {self.opts.kills} kills happened")
        if len(self.restarts) < self.opts.server_restarts:
            self.problem(
                f"only {len(self.restarts)} of {self.opts.server_restarts} server restarts happened"
            )
        recoveries = [k.recovery_s for k in self.kills if k.recovery_s is not None]
        return {
            "tasks": len(self.spec.ids),
            **counts,
            "kills": len(self.kills),
            "server_restarts": len(self.restarts),
            "recovery_s_p50": round(statistics.median(recoveries), 2) if recoveries else None,
            "recovery_s_max": max(recoveries) if recoveries else None,
            "wall_s": round(time.monotonic() - self.t0, 1),
            "ok": not self.problems,
            "problems": self.problems,
        }

    def close(self) -> None:
        self.procs.close()  # the workers first: a stopped worker starts no new agent
        stray = kill_stray_agents(self.log)
        if stray:
            self.say(f"killed stray agents at exit: {stray}")


def run_chaos(opts: ChaosOptions) -> dict[str, Any]:
    """One chaos run; the summary (SUMMARY_KEYS, `ok`, `problems`). Every process it started is
    gone when it returns or raises; its directory too, unless `opts.keep`."""
    opts.validate()
    if opts.workdir is not None:
        opts.workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="chaos-", dir=opts.workdir)).resolve()
    chaos = Chaos(opts, tmp)
    try:
        return chaos.run()
    finally:
        chaos.close()
        if opts.keep:
            chaos.say(f"kept {tmp} and the agents' log {chaos.log}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(chaos.log.parent, ignore_errors=True)


def exit_code(summary: dict[str, Any]) -> int:
    return 0 if summary["ok"] else 1


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through run_chaos's clean-up


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosOptions()
    ap = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=defaults.tasks)
    ap.add_argument("--kills", type=int, default=defaults.kills, help="workers SIGKILLed")
    ap.add_argument("--server-restarts", type=int, default=defaults.server_restarts)
    ap.add_argument("--seed", type=int, default=defaults.seed, help="agent sleeps and chaos")
    ap.add_argument("--sleep-min", type=float, default=defaults.sleep_min)
    ap.add_argument("--sleep-max", type=float, default=defaults.sleep_max)
    ap.add_argument("--max-concurrent", type=int, default=defaults.max_concurrent)
    ap.add_argument("--heartbeat-timeout", type=float, default=defaults.heartbeat_timeout)
    ap.add_argument(
        "--stall-limit",
        type=float,
        default=defaults.stall_limit,
        help="seconds a dead worker may hold an activity before the run counts as stuck",
    )
    ap.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds in all")
    ap.add_argument("--workdir", type=Path, default=None, help="parent of the temporary dir")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    opts = ChaosOptions(
        tasks=args.tasks,
        kills=args.kills,
        server_restarts=args.server_restarts,
        seed=args.seed,
        sleep_min=args.sleep_min,
        sleep_max=args.sleep_max,
        max_concurrent=args.max_concurrent,
        heartbeat_timeout=args.heartbeat_timeout,
        stall_limit=args.stall_limit,
        timeout=args.timeout,
        workdir=args.workdir,
        keep=args.keep,
    )
    try:
        opts.validate()
    except ValueError as exc:
        ap.error(str(exc))
    signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = run_chaos(opts)
    except KeyboardInterrupt:
        print("chaos: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    for problem in summary["problems"]:
        print(f"problem: {problem}", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
