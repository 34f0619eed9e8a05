"""`python starter.py ...`: argv -> Settings -> plan -> action. Exit codes: 0 ok, 1 run failed, 2 bad input."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from typing import Any

from pydantic import ValidationError

from autonomous_pipeline.cli import invocation
from autonomous_pipeline.cli.dry_run import render_tree
from autonomous_pipeline.cli.flags import add_settings
from autonomous_pipeline.cli.logs import configure_logging
from autonomous_pipeline.cli.plan_input import load_plan
from autonomous_pipeline.cli.progress import console
from autonomous_pipeline.cli.runs import STATUSES, TASK_STATES
from autonomous_pipeline.cli.sandbox import assign_sandboxes
from autonomous_pipeline.config import Settings, load_settings
from autonomous_pipeline.errors import PipelineError, PlanError, UsageError
from autonomous_pipeline.models.reports import PlanReport
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
CONTROL_ARGS = (
    "workflow_id", "task", "now", "action", "status", "reason", "tasks", "target", "run",
)  # fmt: skip


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
    add_settings(p)
    return p


def build_control_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{invocation.starter_prog()} {command}", description=SUBCOMMANDS[command]
    )
    if command == "server":
        p.add_argument("action", choices=["stop"], help="what to do with the server")
    elif command == "runs":
        p.add_argument(
            "--status",
            choices=sorted({*STATUSES, *TASK_STATES}),
            help="only the runs (with --tasks, the tasks) that are, or ended, so",
        )
        p.add_argument(
            "--tasks",
            action="store_true",
            help="list tasks rather than runs, found by their search attributes",
        )
        p.add_argument("--target", metavar="BRANCH", help="only those merging into BRANCH")
        p.add_argument("--run", metavar="RUN", help="with --tasks: only this run's tasks")
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
    add_settings(p, common_only=True)
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


def run(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        from autonomous_pipeline.cli.control import control

        args = build_control_parser(argv[0]).parse_args(argv[1:])
        settings = settings_from(args, skip=CONTROL_ARGS)
        configure_logging(fmt=settings.log_format)
        return asyncio.run(control(argv[0], args, settings))
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    configure_logging(fmt=settings.log_format)
    refuse_conflicts(settings)
    if settings.plan is None:
        raise UsageError("--plan is required (or PIPELINE_PLAN)")
    filename = args.plan or str(settings.plan)
    try:
        plan, data, outside = load_plan(settings.plan, settings.start_batch, settings.end_batch)
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
            print(PlanReport.of(plan).model_dump_json())
        else:
            render_tree(plan, filename, console())
        return EXIT_OK
    for w in plan.warnings:
        print(f"{filename}:{w.line}: warning: {w.message}", file=sys.stderr)
    from autonomous_pipeline.cli.locate import explicit_address
    from autonomous_pipeline.cli.run import run_plan
    from autonomous_pipeline.telemetry import configure_runtime

    # Before the first client: its logs, and the metrics of the worker this command runs (a
    # detached run's worker gets the flag; with --address the workers are elsewhere).
    here = explicit_address(settings) is None and not settings.detach
    if settings.metrics_port is not None and explicit_address(settings) is not None:
        raise UsageError(
            "--metrics-port serves the embedded worker's metrics; with --address, give it to "
            "each worker.py"
        )
    configure_runtime(settings.metrics_port if here else None)
    try:
        return asyncio.run(run_plan(plan, data, settings, outside))
    except PlanError as exc:  # the open run refused the plan as revised: where, line by line
        for line in exc.format(filename):
            print(line, file=sys.stderr)
        return EXIT_USAGE


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
