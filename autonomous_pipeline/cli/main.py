"""`python starter.py ...`: argv -> Settings -> plan -> action. Exit codes: 0 ok, 1 run failed, 2 bad input."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from typing import Any

from pydantic import ValidationError

from autonomous_pipeline.cli import invocation
from autonomous_pipeline.cli.dry_run import plan_json, render_tree
from autonomous_pipeline.cli.plan_input import load_plan
from autonomous_pipeline.cli.progress import console
from autonomous_pipeline.cli.runs import STATUSES
from autonomous_pipeline.cli.sandbox import assign_sandboxes
from autonomous_pipeline.config import Settings, load_settings
from autonomous_pipeline.errors import PipelineError, PlanError, UsageError
from autonomous_pipeline.models.sandbox import AgentNetwork, ContainerRuntime, SandboxKind
from autonomous_pipeline.plan_format.checks import unverified_warning

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Each subcommand and what it does: the `--help` text and the dispatch table in one place.
SUBCOMMANDS = {
    "runs": "list the runs, newest first, with their outcome and Web UI link",
    "status": "a run's state; with a task id, that task whole (error, checks, branch)",
    "pause": "start no new task until `resume` (running tasks go on)",
    "resume": "undo `pause`",
    "cancel": "start no new task and end the run (--now: also stop running agents)",
    "retry": "run a failed, cancelled or skipped task again, and what it held back",
    "skip": "end a task that has not finished as skipped",
    "approve": "let a task waiting for approval merge",
    "reject": "end a task waiting for approval as failed",
    "approval-token": "print the signed decision, for `temporal workflow signal`",
    "server": "stop this workspace's embedded Temporal server",
}
# Arguments that are the subcommand's own, not settings.
CONTROL_ARGS = ("workflow_id", "task", "now", "action", "status", "reason")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address", help="HOST:PORT of an existing Temporal server (default: the embedded one)"
    )
    p.add_argument(
        "--namespace",
        help="Temporal namespace (default: from the environment config, or 'default')",
    )
    p.add_argument(
        "--workspace", metavar="DIR", help="the pipeline's own clone, worktrees and server data"
    )
    p.add_argument(
        "--json", action="store_true", default=None, help="print one JSON object on stdout"
    )


def build_parser() -> argparse.ArgumentParser:
    width = max(len(c) for c in SUBCOMMANDS)
    listing = "\n".join(f"  {c:<{width}}  {what}" for c, what in SUBCOMMANDS.items())
    p = argparse.ArgumentParser(
        prog=invocation.starter_prog(),
        description="Run every task of a markdown plan through a coding agent, durably.",
        epilog=f"subcommands ({invocation.starter_prog()} SUBCOMMAND --help):\n{listing}\n\n"
        "exit codes: 0 done, 1 the run failed, 2 bad input or a request refused",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("--plan", help="the plan file (MASTER_PLAN.md)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="parse, validate and print the plan; run nothing",
    )
    p.add_argument(
        "--start-batch",
        metavar="ID",
        help="first batch to run (numeric ids by value, others by position)",
    )
    p.add_argument("--end-batch", metavar="ID", help="last batch to run")
    p.add_argument(
        "--rerun-done", action="store_true", default=None, help="run tasks the plan marks as done"
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        default=None,
        help="run a finished run's failed tasks again",
    )
    p.add_argument(
        "--share-target",
        action="store_true",
        default=None,
        help="start even while a run of another plan is open on the same target branch",
    )
    p.add_argument(
        "--repo",
        metavar="PATH",
        help="the repository to work on (default: .); never written to but by ref pushes",
    )
    p.add_argument(
        "--base",
        metavar="REF",
        help="branch the target starts from (default: the repo's current branch)",
    )
    p.add_argument(
        "--target-branch",
        metavar="BRANCH",
        help="branch that receives merged tasks (default: pipeline/<plan-name>)",
    )
    p.add_argument("--agent", help="agent backend: claude (default), command, literal")
    p.add_argument(
        "--agent-command",
        metavar="CMD",
        help="argv template for --agent command: {prompt_file} {task_id} {workdir}",
    )
    p.add_argument(
        "--agent-env",
        metavar="NAMES",
        help="comma-separated environment variables the agent and checks get (values from the "
        "worker; credentials the agent needs must be named here)",
    )
    p.add_argument(
        "--sandbox",
        choices=[k.value for k in SandboxKind],
        help="where agents, reviewers and checks run, for batches whose **Execution Mode:** "
        "names none: worktree (default: namespaces around a git worktree), container (podman "
        "or docker), dagger",
    )
    p.add_argument(
        "--override-execution-mode",
        action="store_true",
        default=None,
        help="use --sandbox for every batch, whatever its **Execution Mode:** says",
    )
    p.add_argument(
        "--agent-network",
        choices=[n.value for n in AgentNetwork],
        help="the agents' network: none, internet (never the host's loopback or the control "
        "plane), host (the worker's own; weakens isolation). Default: internet for claude, "
        "none otherwise",
    )
    p.add_argument(
        "--no-isolation",
        action="store_true",
        default=None,
        help="run worktree agents without namespaces, where they are not available: they can "
        "then read the worker's files, signal its processes and reach its network",
    )
    p.add_argument(
        "--container-image",
        metavar="IMAGE",
        help="the image of container and dagger batches (default: "
        ".autonomous-pipeline/container.toml in the repository)",
    )
    p.add_argument(
        "--container-runtime",
        choices=[r.value for r in ContainerRuntime],
        help="the container CLI (default: the first of podman, docker on PATH)",
    )
    p.add_argument(
        "--no-confine",
        dest="confine",
        action="store_false",
        default=None,
        help="no Landlock inside the sandbox (default: writes only to the task's own places)",
    )
    p.add_argument("--claude-bin", metavar="PATH", help="the claude CLI (default: claude on PATH)")
    p.add_argument("--model", help="model for the claude backend")
    p.add_argument("--max-turns", type=int, metavar="N", help="agent turns per claude run")
    p.add_argument(
        "--permission-mode",
        help="claude permission mode (default acceptEdits: edits in the task's worktree without prompts)",
    )
    p.add_argument(
        "--max-budget-usd",
        type=float,
        metavar="USD",
        help="spend limit of one task, across its retries and fix rounds",
    )
    p.add_argument(
        "--budget-usd",
        type=float,
        metavar="USD",
        help="spend limit of the whole run: no new task starts past it",
    )
    p.add_argument(
        "--reviewer",
        help="claude | command | none (default: the agent's backend; none for literal)",
    )
    p.add_argument(
        "--reviewer-command",
        metavar="CMD",
        help="argv template of a command reviewer (prints a JSON verdict)",
    )
    p.add_argument(
        "--max-fix-rounds",
        type=int,
        metavar="N",
        help="fix rounds after findings or failed checks (default 2)",
    )
    p.add_argument(
        "--approval",
        choices=["always", "large", "never"],
        help="wait for `approve` before merging (default never)",
    )
    p.add_argument(
        "--agent-timeout",
        type=float,
        metavar="S",
        help="seconds before an agent is killed (default 1800)",
    )
    p.add_argument(
        "--verify-timeout",
        type=float,
        metavar="S",
        help="seconds per verification command (default 600)",
    )
    p.add_argument(
        "--max-concurrent", type=int, metavar="N", help="tasks running at once (default 4)"
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        metavar="S",
        help="seconds of silence before a worker is presumed dead",
    )
    p.add_argument("--detach", action="store_true", default=None, help="start the run and return")
    _common(p)
    return p


def build_control_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{invocation.starter_prog()} {command}", description=SUBCOMMANDS[command]
    )
    if command == "server":
        p.add_argument("action", choices=["stop"], help="what to do with the server")
    elif command == "runs":
        p.add_argument(
            "--status", choices=list(STATUSES), help="only the runs that are (or ended) so"
        )
    else:
        p.add_argument("workflow_id", metavar="RUN", help="the run's workflow id (pipeline-...)")
    if command == "status":
        p.add_argument("task", nargs="?", metavar="TASK", help="a task id, e.g. 2.1")
    if command in ("retry", "skip", "approve", "reject", "approval-token"):
        p.add_argument("task", metavar="TASK", help="the task's id, e.g. 2.1")
    if command == "cancel":
        p.add_argument(
            "--now", action="store_true", help="also cancel running tasks, killing their agents"
        )
    if command == "reject":
        p.add_argument("--reason", help="why, recorded as the task's error")
    if command == "approval-token":
        # Parsed as `now`: False signs a rejection.
        p.add_argument("--reject", dest="now", action="store_true", help="the token of a rejection")
    _common(p)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autonomous-pipeline")
    except PackageNotFoundError:
        return "unknown (not installed)"


def settings_from(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> Settings:
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None and k not in skip}
    try:
        return load_settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UsageError(f"invalid setting {where}: {first['msg']}") from None


def refuse_conflicts(settings: Settings) -> None:
    """Flags that cannot mean anything together are refused, not silently ignored."""
    if settings.dry_run:
        for flag, given in (
            ("--detach", settings.detach),
            ("--retry-failed", settings.retry_failed),
        ):
            if given:
                raise UsageError(f"{flag} has no meaning with --dry-run (a dry run starts nothing)")
    if settings.agent_command and settings.agent != "command":
        raise UsageError(f"--agent-command is for --agent command, not --agent {settings.agent}")
    if settings.reviewer_command and settings.reviewer not in (None, "command"):
        raise UsageError(
            f"--reviewer-command is for --reviewer command, not --reviewer {settings.reviewer}"
        )
    if settings.approval not in ("always", "large", "never"):
        raise UsageError(f"--approval {settings.approval!r}: use always, large or never")


def run(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        from autonomous_pipeline.cli.control import control

        args = build_control_parser(argv[0]).parse_args(argv[1:])
        settings = settings_from(args, skip=CONTROL_ARGS)
        return asyncio.run(control(argv[0], args, settings))
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    refuse_conflicts(settings)
    if settings.plan is None:
        raise UsageError("--plan is required (or PIPELINE_PLAN)")
    filename = args.plan or str(settings.plan)
    try:
        plan, data = load_plan(settings.plan, settings.start_batch, settings.end_batch)
    except PlanError as exc:
        for line in exc.format(filename):
            print(line, file=sys.stderr)
        for w in exc.warnings:
            print(f"{filename}:{w.line}: warning: {w.message}", file=sys.stderr)
        return EXIT_USAGE
    plan = assign_sandboxes(plan, settings.sandbox, settings.override_execution_mode)
    bare = unverified_warning(plan.batches)
    if bare is not None:
        plan.warnings = sorted([*plan.warnings, bare], key=lambda w: w.line)
    if settings.dry_run:
        if settings.json_output:
            print(json.dumps(plan_json(plan), ensure_ascii=False))
        else:
            render_tree(plan, filename, console())
        return EXIT_OK
    for w in plan.warnings:
        print(f"{filename}:{w.line}: warning: {w.message}", file=sys.stderr)
    from autonomous_pipeline.cli.run import run_plan

    return asyncio.run(run_plan(plan, data, settings))


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "interrupted; the run goes on in Temporal: run the same command again to follow it",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("PIPELINE_DEBUG"):
            traceback.print_exc()
        print(
            f"internal error: {type(exc).__name__}: {exc} (set PIPELINE_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def entry() -> None:
    """The `autonomous-pipeline` console script."""
    invocation.exit_after(main)
