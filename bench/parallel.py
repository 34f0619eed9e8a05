"""Makespan of a plan of independent tasks run in parallel, against the old one-checkout design.

Pipeline mode: `starter.py --json` (embedded dev server) runs a generated one-batch plan whose
command agent sleeps and writes `out/<task id>.txt`; the makespan is the span from the first agent
start to the last agent end, as the fake agent itself logs them (outside the repository). Sequential
mode: the same agent, task after task, in one shared clone (checkout -B, agent, commit, merge,
clean). Prints one JSON object as its last line.

.venv/bin/python bench/parallel.py [--tasks 16] [--concurrency 8] [--agent-seconds 5] [--prepare-ahead N] [--max-checkouts N]
    [--check-seconds 0] [--sandbox S] [--keep]

--check-seconds makes each task's verification take that long (both modes run it after the agent):
checks that hold a slot show as agents starting late.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: examples/ and tests/ are not installed packages
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PYTHON,
    SANDBOXES,
    MachineTimes,
    agent_logs,
    bench_env,
    git,
    sandbox_setup,
    stop_server,
)
from examples.make_demo_repo import make_demo_repo  # noqa: E402
from tests.integration.helpers import agent_command, agent_runs, write_agent  # noqa: E402


def task_ids(n: int) -> list[str]:
    return [f"1.{i}" for i in range(1, n + 1)]


def check(tid: str, seconds: float) -> str:
    test = f"grep -qx {tid} out/{tid}.txt"
    return f"sleep {seconds:g} && {test}" if seconds > 0 else test


def generate(ids: list[str], check_s: float = 0.0) -> str:
    """One batch of independent tasks, each creating its own file."""
    out = ["# Parallel bench", "", "## Batch 1: Independent files", "**Dependencies:** None", ""]
    for tid in ids:
        out += [
            f"### Task {tid}: file {tid}",
            "**Files:**",
            f"- Create: `out/{tid}.txt`",
            "**Verification:**",
            f"- `{check(tid, check_s)}`",
            "",
        ]
    return "\n".join(out) + "\n"


def span(log: Path, ids: list[str]) -> float:
    """First agent start to last agent end; every task ran exactly once and finished."""
    runs = agent_runs(log)
    ran = sorted(r.task_id for r in runs)
    if ran != sorted(ids) or any(r.end is None for r in runs):
        raise SystemExit(f"agent runs in {log} do not match the tasks: {runs}")
    return max(r.end for r in runs if r.end is not None) - min(r.start for r in runs)


def starts(log: Path) -> list[float]:
    runs = agent_runs(log)
    first = min(r.start for r in runs)
    return sorted(round(r.start - first, 2) for r in runs)


def check_files(repo: Path, env: dict[str, str], ref: str, ids: list[str], mode: str) -> None:
    files = git(repo, env, "ls-tree", "-r", "--name-only", ref, "out").splitlines()
    want = sorted(f"out/{t}.txt" for t in ids)
    if sorted(files) != want:
        raise SystemExit(f"{mode}: {ref} holds {sorted(files)}, expected {want}")


def run_pipeline(
    tmp: Path,
    env: dict[str, str],
    ids: list[str],
    concurrency: int,
    agent_s: float,
    sandbox: str,
    ahead: int | None,
    check_s: float,
    checkouts: int | None = None,
) -> dict[str, Any]:
    repo = make_demo_repo(tmp / "repo")
    plan = tmp / "parallel-bench.md"
    plan.write_text(generate(ids, check_s))
    log = agent_logs(tmp) / "pipeline-agents.log"
    # The agent beside its log: a container sees that folder; there its interpreter is python3.
    python = "python3" if sandbox == "container" else sys.executable
    command = agent_command(write_agent(agent_logs(tmp)), log, agent_s, python=python)
    flags, env = sandbox_setup(sandbox, tmp, env)
    argv = [
        *(PYTHON, str(ROOT / "starter.py")),
        *("--plan", str(plan), "--repo", str(repo), "--workspace", str(tmp / "workspace")),
        *("--agent", "command", "--agent-command", command),
        *("--max-concurrent", str(concurrency), "--json", *flags),
        *(("--prepare-ahead", str(ahead)) if ahead is not None else ()),
        *(("--max-checkouts", str(checkouts)) if checkouts is not None else ()),
    ]
    t0 = time.monotonic()
    res = subprocess.run(
        argv,
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=max(600.0, 4 * len(ids) * agent_s),
        check=False,
    )
    wall = time.monotonic() - t0
    try:
        data = json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        data = None
    if res.returncode != 0 or not isinstance(data, dict):
        raise SystemExit(
            f"starter exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
    tasks = {t["id"]: t for t in data["tasks"]}
    not_merged = {
        t: tasks.get(t, {}).get("status") for t in ids if tasks.get(t, {}).get("status") != "merged"
    }
    if data["status"] != "completed" or not_merged:
        raise SystemExit(f"pipeline: status {data['status']}, not merged: {not_merged}")
    check_files(repo, env, f"refs/heads/{data['target_branch']}", ids, "pipeline")
    durations = [float(t["duration_s"]) for t in data["tasks"]]
    return {
        "makespan_s": span(log, ids),
        # When each agent started, from the first: a late second wave is orchestration showing.
        "agent_starts_s": starts(log),
        "wall_s": wall,
        "task_duration_s": {
            "min": min(durations),
            "median": sorted(durations)[len(durations) // 2],
            "max": max(durations),
        },
    }


def run_sequential(
    tmp: Path, env: dict[str, str], ids: list[str], agent_s: float, check_s: float
) -> float:
    """The old design: one shared checkout, one task at a time, branch/agent/commit/merge/clean."""
    origin = make_demo_repo(tmp / "seq-origin")
    checkout = tmp / "seq-checkout"
    git(tmp, env, "clone", "-q", str(origin), str(checkout))
    log = agent_logs(tmp) / "sequential-agents.log"
    command = agent_command(write_agent(tmp), log, agent_s)
    t0 = time.monotonic()
    for tid in ids:
        git(checkout, env, "checkout", "-q", "-B", f"task-{tid}", "main")
        argv = [a.replace("{task_id}", tid) for a in shlex.split(command)]
        res = subprocess.run(
            argv, cwd=checkout, env=env, capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise SystemExit(f"sequential: agent {tid} exited {res.returncode}: {res.stderr}")
        verified = subprocess.run(["sh", "-c", check(tid, check_s)], cwd=checkout, check=False)
        if verified.returncode != 0:
            raise SystemExit(f"sequential: the check of {tid} failed")
        git(checkout, env, "add", "-A")
        git(checkout, env, "commit", "-q", "-m", f"task {tid}")
        git(checkout, env, "checkout", "-q", "main")
        git(checkout, env, "merge", "-q", "--ff-only", f"task-{tid}")
        git(checkout, env, "clean", "-q", "-fdx")
    elapsed = time.monotonic() - t0
    check_files(checkout, env, "refs/heads/main", ids, "sequential")
    span(log, ids)  # every agent ran once
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--agent-seconds", type=float, default=5.0)
    ap.add_argument("--sandbox", choices=SANDBOXES, default="worktree")
    ap.add_argument(
        "--prepare-ahead", type=int, default=None, help="the run's --prepare-ahead (its default)"
    )
    ap.add_argument(
        "--max-checkouts", type=int, default=None, help="the run's --max-checkouts (its default)"
    )
    ap.add_argument(
        "--check-seconds", type=float, default=0.0, help="each task's check sleeps this long"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = ap.parse_args()
    if args.tasks < 1 or args.concurrency < 1 or args.agent_seconds < 0:
        raise SystemExit("--tasks and --concurrency must be >= 1, --agent-seconds >= 0")
    ids = task_ids(args.tasks)
    tmp = Path(tempfile.mkdtemp(prefix="bench-parallel-")).resolve()
    env = bench_env(tmp)
    try:
        with MachineTimes() as machine:
            pipe = run_pipeline(
                tmp,
                env,
                ids,
                args.concurrency,
                args.agent_seconds,
                args.sandbox,
                args.prepare_ahead,
                args.check_seconds,
                args.max_checkouts,
            )
        sequential = run_sequential(tmp, env, ids, args.agent_seconds, args.check_seconds)
    finally:
        stop_server(tmp / "workspace", env)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    lower = math.ceil(args.tasks / args.concurrency) * args.agent_seconds
    makespan = pipe["makespan_s"]
    print(f"pipeline task duration_s: {json.dumps(pipe['task_duration_s'])}", file=sys.stderr)
    print(
        json.dumps(
            {
                "tasks": args.tasks,
                "sandbox": args.sandbox,
                "concurrency": args.concurrency,
                "prepare_ahead": args.prepare_ahead,
                "max_checkouts": args.max_checkouts,
                "agent_s": args.agent_seconds,
                "check_s": args.check_seconds,
                "makespan_s": round(makespan, 3),
                "wall_s": round(pipe["wall_s"], 3),
                "lower_bound_s": round(lower, 3),
                "efficiency": round(lower / makespan, 3) if makespan else None,
                "sequential_makespan_s": round(sequential, 3),
                "speedup_vs_sequential": round(sequential / makespan, 3) if makespan else None,
                "agent_starts_s": pipe["agent_starts_s"],
                # The machine during the pipeline's run: steal is other guests' use of the cores.
                "machine": machine.report(),
            }
        )
    )


if __name__ == "__main__":
    main()
