"""Orchestration overhead per task, and throughput, on a repository of realistic size.

A repository of --files files and --commits commits is generated (`git fast-import`), and a plan of
--tasks independent tasks runs on it through `starter.py --json` (embedded dev server, in-process
worker). Each task's agent does nothing but write `out/<task id>.txt`: the `command` agent runs a
bash script that logs its own start and end (outside the repository, in the one directory confined
agents may write to besides their worktree); `--agent literal` writes the file from the plan's code
block inside the worker instead. Each task has one verification command (`test -s out/<id>.txt`)
unless --no-verify.

Per task, from the run's result and its Temporal histories:
  overhead_s  the task workflow's duration (TaskResult.duration_s) minus the agent's own run time:
              claim, worktree, commit, verify, merge (waiting for the target included), cleanup
              and every Temporal round trip;
  slot_s      the same, seen from the plan workflow: child initiated -> child closed event, minus
              the agent.
Tasks that did not merge are counted in "failures" (by error) and left out of the overhead
figures. tasks_per_min counts every task over the plan workflow's own span (started -> closed
events); wall_s is the starter invocation until it exits (includes starting the dev server).
"time_split" says where a task workflow's time goes (activities running, waiting in their queue,
the rest: workflow tasks and signals); "breakdown" gives each activity's run time and queue wait
(p50/p95, ms); "cpu_s" the CPU seconds of the worker process (the starter), its children (git,
agents, checks) and the dev server. Goals: overhead p50 <= 0.3 s, >= 120 tasks per minute.
Figures are noisy on a busy machine; at --max-concurrent 1 the overhead is the orchestration's
own, above that it includes queueing for the merge.

Diagnostics: --py-spy profiles the worker for the whole run; --git-trace records every git process
(GIT_TRACE2_EVENT) and adds "git": processes, total and p50/max seconds per git command. A run in
which no task changes state for --stall-timeout seconds fails with the worker's stacks.

.venv/bin/python bench/overhead.py [--tasks 200] [--files 5000] [--commits 200] \
    [--max-concurrent 8] [--prepare-ahead N] [--max-checkouts N] [--agent command|literal] [--sandbox worktree|no-isolation|container]
    [--no-verify] [--py-spy OUT.svg|OUT.txt] \
    [--git-trace FILE] [--stall-timeout 180] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PYTHON,
    SANDBOXES,
    DiskSampler,
    MachineTimes,
    Sampler,
    activity_breakdown,
    agent_logs,
    bench_env,
    cpu_seconds,
    exit_on_sigterm,
    fetch_histories,
    git,
    git_trace_summary,
    kill_started,
    log,
    make_repo,
    percentile,
    py_spy,
    rounded,
    sandbox_setup,
    server_address,
    server_pid,
    stall_report,
    stop_server,
    temp_dir,
    time_split,
)

# argv: LOG TASK_ID. bash's $EPOCHREALTIME costs no process; one append per run.
AGENT_SH = """\
start=$EPOCHREALTIME
mkdir -p out
printf '%s\\n' "$2" > "out/$2.txt"
printf '%s %s %s %s\\n' "$2" "$$" "$start" "$EPOCHREALTIME" >> "$1"
"""

GOAL_P50_S = 0.3
GOAL_TASKS_PER_MIN = 120.0


def task_ids(n: int) -> list[str]:
    return [f"1.{i}" for i in range(1, n + 1)]


def generate(ids: list[str], verify: bool) -> str:
    """One batch of independent tasks, each creating its own file (a code block for `literal`)."""
    out = ["# Overhead bench", "", "## Batch 1: One file each", "**Dependencies:** None", ""]
    for tid in ids:
        out += [
            f"### Task {tid}: file {tid}",
            "**Files:**",
            f"- Create: `out/{tid}.txt`",
            "**Implementation:**",
            f"Create `out/{tid}.txt`:",
            "```text",
            tid,
            "```",
        ]
        if verify:
            out += ["**Verification:**", f"- `test -s out/{tid}.txt`"]
        out.append("")
    return "\n".join(out) + "\n"


def agent_seconds(path: Path) -> dict[str, float]:
    """Task id -> the agent's own run time; SystemExit if a task's agent ran other than once."""
    runs: dict[str, list[float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            tid, _pid, start, end = line.split()
            runs.setdefault(tid, []).append(float(end) - float(start))
    twice = {t: len(r) for t, r in runs.items() if len(r) != 1}
    if twice:
        raise SystemExit(f"agents ran more than once: {twice}")
    return {t: r[0] for t, r in runs.items()}


def watch(proc: subprocess.Popen[bytes], log: Path, timeout: float, stall_s: float) -> int:
    """Wait for the starter; fail with its stacks if its progress log (a line per task status
    change) stops growing for `stall_s` seconds."""
    deadline = time.monotonic() + timeout
    size, changed = -1, time.monotonic()
    while True:
        try:
            return proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        now = log.stat().st_size if log.exists() else 0
        if now != size:
            size, changed = now, time.monotonic()
        elif time.monotonic() - changed > stall_s:
            raise SystemExit(f"the run stalled for {stall_s:g} s\n{stall_report(proc.pid)}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the run took longer than {timeout:g} s")


def run(
    args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    env = bench_env(tmp)
    ids = task_ids(args.tasks)
    t0 = time.monotonic()
    repo = make_repo(tmp / "repo", env, args.files, args.commits)
    log(f"repository: {args.files} files, {args.commits} commits in {time.monotonic() - t0:.1f} s")
    plan = tmp / "overhead-bench.md"
    plan.write_text(generate(ids, not args.no_verify))
    workspace = tmp / "workspace"
    agent_log = agent_logs(tmp) / "agents.log"
    argv = [
        *(PYTHON, str(ROOT / "starter.py")),
        *("--plan", str(plan), "--repo", str(repo), "--workspace", str(workspace)),
        *("--max-concurrent", str(args.max_concurrent), "--json"),
        *(("--prepare-ahead", str(args.prepare_ahead)) if args.prepare_ahead is not None else ()),
        *(("--max-checkouts", str(args.max_checkouts)) if args.max_checkouts is not None else ()),
    ]
    if args.agent == "command":
        script = agent_logs(tmp) / "agent.sh"  # beside its log: a container sees that folder
        script.write_text(AGENT_SH)
        command = shlex.join(["bash", str(script), str(agent_log), "{task_id}"])
        argv += ["--agent", "command", "--agent-command", command]
    else:
        argv += ["--agent", "literal"]
    flags, env = sandbox_setup(args.sandbox, tmp, env)
    argv += flags
    out_path, err_path = tmp / "starter.out", tmp / "starter.err"
    trace = Path(args.git_trace).resolve() if args.git_trace else None
    log(
        f"running {args.tasks} tasks, --max-concurrent {args.max_concurrent}, agent "
        f"{args.agent}, sandbox {args.sandbox}"
    )
    try:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            t0 = time.monotonic()
            run_env = env | ({"GIT_TRACE2_EVENT": str(trace)} if trace else {})
            proc = subprocess.Popen(
                argv, cwd=tmp, env=run_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )  # fmt: skip
            procs.append(proc)
            if args.py_spy:
                spy = py_spy(proc.pid, Path(args.py_spy).resolve(), env)
                if spy is not None:
                    procs.append(spy)
            with (
                Sampler(proc.pid, interval=0.5) as worker,
                DiskSampler(workspace, interval=args.disk_interval) as disk,
                MachineTimes() as machine,
            ):
                code = watch(proc, err_path, args.timeout, args.stall_timeout)
            wall = time.monotonic() - t0
        stdout = out_path.read_text()
        try:
            result = json.loads(stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            result = None
        if code not in (0, 1) or not isinstance(result, dict):
            raise SystemExit(
                f"starter exited {code}\n{stdout[-3000:]}\n{err_path.read_text()[-3000:]}"
            )
        # A task that did not merge is a finding, reported; what merged must be on the target.
        merged = {t["id"] for t in result["tasks"] if t["status"] == "merged"}
        files = git(repo, env, "ls-tree", "-r", "--name-only", result["target_branch"], "out")
        if sorted(files.splitlines()) != sorted(f"out/{t}.txt" for t in merged):
            raise SystemExit(f"{result['target_branch']} does not hold exactly the merged files")
        server_cpu = None
        if (pid := server_pid(workspace)) is not None:
            server_cpu = cpu_seconds(pid)
        log(f"run finished in {wall:.1f} s; reading histories")
        wid = result["workflow_id"]
        histories = fetch_histories(server_address(workspace), only=wid)
    finally:
        kill_started(procs)
        stop_server(workspace, env)

    plan_hist = next(h for h in histories if h.workflow_id == wid)
    children = [h for h in histories if h.workflow_id != wid]
    agent_s = agent_seconds(agent_log) if args.agent == "command" else {}
    if args.agent == "command" and sorted(agent_s) != sorted(ids):
        raise SystemExit(f"agent log lists {len(agent_s)} tasks, expected {len(ids)}")
    failures: dict[str, int] = {}
    for t in result["tasks"]:
        if t["status"] != "merged":
            why = f"{t['status']}: {(t['error'] or '')[:120]}"
            failures[why] = failures.get(why, 0) + 1
    # Overhead of the tasks that merged (a failed one skips steps, or retried them to no end).
    # A task prepared ahead waits for a slot: that is the previous task's work, not overhead.
    waits = {h.workflow_id.rsplit("/task-", 1)[1]: h.slot_wait_s for h in children}
    overhead = [
        float(t["duration_s"]) - agent_s.get(t["id"], 0.0) - waits.get(t["id"], 0.0)
        for t in result["tasks"]
        if t["status"] == "merged"
    ]
    slot = []
    for child_id, (initiated, closed) in plan_hist.children.items():
        tid = child_id.rsplit("/task-", 1)[1]
        if closed is not None and tid in merged:
            slot.append(closed - initiated - agent_s.get(tid, 0.0) - waits.get(tid, 0.0))
    span = (plan_hist.closed or plan_hist.started) - plan_hist.started
    tasks_per_min = args.tasks / span * 60 if span > 0 else None
    cpu = worker.cpu or (0.0, 0.0)
    p50 = percentile(overhead, 50)
    return {
        "tasks": args.tasks,
        "sandbox": args.sandbox,
        "merged": len(merged),
        "failures": failures,
        "files": args.files,
        "commits": args.commits,
        "concurrency": args.max_concurrent,
        "prepare_ahead": args.prepare_ahead,
        "max_checkouts": args.max_checkouts,
        "agent": args.agent,
        "verify": not args.no_verify,
        "overhead_s_p50": rounded(p50),
        "overhead_s_p95": rounded(percentile(overhead, 95)),
        "overhead_s_max": rounded(max(overhead, default=0.0)),
        "slot_s_p50": rounded(percentile(slot, 50)),
        "slot_s_p95": rounded(percentile(slot, 95)),
        "agent_s_p50": rounded(percentile(list(agent_s.values()), 50), 4),
        "tasks_per_min": rounded(tasks_per_min, 1),
        "run_span_s": rounded(span),
        "wall_s": rounded(wall),
        "worker_peak_mb": round(worker.hwm_kb / 1024, 1),
        # The workspace at its largest: checkouts (live and parked), clones, everything.
        "disk": disk.report(),
        "cpu_s": {
            "worker": rounded(cpu[0], 1),
            "worker_children": rounded(cpu[1], 1),
            "server": rounded(server_cpu[0], 1) if server_cpu else None,
        },
        # The whole machine meanwhile: a share of steal means other guests had the cores.
        "machine": machine.report(),
        "plan_history_events": plan_hist.events,
        "max_task_history_events": max((h.events for h in children), default=0),
        "time_split": time_split(children),
        "breakdown": activity_breakdown(children),
        **({"git": git_trace_summary(trace)} if trace else {}),
        "goal_overhead_s_p50": GOAL_P50_S,
        "goal_tasks_per_min": GOAL_TASKS_PER_MIN,
        "within_goal": not failures
        and p50 <= GOAL_P50_S
        and tasks_per_min is not None
        and tasks_per_min >= GOAL_TASKS_PER_MIN,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--files", type=int, default=5000, help="files in the generated repository")
    ap.add_argument("--commits", type=int, default=200, help="commits in the generated repository")
    ap.add_argument("--max-concurrent", type=int, default=8)
    ap.add_argument(
        "--prepare-ahead", type=int, default=None, help="the run's --prepare-ahead (its default)"
    )
    ap.add_argument(
        "--max-checkouts", type=int, default=None, help="the run's --max-checkouts (its default)"
    )
    ap.add_argument("--agent", choices=["command", "literal"], default="command")
    ap.add_argument(
        "--sandbox",
        choices=SANDBOXES,
        default="worktree",
        help="where the tasks run: the worktree sandbox (namespaces), without namespaces "
        "(--no-isolation), or a container per step (the Debian test image)",
    )
    ap.add_argument(
        "--disk-interval", type=float, default=2.0, help="seconds between disk samples (du)"
    )
    ap.add_argument("--no-verify", action="store_true", help="tasks without a verification step")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds the run may take")
    ap.add_argument(
        "--py-spy", metavar="OUT", help="profile the worker: OUT.svg flamegraph, OUT.txt raw stacks"
    )
    ap.add_argument(
        "--git-trace",
        metavar="FILE",
        help="record every git call of the worker (GIT_TRACE2_EVENT) and summarise it as 'git'",
    )
    ap.add_argument(
        "--stall-timeout",
        type=float,
        default=180.0,
        help="fail (with the worker's stacks) when no task changes state for this long",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.tasks < 1 or args.max_concurrent < 1 or args.files < 1 or args.commits < 1:
        raise SystemExit("--tasks, --max-concurrent, --files and --commits must be >= 1")
    exit_on_sigterm()
    procs: list[subprocess.Popen[bytes]] = []
    with temp_dir("bench-overhead-", args.keep) as tmp:
        try:
            data = run(args, tmp, procs)
        finally:
            kill_started(procs)
    print(json.dumps(data))


if __name__ == "__main__":
    main()
