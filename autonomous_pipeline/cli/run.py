"""Start a run, or attach to the one already running for the same plan, and follow it to the end."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from autonomous_pipeline.backends.agents.command import PLACEHOLDERS, unknown_placeholders
from autonomous_pipeline.backends.sandboxes.policy import WorkerPolicy, sandbox_grant, weakenings
from autonomous_pipeline.backends.secrets import env_names
from autonomous_pipeline.cli import invocation
from autonomous_pipeline.cli.approval import approver_key, public_key
from autonomous_pipeline.cli.connect import (
    RUN_PREFIX,
    TASK_QUEUE,
    connect_client,
    ui_base_of,
    workflow_link,
)
from autonomous_pipeline.cli.locate import explicit_address
from autonomous_pipeline.cli.notify import notify_config
from autonomous_pipeline.cli.preflight import check_agents, check_repo, slug
from autonomous_pipeline.cli.progress import (
    ProgressView,
    console,
    is_terminal,
    print_summary,
)
from autonomous_pipeline.cli.publish import forge_config
from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.cli.runs import open_runs_into
from autonomous_pipeline.cli.sandbox import check_sandboxes, kinds_of, sandbox_config
from autonomous_pipeline.cli.search import ensure_searchable
from autonomous_pipeline.cli.server import ensure_server
from autonomous_pipeline.cli.terminal import safe
from autonomous_pipeline.config import Settings
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.forge import Publish
from autonomous_pipeline.models.plan import Plan
from autonomous_pipeline.models.reports import RunReport, Started
from autonomous_pipeline.models.results import (
    PlanResult,
    RunProgress,
    RunStatus,
    TaskStatus,
)
from autonomous_pipeline.models.run import (
    AgentConfig,
    ClaudeOptions,
    PlanRunInput,
    ReviewerConfig,
    RunOptions,
)
from autonomous_pipeline.models.sandbox import SandboxKind
from autonomous_pipeline.models.steer import RunInfo
from autonomous_pipeline.workflows.outcome import outcome_line
from autonomous_pipeline.workflows.plan import PlanWorkflow
from autonomous_pipeline.workflows.task import TaskWorkflow


@dataclass
class Target:
    client: Client
    embedded: bool
    ui_base: str | None
    address: str


def run_identity(repo: str, plan_bytes: bytes, settings: Settings, target: str) -> tuple[str, str]:
    """(run key, workflow id): the same command on the same plan content names the same run."""
    assert settings.plan is not None
    h = hashlib.sha256()
    for part in (
        repo,
        hashlib.sha256(plan_bytes).hexdigest(),
        settings.start_batch or "",
        settings.end_batch or "",
        target,
    ):
        h.update(part.encode() + b"\0")
    key = f"{slug(settings.plan.stem)[:40]}-{h.hexdigest()[:12]}"
    return key, RUN_PREFIX + key


# Temporal refuses a payload over 2 MiB (its default blob size limit); the run's input carries the
# parsed plan, so a plan that would not fit is refused before anything starts.
MAX_INPUT_BYTES = 1_800_000


def check_input_size(inp: PlanRunInput, plan_path: Path) -> None:
    size = len(inp.model_dump_json())
    if size > MAX_INPUT_BYTES:
        tasks = len(inp.plan.tasks)
        raise UsageError(
            f"{plan_path}: the plan is too large for one run ({tasks} tasks, "
            f"{size / 1e6:.1f} MB as the run's input; the limit is {MAX_INPUT_BYTES / 1e6:.1f} MB). "
            "Run it in parts with --start-batch/--end-batch."
        )


async def build_input(
    plan: Plan, plan_bytes: bytes, settings: Settings
) -> tuple[PlanRunInput, str]:
    assert settings.plan is not None
    checkouts = settings.max_checkouts
    if checkouts is not None and checkouts < settings.max_concurrent:
        raise UsageError(
            f"--max-checkouts {checkouts} is fewer than --max-concurrent "
            f"{settings.max_concurrent}: each agent works in a checkout of its own"
        )
    plan_name = slug(settings.plan.stem)
    target = settings.target_branch or f"pipeline/{plan_name}"
    facts = await check_repo(
        settings.repo.expanduser(), settings.base, target, settings.publish is Publish.PUSH
    )
    command = shlex.split(settings.agent_command) if settings.agent_command else []
    refuse_unknown_placeholders("--agent-command", command)
    claude = ClaudeOptions(
        binary=settings.claude_bin,
        model=settings.model,
        max_turns=settings.max_turns,
        permission_mode=settings.permission_mode,
        max_budget_usd=settings.max_budget_usd,
    )
    try:
        names = env_names(settings.agent_env)
    except ValueError as exc:
        raise UsageError(f"--agent-env: {exc}") from None
    agent = AgentConfig(
        backend=settings.agent,
        command=command,
        timeout_s=settings.agent_timeout,
        claude=claude,
        env=names,
    )
    reviewer = reviewer_config(settings, agent)
    sandbox = sandbox_config(settings, plan, facts.repo, facts.base_commit, agent, reviewer)
    await check_sandboxes(sandbox, plan, settings.workspace)
    # The agents' programs are the worker's own only where a batch runs in a worktree.
    on_host = SandboxKind.WORKTREE in kinds_of(plan)
    await check_agents(agent, reviewer, isolated=sandbox.isolated, on_host=on_host)
    run_key, workflow_id = run_identity(facts.repo, plan_bytes, settings, target)
    source, forge = facts.repo, None
    if settings.publish is Publish.PR:
        source, forge = await forge_config(settings, Path(facts.repo))
    if any(weakenings(sandbox.model_copy(update={"kind": k})) for k in kinds_of(plan)):
        # What this command line weakens, signed: workers holding the key will honour it.
        sandbox.grant = sandbox_grant(approver_key(), run_key, sandbox)
    options = RunOptions(
        repo=source,
        publish=settings.publish,
        forge=forge,
        base_ref=facts.base_ref,
        base_commit=facts.base_commit,
        target_branch=target,
        agent=agent,
        reviewer=reviewer,
        sandbox=sandbox,
        max_fix_rounds=settings.max_fix_rounds,
        approval=settings.approval,
        budget_usd=settings.budget_usd,
        max_concurrent=settings.max_concurrent,
        prepare_ahead=settings.prepare_ahead,
        max_checkouts=settings.max_checkouts,
        rerun_done=settings.rerun_done,
        verify_timeout_s=settings.verify_timeout,
        heartbeat_timeout_s=settings.heartbeat_timeout,
        worker_lost_timeout_s=settings.worker_lost_timeout,
        notify=notify_config(settings.notify),
    )
    inp = PlanRunInput(
        run_key=run_key,
        plan_name=plan_name,
        plan=plan,
        options=options,
        # Approvals count only when the operator's key signed them: its public half.
        approver=public_key(approver_key()),
    )
    check_input_size(inp, settings.plan)
    return inp, workflow_id


def refuse_unknown_placeholders(flag: str, command: list[str]) -> None:
    unknown = unknown_placeholders(command)
    if unknown:
        known = " ".join("{" + p + "}" for p in PLACEHOLDERS)
        raise UsageError(
            f"{flag}: unknown placeholder {', '.join(unknown)} (the placeholders are {known})"
        )


def reviewer_config(settings: Settings, agent: AgentConfig) -> ReviewerConfig:
    """The reviewer defaults to the agent's own backend; the literal agent has no one to review."""
    command = shlex.split(settings.reviewer_command) if settings.reviewer_command else []
    refuse_unknown_placeholders("--reviewer-command", command)
    if settings.reviewer:
        backend = settings.reviewer
    elif command:
        backend = "command"  # --reviewer-command alone says which reviewer
    elif agent.backend == "claude":
        backend = "claude"
    else:
        # The literal agent cannot review, and a command agent is a coder whose output is not a
        # verdict unless --reviewer-command says how to get one.
        backend = "none"
    claude = agent.claude.model_copy(update={"permission_mode": "plan"})  # a reviewer only reads
    return ReviewerConfig(
        backend=backend,
        command=command,
        timeout_s=settings.agent_timeout,
        claude=claude,
        env=agent.env,
    )


async def open_target(settings: Settings) -> Target:
    address = explicit_address(settings)
    if address:
        client = await connect_client(address, settings.namespace)
        return Target(client, False, ui_base_of(address, settings.ui_url), address)
    info = await ensure_server(settings.workspace)
    client = await connect_client(info.address, settings.namespace)
    return Target(client, True, settings.ui_url or info.ui_url, info.address)


def ui_link(target: Target, workflow_id: str) -> str | None:
    return workflow_link(target.ui_base, target.client.namespace, workflow_id)


async def previous_result(
    handle: WorkflowHandle,
) -> tuple[WorkflowExecutionStatus | None, PlanResult | None]:
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None, None
        raise
    if desc.status == WorkflowExecutionStatus.RUNNING:
        return desc.status, None
    try:
        return desc.status, await final_result(handle)
    except Exception:  # terminated, timed out: no result of ours
        return desc.status, None


async def refuse_shared_target(target: Target, inp: PlanRunInput, workflow_id: str) -> None:
    """Two runs merging into one target would each report the other's commits as theirs to
    check against: a second, different plan into a target with an open run is refused."""
    try:
        open_ = await open_runs_into(target.client, inp.options.repo, inp.options.target_branch)
    except RPCError as exc:  # a server whose visibility store cannot list: say so, go on
        print(
            f"warning: cannot check for other runs open on {inp.options.target_branch} "
            f"({exc.message})",
            file=sys.stderr,
        )
        return
    others = [r for r in open_ if r.workflow_id != workflow_id]
    if others:
        r = others[0]
        raise UsageError(
            f"run {r.workflow_id} (plan {r.plan}) is open on {inp.options.target_branch} of "
            f"{inp.options.repo}; wait for it, cancel it ({invocation.starter()} cancel {r.workflow_id}), "
            "choose another --target-branch, or pass --share-target"
        )


async def run_plan(plan: Plan, plan_bytes: bytes, settings: Settings) -> int:
    inp, workflow_id = await build_input(plan, plan_bytes, settings)
    err = console(stderr=True)
    out = console()
    target = await open_target(settings)
    handle = target.client.get_workflow_handle(workflow_id, result_type=PlanResult)
    status, before = await previous_result(handle)
    link = ui_link(target, workflow_id)
    if inp.options.forge is not None:
        inp.options.forge.web_ui = link  # in each pull request's body
    if inp.options.notify is not None:  # each notice links to its workflow's page
        inp.options.notify.links = workflow_link(target.ui_base, target.client.namespace, "")
    if (
        status is not None
        and status != WorkflowExecutionStatus.RUNNING
        and not settings.retry_failed
    ):
        if before is None:
            raise UsageError(f"run {workflow_id} ended without a result ({status.name.lower()})")
        err.print(
            f"run {workflow_id} already finished ({safe(outcome_line(before))}); reporting it",
            markup=False,
        )
        if before.status is not RunStatus.COMPLETED:
            err.print("re-run with --retry-failed to run its failed tasks again")
        return report(before, settings, out, link)
    if status == WorkflowExecutionStatus.RUNNING:
        err.print(f"attaching to run {workflow_id}, already in progress")
    else:
        if not settings.share_target:
            await refuse_shared_target(target, inp, workflow_id)
        if before is not None:  # --retry-failed: what merged before is recorded, not redone
            inp.merged_before = [
                t.id
                for t in before.tasks
                if t.status in (TaskStatus.MERGED, TaskStatus.DONE_BEFORE)
            ]
        inp.options.searchable = await ensure_searchable(target.client, target.embedded)
        handle = await target.client.start_workflow(
            PlanWorkflow.run,
            inp,
            id=workflow_id,
            task_queue=TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=f"Plan {inp.plan.title or inp.plan_name} → {inp.options.target_branch}",
            static_details=_details(inp),
            # Where the run came from, readable by `runs` and `status` without a worker.
            memo={
                "run": RunInfo(
                    plan=str(settings.plan),
                    repo=inp.options.repo,
                    target_branch=inp.options.target_branch,
                    workspace=str(settings.workspace) if target.embedded else None,
                )
            },
            # A replay of a large run (thousands of events) may take longer than the default
            # 10 s; it must not time out and start over, forever, after a worker restart.
            task_timeout=timedelta(seconds=60),
        )
        err.print(
            f"started run {workflow_id}: {len(plan.tasks)} tasks into {inp.options.target_branch}"
        )
    if link:
        print(f"Web UI: {link}", file=sys.stderr, flush=True)  # one line, never wrapped
    if settings.detach:
        if target.embedded:
            _spawn_worker(settings, target.address, workflow_id)
        started = Started(
            workflow_id=workflow_id, target_branch=inp.options.target_branch, ui_url=link
        )
        print(started.model_dump_json() if settings.json_output else workflow_id)
        return 0
    if target.embedded:
        from autonomous_pipeline.worker import make_worker

        # It honours what the operator's key granted (this command, if it weakened the sandbox).
        policy = WorkerPolicy(operator_key=approver_key())
        async with make_worker(target.client, settings.workspace, policy=policy):
            result = await follow(target.client, handle, err if settings.json_output else out)
    else:
        result = await follow(target.client, handle, err if settings.json_output else out)
    return report(result, settings, out, link)


def _details(inp: PlanRunInput) -> str:
    lines = [
        f"**Plan:** {inp.plan.title or inp.plan_name}",
        f"**Repository:** `{inp.options.repo}`",
        f"**Base:** `{inp.options.base_ref}` at `{inp.options.base_commit[:12]}`",
        f"**Target:** `{inp.options.target_branch}`",
        f"**Agent:** {inp.options.agent.backend}",
        "",
    ]
    for b in inp.plan.batches:
        lines.append(f"- Batch {b.id}: {b.title} ({len(b.tasks)} tasks)")
    return "\n".join(lines)


def _spawn_worker(settings: Settings, address: str, workflow_id: str) -> None:
    """A detached run on the embedded server needs a worker that outlives this command."""
    log = (settings.workspace / "worker.log").open("ab")
    subprocess.Popen(
        [
            *invocation.worker_argv(),
            "--address",
            address,
            "--workspace",
            str(settings.workspace),
            "--until",
            workflow_id,
            "--log-format",
            settings.log_format.value,
            *(["--metrics-port", str(settings.metrics_port)] if settings.metrics_port else []),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def follow(client: Client, handle: WorkflowHandle, console: Console) -> PlanResult:
    result_task = asyncio.create_task(final_result(handle))
    with ProgressView(console, live=is_terminal() and console.file is sys.stdout) as view:
        while not result_task.done():
            with contextlib.suppress(Exception):  # a query can fail while the server restarts
                view.update(await live_progress(client, handle))
            await asyncio.wait({result_task}, timeout=1.0)
    return result_task.result()


# What the task's own workflow knows better than the run while it runs.
LIVE_FIELDS = (
    "phase",
    "changed_files",
    "changed_total",
    "transcript",
    "approval_commit",
    "diffstat",
    "branch",
    "clone",
    "checks",
    "review_rounds",
    "agent_runs",
)


async def live_progress(client: Client, handle: WorkflowHandle[Any, Any]) -> RunProgress:
    """The run's status, with what each running task is doing, asked of the task itself: a task's
    steps live in its own workflow, and a query costs the run's history nothing (copying every
    step into the run would add an event per step to a history that must stay small)."""
    run = client.get_workflow_handle_for(PlanWorkflow.run, handle.id)
    progress = await run.query(PlanWorkflow.status_query)
    for t in progress.tasks:
        if t.status is TaskStatus.RUNNING and t.workflow_id:
            child = client.get_workflow_handle_for(TaskWorkflow.run, t.workflow_id)
            with contextlib.suppress(Exception):  # not started yet, or just ended
                live = await child.query(TaskWorkflow.status)
                for name in LIVE_FIELDS:
                    setattr(t, name, getattr(live, name))
    return progress


def report(result: PlanResult, settings: Settings, out: Console, ui_url: str | None = None) -> int:
    if settings.json_output:
        print(RunReport.finished_run(result, ui_url).model_dump_json())
    else:
        print_summary(result, out, repo=str(settings.repo.expanduser().resolve()))
    bad = any(t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) for t in result.tasks)
    return 1 if bad or result.status is not RunStatus.COMPLETED else 0
