"""Recovery from a worker killed with SIGKILL in the middle of an agent run.

A Temporal dev server and a `worker.py` process run as in production (tests/integration/helpers);
each trial starts a detached one-task run (`starter.py --detach --heartbeat-timeout H`) whose fake
agent sleeps --agent-seconds, kills the worker with SIGKILL at a random point of the agent's run,
starts a replacement worker (after --restart-delay), and waits for the agent to run again and the
run to end with the task merged exactly once. The replacement serves the next trial.

Per trial, with the agent's own timestamps (it logs when it starts):
  resume_s        the replacement worker's start (its spawn) -> the agent running again;
  gap_s           the kill -> the agent running again;
  agent_s_lost    the agent's run time thrown away (its start -> the kill; a retry starts over).
Goal: resume_s <= heartbeat timeout + 3 s in every trial ("within_goal"). Figures are noisy on a
busy machine.

.venv/bin/python bench/recovery.py [--trials 5] [--heartbeat-timeout 5] [--agent-seconds 10] \
    [--restart-delay 0] [--seed 1] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(ROOT))

from bench.common import exit_on_sigterm, log, percentile, rounded, temp_dir  # noqa: E402
from examples.make_demo_repo import make_demo_repo  # noqa: E402
from tests.integration.helpers import (  # noqa: E402
    DevServer,
    Procs,
    agent_command,
    agent_log_path,
    agent_runs,
    kill_stray_agents,
    process_env,
    start_worker,
    starter,
    tail,
    wait_finished,
    wait_for,
    write_agent,
)

GOAL_SLACK_S = 3.0


def plan_text(trial: int) -> str:
    return (
        f"# Recovery trial {trial}\n\n## Batch 1: One task\n**Dependencies:** None\n\n"
        f"### Task 1.1: file 1.1\n**Files:**\n- Create: `out/1.1.txt`\n"
    )


class Bench:
    def __init__(self, tmp: Path, procs: Procs, args: argparse.Namespace) -> None:
        self.tmp, self.procs, self.args = tmp, procs, args
        self.env = process_env(tmp)
        (tmp / "home").mkdir(exist_ok=True)
        self.server = DevServer(procs, tmp, self.env)
        self.workspace = tmp / "ws"
        self.repo = make_demo_repo(tmp / "repo")
        self.agent = write_agent(tmp)
        self.workers = 0

    def logs(self) -> str:
        return "\n".join(tail(p) for p in sorted(self.tmp.glob("*.log")))

    def worker(self) -> tuple[Any, float]:
        """A new worker process, and the time it was spawned."""
        self.workers += 1
        spawned = time.time()
        proc = start_worker(
            self.procs,
            self.server.address,
            self.workspace,
            self.tmp / f"worker-{self.workers}.log",
            self.env,
        )
        log(
            f"worker {self.workers} (pid {proc.pid}) serving {time.time() - spawned:.2f} s after spawn"
        )
        return proc, spawned

    def trial(self, n: int, worker: Any, rng: random.Random) -> tuple[dict[str, float], Any]:
        args = self.args
        plan = self.tmp / f"recovery-{n}.md"
        plan.write_text(plan_text(n))
        agents = agent_log_path(self.tmp, f"agents-{n}.log")  # confined agents may write there
        res = starter(
            [
                *("--plan", str(plan), "--repo", str(self.repo)),
                *("--address", self.server.address, "--workspace", str(self.workspace)),
                *("--agent", "command"),
                *("--agent-command", agent_command(self.agent, agents, args.agent_seconds)),
                *("--heartbeat-timeout", f"{args.heartbeat_timeout:g}", "--detach", "--json"),
            ],
            self.env,
            self.tmp,
        )
        if res.returncode != 0:
            raise SystemExit(f"starter exited {res.returncode}: {res.stdout}{res.stderr}")
        wid = str(json.loads(res.stdout)["workflow_id"])
        first = wait_for(lambda: agent_runs(agents), 60, "the agent to start", on_fail=self.logs)[0]
        # A random point of the agent's run, leaving it time to heartbeat and to be still running.
        delay = rng.uniform(0.3, max(0.4, args.agent_seconds - 1.0))
        time.sleep(max(0.0, first.start + delay - time.time()))
        os.kill(worker.pid, signal.SIGKILL)
        killed_at = time.time()
        worker.wait(timeout=10)
        if agent_runs(agents)[0].end is not None:
            raise SystemExit(f"trial {n}: the agent finished before the kill; lower the delay")
        time.sleep(args.restart_delay)
        worker, spawned = self.worker()
        again = wait_for(
            lambda: agent_runs(agents)[1:],
            args.heartbeat_timeout * 4 + 60,
            "the agent to run again",
            interval=0.05,
            on_fail=self.logs,
        )[0]
        result = wait_finished(wid, self.server.address, self.env, self.tmp, 120, self.logs)
        status = {t["id"]: t["status"] for t in result["tasks"]}
        if result["status"] != "completed" or status != {"1.1": "merged"}:
            raise SystemExit(f"trial {n}: run {result['status']}, tasks {status}\n{self.logs()}")
        runs = agent_runs(agents)
        if len(runs) != 2:
            raise SystemExit(f"trial {n}: the agent ran {len(runs)} times, expected 2: {runs}")
        kill_stray_agents(agents)
        out = {
            "kill_after_s": round(killed_at - first.start, 3),
            "resume_s": round(again.start - spawned, 3),
            "gap_s": round(again.start - killed_at, 3),
            "agent_s_lost": round(killed_at - first.start, 3),
        }
        log(f"trial {n}: {out}")
        return out, worker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--heartbeat-timeout", type=float, default=5.0, help="passed to starter.py")
    ap.add_argument("--agent-seconds", type=float, default=10.0, help="how long the agent runs")
    ap.add_argument(
        "--restart-delay", type=float, default=0.0, help="seconds between the kill and the respawn"
    )
    ap.add_argument("--seed", type=int, default=1, help="seed of the random kill points")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.trials < 1 or args.heartbeat_timeout < 1 or args.agent_seconds < 2:
        raise SystemExit("--trials >= 1, --heartbeat-timeout >= 1, --agent-seconds >= 2")
    exit_on_sigterm()
    rng = random.Random(args.seed)
    trials: list[dict[str, float]] = []
    with temp_dir("bench-recovery-", args.keep) as tmp:
        procs = Procs()
        try:
            bench = Bench(tmp, procs, args)
            bench.server.start()
            worker, _ = bench.worker()
            for n in range(1, args.trials + 1):
                out, worker = bench.trial(n, worker, rng)
                trials.append(out)
        finally:
            procs.close()
            logs = agent_log_path(tmp).parent
            for agents in logs.glob("agents-*.log"):
                kill_stray_agents(agents)
            shutil.rmtree(logs, ignore_errors=True)
    resume = [t["resume_s"] for t in trials]
    gap = [t["gap_s"] for t in trials]
    goal = args.heartbeat_timeout + GOAL_SLACK_S
    print(
        json.dumps(
            {
                "trials": args.trials,
                "heartbeat_timeout_s": args.heartbeat_timeout,
                "agent_s": args.agent_seconds,
                "restart_delay_s": args.restart_delay,
                "resume_s_p50": rounded(percentile(resume, 50)),
                "resume_s_max": rounded(max(resume)),
                "gap_s_p50": rounded(percentile(gap, 50)),
                "gap_s_max": rounded(max(gap)),
                "agent_s_lost_mean": rounded(statistics.mean(t["agent_s_lost"] for t in trials)),
                "goal_resume_s": goal,
                "within_goal": max(resume) <= goal,
                "per_trial": trials,
            }
        )
    )


if __name__ == "__main__":
    main()
