"""A 1,000-task plan: parse time, start time, worker memory, history sizes, no-op throughput.

The plan is generated like bench/parse.py's (files, implementation text with a code fence,
verification commands and criteria), but runnable: batches of --per-batch independent tasks, each
batch depending on the one before, and the verification command is `test -d .`. Its agent is a
no-op: the `literal` agent (the fence names no file, so nothing is written; the task ends
`no_op`), or `--agent command` running `true`. A dev server and a `worker.py` process run as in
production; the run is started with `starter.py --detach --address`.

  parse_s             parse_plan() of the plan text, best of 3 (in-process)
  dry_run_s           `starter.py --dry-run --json`, a whole process
  starter_s           `starter.py --detach` until it returns with the run started
  start_s             that invocation until the first task workflow started (its history)
  worker_peak_mb      peak RSS of the worker process (VmHWM); worker_tree_peak_mb samples the
                      worker with its children (git, agents) every 0.2 s
  max_history_events  the largest history among the plan workflow and all its children (the server
                      is fresh, so every workflow listed belongs to the run)
  plan_input_bytes    the plan workflow's input payloads (first event); Temporal refuses > 2 MB
  tasks_per_min       tasks / the plan workflow's span (started -> closed events)
  plan_replay_s       replaying the plan workflow's history in-process (what a new worker does
                      before it can carry on with the run after a crash or a cache eviction)
  status_query_s      one `status` query on the closed run (the worker replays its whole history
                      to answer; status_query_error says why it had no answer)
A worker that makes no progress for --stall-timeout seconds (no task finishes, no query answered)
is reported with its stacks ("stall_reports": py-spy dump, forks that never exec'ed), killed and
replaced, up to --max-stalls times; "worker_stalls" counts them. After a replacement the window
grows by the git steps' start-to-close timeout (10 min): a step that was running on the killed
worker has no heartbeat, so its task waits that long before the step runs again.
With --kill-at F the worker is killed with SIGKILL once a fraction F of the tasks finished and a
new one started; "kill" says how long until the next task finished ("resumed_s", null if never)
and how many of the plan workflow's workflow tasks timed out (a replay slower than the task
timeout). A run that stalls for good still prints what is known, with "completed": false.
Goals: worker under 400 MB, no history over 20,000 events, input well under 2 MB. Figures are noisy
on a busy machine.

.venv/bin/python bench/scale.py [--tasks 1000] [--per-batch 100] [--max-concurrent 8] \
    [--agent literal|command] [--files 100] [--kill-at 0.7] [--save-history FILE] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(ROOT))

from autonomous_pipeline.plan_parser import parse_plan  # noqa: E402
from autonomous_pipeline.workflows.policies import GIT_TIMEOUT  # noqa: E402
from bench.common import (  # noqa: E402
    Sampler,
    activity_breakdown,
    exit_on_sigterm,
    fetch_histories,
    log,
    make_repo,
    rounded,
    stall_report,
    temp_dir,
)
from bench.parse import generate  # noqa: E402
from tests.integration.helpers import (  # noqa: E402
    DevServer,
    Procs,
    kill_group,
    process_env,
    start_worker,
    starter,
    tail,
)

GOAL_WORKER_MB = 400
GOAL_MAX_EVENTS = 20_000
PAYLOAD_LIMIT_BYTES = 2 * 1024 * 1024


class Stalled(Exception):
    pass


class KillPoint(Exception):
    pass


async def _follow(
    address: str,
    workflow_id: str,
    timeout: float,
    stall_s: float,
    seen: list[tuple[float, int]],
    kill_at: int | None = None,
) -> dict[str, Any]:
    """The run's result. Appends (time.time(), tasks finished) to `seen` on each change; Stalled
    when nothing changed for `stall_s` seconds, KillPoint once `kill_at` tasks have finished."""
    from temporalio.client import Client

    client = await Client.connect(address)
    handle = client.get_workflow_handle(workflow_id)
    result = asyncio.create_task(handle.result())
    deadline = time.monotonic() + timeout
    changed = time.monotonic()
    try:
        while not result.done():
            await asyncio.wait({result}, timeout=5)
            if result.done():
                break
            with contextlib.suppress(Exception):  # a stalled worker answers no query either
                progress = await handle.query("status", rpc_timeout=timedelta(seconds=10))
                now = sum(t["status"] not in ("pending", "running") for t in progress["tasks"])
                if not seen or now != seen[-1][1]:
                    seen.append((time.time(), now))
                    changed = time.monotonic()
            if kill_at is not None and seen and seen[-1][1] >= kill_at:
                raise KillPoint(seen[-1][1])
            if time.monotonic() - changed > stall_s:
                done = seen[-1][1] if seen else 0
                raise Stalled(f"no task finished for {stall_s:g} s ({done} finished)")
            if time.monotonic() > deadline:
                raise TimeoutError
    finally:
        if not result.done():
            result.cancel()
    return dict(result.result())


async def _query_status(address: str, workflow_id: str) -> tuple[float | None, int, str]:
    """One `status` query: (seconds, bytes of the answer, error). The run has closed, so the
    worker replays its whole history to answer."""
    from temporalio.client import Client

    client = await Client.connect(address)
    t0 = time.monotonic()
    try:
        progress = await client.get_workflow_handle(workflow_id).query(
            "status", rpc_timeout=timedelta(seconds=120)
        )
    except Exception as exc:
        return None, 0, f"{type(exc).__name__}: {exc}"[:300]
    return time.monotonic() - t0, len(json.dumps(progress)), ""


async def _replay(address: str, workflow_id: str, save: Path | None) -> float:
    """Seconds to replay the plan workflow's history in this process, as a new worker would."""
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    from autonomous_pipeline.workflows.plan import PlanWorkflow
    from autonomous_pipeline.workflows.task import TaskWorkflow

    client = await Client.connect(address)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    if save is not None:
        save.write_text(history.to_json())
    replayer = Replayer(
        workflows=[PlanWorkflow, TaskWorkflow], data_converter=pydantic_data_converter
    )
    t0 = time.monotonic()
    await replayer.replay_workflow(history)
    return time.monotonic() - t0


def run(args: argparse.Namespace, tmp: Path, procs: Procs) -> dict[str, Any]:
    env = process_env(tmp)
    (tmp / "home").mkdir(exist_ok=True)
    text = generate(args.tasks, args.per_batch, runnable=True, title="Scale plan")
    plan_file = tmp / "scale-plan.md"
    plan_file.write_text(text)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        plan = parse_plan(text)
        times.append(time.perf_counter() - t0)
    if len(plan.tasks) != args.tasks:
        raise SystemExit(f"the generated plan has {len(plan.tasks)} tasks, not {args.tasks}")
    t0 = time.monotonic()
    dry = starter(["--plan", str(plan_file), "--dry-run", "--json"], env, tmp)
    dry_run_s = time.monotonic() - t0
    if dry.returncode != 0:
        raise SystemExit(f"dry run exited {dry.returncode}: {dry.stderr[-2000:]}")
    log(f"plan: {args.tasks} tasks, {len(text)} bytes; parse {min(times):.3f} s")

    repo = make_repo(tmp / "repo", env, args.files, 1)
    server = DevServer(procs, tmp, env)
    server.start()
    workspace = tmp / "ws"
    worker = start_worker(procs, server.address, workspace, tmp / "worker.log", env)
    argv = [
        *("--plan", str(plan_file), "--repo", str(repo)),
        *("--address", server.address, "--workspace", str(workspace)),
        *("--max-concurrent", str(args.max_concurrent), "--detach", "--json"),
    ]
    argv += ["--agent", "command", "--agent-command", "true"] if args.agent == "command" else []
    argv += ["--agent", "literal"] if args.agent == "literal" else []
    samplers = [Sampler(worker.pid).__enter__()]
    stalls: list[str] = []
    seen: list[tuple[float, int]] = []
    kill_at = round(args.kill_at * args.tasks) if args.kill_at is not None else None
    kill: dict[str, Any] | None = None
    result: dict[str, Any] | None = None

    def replace_worker(name: str) -> float:
        nonlocal worker
        kill_group(worker, signal.SIGKILL)
        worker.wait(timeout=10)
        spawned = time.time()
        worker = start_worker(procs, server.address, workspace, tmp / f"{name}.log", env)
        samplers.append(Sampler(worker.pid).__enter__())
        return spawned

    try:
        started_at = time.time()
        t0 = time.monotonic()
        res = starter(argv, env, tmp, timeout=600)
        starter_s = time.monotonic() - t0
        try:
            wid = str(json.loads(res.stdout.strip().splitlines()[-1])["workflow_id"])
        except (IndexError, ValueError, KeyError):
            raise SystemExit(
                f"starter exited {res.returncode}: {res.stdout[-2000:]}{res.stderr[-3000:]}"
            ) from None
        log(f"run {wid} started in {starter_s:.2f} s; waiting for it to finish")
        while result is None:
            # After a replacement, tasks whose git step ran on the dead worker wait for that
            # activity's start-to-close timeout (no heartbeat): not a stall of the new one.
            extra = GIT_TIMEOUT.total_seconds() if stalls or kill else 0.0
            try:
                result = asyncio.run(
                    _follow(
                        server.address,
                        wid,
                        args.timeout,
                        args.stall_timeout + extra,
                        seen,
                        None if kill else kill_at,
                    )
                )
            except TimeoutError:
                raise SystemExit(f"the run took longer than {args.timeout:g} s") from None
            except KillPoint as point:
                log(f"{point} tasks finished: killing the worker (SIGKILL) and replacing it")
                kill = {"finished": int(str(point)), "killed": time.time()}
                kill["replacement_spawned"] = replace_worker("worker-after-kill")
            except Stalled as exc:
                # A finding, not the end: report it, replace the worker, and carry on.
                report = f"{exc}\n{stall_report(worker.pid)}"
                log(f"the run stalled; replacing the worker\n{report}")
                stalls.append(report)
                if len(stalls) > args.max_stalls:
                    log(f"giving up after {len(stalls)} stalls")
                    break
                replace_worker(f"worker-{len(stalls) + 1}")
        wall = time.monotonic() - t0
    finally:
        for sampler in samplers:
            sampler.__exit__(None, None, None)
    histories = fetch_histories(server.address)
    plan_hist = next(h for h in histories if h.workflow_id == wid)
    children = [h for h in histories if h.workflow_id != wid]
    out: dict[str, Any] = {
        "tasks": args.tasks,
        "batches": len(plan.batches),
        "concurrency": args.max_concurrent,
        "agent": args.agent,
        "plan_bytes": len(text.encode()),
        "parse_s": round(min(times), 4),
        "dry_run_s": round(dry_run_s, 3),
        "starter_s": round(starter_s, 3),
        "start_s": rounded(min(h.started for h in children) - started_at) if children else None,
    }
    if kill is not None:
        after = [
            (t, n) for t, n in seen if t > kill["replacement_spawned"] and n > kill["finished"]
        ]
        out["kill"] = {
            "at_finished": kill["finished"],
            "resumed_s": rounded(after[0][0] - kill["replacement_spawned"]) if after else None,
            "plan_workflow_task_timeouts": plan_hist.workflow_task_timeouts,
        }
    if result is None:
        # Stalled for good: what is known so far, without the figures of a finished run.
        out |= {
            "completed": False,
            "finished_tasks": seen[-1][1] if seen else 0,
            "worker_stalls": len(stalls),
            "stall_reports": [r[-3000:] for r in stalls],
            "plan_history_events": plan_hist.events,
            "plan_workflow_task_timeouts": plan_hist.workflow_task_timeouts,
            "worker_peak_mb": round(max(m.hwm_kb for m in samplers) / 1024, 1),
            "within_goal": False,
        }
        return out
    log(f"run {result['status']} after {wall:.1f} s; querying and reading histories")
    save = Path(args.save_history).resolve() if args.save_history else None
    replay_s = asyncio.run(_replay(server.address, wid, save))
    log(f"replaying the plan workflow took {replay_s:.2f} s")
    query_s, query_bytes, query_error = asyncio.run(_query_status(server.address, wid))
    statuses: dict[str, int] = {}
    for t in result["tasks"]:
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
    if result["status"] != "completed":
        bad = [(t["id"], t["status"], t["error"]) for t in result["tasks"]][:5]
        raise SystemExit(
            f"run {result['status']}: {statuses}, e.g. {bad}\n{tail(tmp / 'worker.log')}"
        )
    if len(children) != args.tasks:
        raise SystemExit(f"{len(children)} task workflows on the server, expected {args.tasks}")
    biggest = max(histories, key=lambda h: h.events)
    span = (plan_hist.closed or plan_hist.started) - plan_hist.started
    tasks_per_min = args.tasks / span * 60 if span > 0 else None
    peak_mb = max(m.hwm_kb for m in samplers) / 1024
    return out | {
        "completed": True,
        "statuses": statuses,
        "worker_peak_mb": round(peak_mb, 1),
        "worker_tree_peak_mb": round(max(m.tree_peak_kb for m in samplers) / 1024, 1),
        "worker_stalls": len(stalls),
        "stall_reports": [r[-3000:] for r in stalls],
        "max_history_events": biggest.events,
        "max_history_workflow": biggest.workflow_id,
        "plan_history_events": plan_hist.events,
        "plan_history_bytes": plan_hist.size_bytes,
        "plan_workflow_task_timeouts": plan_hist.workflow_task_timeouts,
        "plan_input_bytes": plan_hist.input_bytes,
        "plan_input_limit_bytes": PAYLOAD_LIMIT_BYTES,
        "task_input_bytes_max": max(h.input_bytes for h in children),
        "task_history_events_max": max(h.events for h in children),
        "plan_replay_s": round(replay_s, 3),
        "status_query_s": rounded(query_s),
        "status_query_bytes": query_bytes,
        "status_query_error": query_error,
        "tasks_per_min": rounded(tasks_per_min, 1),
        "run_span_s": round(span, 3),
        "wall_s": round(wall, 3),
        "breakdown": activity_breakdown(children),
        "goal_worker_mb": GOAL_WORKER_MB,
        "goal_max_history_events": GOAL_MAX_EVENTS,
        "within_goal": not stalls
        and peak_mb < GOAL_WORKER_MB
        and biggest.events <= GOAL_MAX_EVENTS
        and plan_hist.input_bytes < PAYLOAD_LIMIT_BYTES,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--per-batch", type=int, default=100, help="tasks per batch")
    ap.add_argument("--max-concurrent", type=int, default=8)
    ap.add_argument("--agent", choices=["literal", "command"], default="literal")
    ap.add_argument("--files", type=int, default=100, help="files in the generated repository")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds the run may take")
    ap.add_argument(
        "--stall-timeout",
        type=float,
        default=180.0,
        help="fail (with the worker's stacks) when no task finishes for this long",
    )
    ap.add_argument(
        "--max-stalls", type=int, default=3, help="worker replacements before giving up"
    )
    ap.add_argument(
        "--save-history",
        metavar="FILE",
        help="write the plan workflow's history there (JSON, for `temporalio.worker.Replayer`)",
    )
    ap.add_argument(
        "--kill-at",
        type=float,
        metavar="FRACTION",
        help="SIGKILL the worker once this fraction of the tasks finished, start a new one, and "
        "report how long the run took to move again ('kill')",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.tasks < 1 or args.per_batch < 1 or args.max_concurrent < 1 or args.files < 1:
        raise SystemExit("--tasks, --per-batch, --max-concurrent and --files must be >= 1")
    exit_on_sigterm()
    with temp_dir("bench-scale-", args.keep) as tmp:
        procs = Procs()
        try:
            data = run(args, tmp, procs)
        finally:
            procs.close()
    print(json.dumps(data))


if __name__ == "__main__":
    main()
