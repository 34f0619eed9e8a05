"""`python starter.py ...`: argv -> Settings -> plan -> action. Exit codes: 0 ok, 1 run failed, 2 bad input."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from cli.dry_run import plan_json, render_tree
from cli.plan_input import load_plan
from config import Settings
from errors import PipelineError, PlanError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="starter.py",
        description="Run every task of a markdown plan through a coding agent, durably.",
    )
    p.add_argument("--plan", help="the plan file (MASTER_PLAN.md)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="parse, validate and print the plan; run nothing",
    )
    p.add_argument(
        "--json", action="store_true", default=None, help="print one JSON object on stdout"
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
        "--workspace", metavar="DIR", help="the pipeline's own clone, worktrees and server data"
    )
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UsageError(f"invalid setting {where}: {first['msg']}") from None


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    if settings.plan is None:
        raise UsageError("--plan is required (or PIPELINE_PLAN)")
    filename = args.plan or str(settings.plan)
    try:
        plan = load_plan(settings.plan, settings.start_batch, settings.end_batch)
    except PlanError as exc:
        for line in exc.format(filename):
            print(line, file=sys.stderr)
        for w in exc.warnings:
            print(f"{filename}:{w.line}: warning: {w.message}", file=sys.stderr)
        return EXIT_USAGE
    if settings.dry_run:
        if settings.json_output:
            print(json.dumps(plan_json(plan), ensure_ascii=False))
        else:
            render_tree(plan, filename, Console(highlight=False))
        return EXIT_OK
    raise UsageError("running a plan is not available in this build; use --dry-run")


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
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("PIPELINE_DEBUG"):
            traceback.print_exc()
        print(
            f"internal error: {type(exc).__name__}: {exc} (set PIPELINE_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return EXIT_FAILED
