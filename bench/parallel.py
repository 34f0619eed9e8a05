"""Makespan of a plan of independent tasks run in parallel, against the old one-checkout design.

Pipeline mode: `starter.py --json` (embedded dev server) runs a generated one-batch plan whose
command agent sleeps and writes `out/<task id>.txt`; the makespan is the span from the first agent
start to the last agent end, as the fake agent itself logs them (outside the repository). Sequential
mode: the same agent, task after task, in one shared clone (checkout -B, agent, commit, merge,
clean). Prints one JSON object as its last line.

.venv/bin/python bench/parallel.py [--tasks 16] [--concurrency 8] [--agent-seconds 5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import os
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

from examples.make_demo_repo import make_demo_repo  # noqa: E402
from tests.integration.helpers import agent_command, agent_runs, write_agent  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").is_dir() else sys.executable
IDENTITY = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def task_ids(n: int) -> list[str]:
    return [f"1.{i}" for i in range(1, n + 1)]


def generate(ids: list[str]) -> str:
    """One batch of independent tasks, each creating its own file."""
    out = ["# Parallel bench", "", "## Batch 1: Independent files", "**Dependencies:** None", ""]
    for tid in ids:
        out += [
            f"### Task {tid}: file {tid}",
            "**Files:**",
            f"- Create: `out/{tid}.txt`",
            "**Verification:**",
            f"- `grep -qx {tid} out/{tid}.txt`",
            "",
        ]
    return "\n".join(out) + "\n"


def bench_env(tmp: Path) -> dict[str, str]:
    """No user git config, Temporal profile or pipeline settings leak in."""
    gitconfig = tmp / "gitconfig-global"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "TEMPORAL_"))}
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(key, None)
    (tmp / "home").mkdir(exist_ok=True)
    return env | {
        "PYTHONUNBUFFERED": "1",
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(tmp / "home"),
        "XDG_CACHE_HOME": str(tmp / "cache"),
    }


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    res = subprocess.run(
        ["git", *args], cwd=repo, env=env | IDENTITY, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {repo}: {res.stderr.strip()}")
    return res.stdout.strip()


def span(log: Path, ids: list[str]) -> float:
    """First agent start to last agent end; every task ran exactly once and finished."""
    runs = agent_runs(log)
    ran = sorted(r.task_id for r in runs)
    if ran != sorted(ids) or any(r.end is None for r in runs):
        raise SystemExit(f"agent runs in {log} do not match the tasks: {runs}")
    return max(r.end for r in runs if r.end is not None) - min(r.start for r in runs)


def check_files(repo: Path, env: dict[str, str], ref: str, ids: list[str], mode: str) -> None:
    files = git(repo, env, "ls-tree", "-r", "--name-only", ref, "out").splitlines()
    want = sorted(f"out/{t}.txt" for t in ids)
    if sorted(files) != want:
        raise SystemExit(f"{mode}: {ref} holds {sorted(files)}, expected {want}")


def run_pipeline(
    tmp: Path, env: dict[str, str], ids: list[str], concurrency: int, agent_s: float
) -> dict[str, Any]:
    repo = make_demo_repo(tmp / "repo")
    plan = tmp / "parallel-bench.md"
    plan.write_text(generate(ids))
    log = tmp / "pipeline-agents.log"
    command = agent_command(write_agent(tmp), log, agent_s)
    argv = [
        *(PYTHON, str(ROOT / "starter.py")),
        *("--plan", str(plan), "--repo", str(repo), "--workspace", str(tmp / "workspace")),
        *("--agent", "command", "--agent-command", command),
        *("--max-concurrent", str(concurrency), "--json"),
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
        "wall_s": wall,
        "task_duration_s": {
            "min": min(durations),
            "median": sorted(durations)[len(durations) // 2],
            "max": max(durations),
        },
    }


def run_sequential(tmp: Path, env: dict[str, str], ids: list[str], agent_s: float) -> float:
    """The old design: one shared checkout, one task at a time, branch/agent/commit/merge/clean."""
    origin = make_demo_repo(tmp / "seq-origin")
    checkout = tmp / "seq-checkout"
    git(tmp, env, "clone", "-q", str(origin), str(checkout))
    log = tmp / "sequential-agents.log"
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
        git(checkout, env, "add", "-A")
        git(checkout, env, "commit", "-q", "-m", f"task {tid}")
        git(checkout, env, "checkout", "-q", "main")
        git(checkout, env, "merge", "-q", "--ff-only", f"task-{tid}")
        git(checkout, env, "clean", "-q", "-fdx")
    elapsed = time.monotonic() - t0
    check_files(checkout, env, "refs/heads/main", ids, "sequential")
    span(log, ids)  # every agent ran once
    return elapsed


def stop_server(workspace: Path, env: dict[str, str]) -> None:
    if not workspace.exists():
        return
    subprocess.run(
        [PYTHON, str(ROOT / "starter.py"), "server", "stop", "--workspace", str(workspace)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--agent-seconds", type=float, default=5.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = ap.parse_args()
    if args.tasks < 1 or args.concurrency < 1 or args.agent_seconds < 0:
        raise SystemExit("--tasks and --concurrency must be >= 1, --agent-seconds >= 0")
    ids = task_ids(args.tasks)
    tmp = Path(tempfile.mkdtemp(prefix="bench-parallel-")).resolve()
    env = bench_env(tmp)
    try:
        pipe = run_pipeline(tmp, env, ids, args.concurrency, args.agent_seconds)
        sequential = run_sequential(tmp, env, ids, args.agent_seconds)
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
                "concurrency": args.concurrency,
                "agent_s": args.agent_seconds,
                "makespan_s": round(makespan, 3),
                "wall_s": round(pipe["wall_s"], 3),
                "lower_bound_s": round(lower, 3),
                "efficiency": round(lower / makespan, 3) if makespan else None,
                "sequential_makespan_s": round(sequential, 3),
                "speedup_vs_sequential": round(sequential / makespan, 3) if makespan else None,
            }
        )
    )


if __name__ == "__main__":
    main()
