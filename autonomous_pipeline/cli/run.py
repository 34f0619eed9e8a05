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
from temporalio.service import RPCError, RPCStatusCode

from autonomous_pipeline.backends.agents.command import PLACEHOLDERS, unknown_placeholders
from autonomous_pipeline.backends.sandboxes.policy import WorkerPolicy, sandbox_grant, weakenings
from autonomous_pipeline.backends.secrets import env_names
from autonomous_pipeline.cli import invocation
from autonomous_pipeline.cli.approval import approver_key, public_key
from autonomous_pipeline.cli.connect import (
    RUN_PREFIX,
    connect_client,
    ui_base_of,
    workflow_link,
)
from autonomous_pipeline.cli.locate import explicit_address, worker_seen
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
from autonomous_pipeline.cli.revise import (
    ANSWER_WAIT_S,
    NoAnswer,
    RevisionRefused,
    print_reply,
    start_only,
    start_or_revise,
)
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


def run_identity(repo: str, plan_path: Path, target: str) -> tuple[str, str]:
    """(run key, workflow id): one open run per repository, plan file and target branch. The
    same file, edited, is a revision of its run (cli.revise), not a second run beside it."""
    h = hashlib.sha256()
    for part in (repo, str(plan_path.expanduser().resolve()), target):
        h.update(part.encode() + b"\0")
    key = f"{slug(plan_path.stem)[:40]}-{h.hexdigest()[:12]}"
    return key, RUN_PREFIX + key


def legacy_identity(
    repo: str, plan_bytes: bytes, settings: Settings, target: str
) -> tuple[str, str]:
    """(run key, workflow id) as starters named runs before revisions: by the plan's content.
    A run started so is found, attached to or reported, by the same command on the same file."""
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


def plan_digest(plan_bytes: bytes, settings: Settings) -> str:
    """What the run is asked to do: the file's content and the batches selected from it. Equal
    digests are the same revision; a finished run of another digest is started again."""
    h = hashlib.sha256()
    for part in (
        hashlib.sha256(plan_bytes).hexdigest(),
        settings.start_batch or "",
        settings.end_batch or "",
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


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


@dataclass
class Identity:
    workflow_id: str
    legacy_key: str  # the run's name before revisions (legacy_identity)
    legacy_id: str


async def build_input(
    plan: Plan, plan_bytes: bytes, settings: Settings
) -> tuple[PlanRunInput, Identity]:
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
    run_key, workflow_id = run_identity(facts.repo, settings.plan, target)
    legacy_key, legacy_id = legacy_identity(facts.repo, plan_bytes, settings, target)
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
        history_limit=settings.history_limit,
    )
    inp = PlanRunInput(
        run_key=run_key,
        plan_name=plan_name,
        plan=plan,
        options=options,
        # Approvals count only when the operator's key signed them: its public half.
        approver=public_key(approver_key()),
        plan_digest=plan_digest(plan_bytes, settings),
    )
    check_input_size(inp, settings.plan)
    return inp, Identity(workflow_id, legacy_key, legacy_id)


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


async def run_plan(
    plan: Plan, plan_bytes: bytes, settings: Settings, outside: frozenset[str] = frozenset()
) -> int:
    """`outside`: the file's tasks the batch selection leaves out (cli.plan_input.PlanFile)."""
    inp, identity = await build_input(plan, plan_bytes, settings)
    err = console(stderr=True)
    out = console()
    target = await open_target(settings)
    workflow_id = identity.workflow_id
    handle = target.client.get_workflow_handle(workflow_id, result_type=PlanResult)
    status, before = await previous_result(handle)
    if status is None:  # none by this file's name: one started before revisions, by its content?
        legacy = target.client.get_workflow_handle(identity.legacy_id, result_type=PlanResult)
        status, before = await previous_result(legacy)
        if status is not None:
            workflow_id, inp.run_key, handle = identity.legacy_id, identity.legacy_key, legacy
            sandbox = inp.options.sandbox
            if sandbox.grant is not None:  # the grant names the run: signed again for this one
                sandbox.grant = sandbox_grant(approver_key(), inp.run_key, sandbox)
    link = ui_link(target, workflow_id)
    if inp.options.forge is not None:
        inp.options.forge.web_ui = link  # in each pull request's body
    if inp.options.notify is not None:  # each notice links to its workflow's page
        inp.options.notify.links = workflow_link(target.ui_base, target.client.namespace, "")
    open_ = status == WorkflowExecutionStatus.RUNNING
    if open_ and settings.retry_failed:
        err.print(
            f"run {workflow_id} is still open: --retry-failed is for a run that has ended (to "
            f"run one of its tasks again now: {invocation.starter()} retry {workflow_id} TASK)"
        )
    if status is not None and not open_:
        if before is None:
            err.print(
                f"run {workflow_id} ended without a result ({status.name.lower()}); a new run of "
                "the plan starts (what it merged is found on the target: those tasks end on_target)"
            )
        same = before is not None and before.plan_digest in (None, inp.plan_digest)
        if same and not settings.retry_failed:
            assert before is not None
            err.print(
                f"run {workflow_id} already finished ({safe(outcome_line(before))}); reporting it",
                markup=False,
            )
            if before.status is not RunStatus.COMPLETED:
                err.print("re-run with --retry-failed to run its failed tasks again")
            return report(before, settings, out, link)
        if before is not None:  # what merged before is recorded, not redone
            inp.merged_before = [
                t.id
                for t in before.tasks
                if t.status in (TaskStatus.MERGED, TaskStatus.DONE_BEFORE)
            ]
            if not same:
                err.print(
                    f"run {workflow_id} has ended and the plan has changed since: a new run of "
                    f"it starts; the {len(inp.merged_before)} tasks it merged are not redone"
                )
    if not open_:
        if not settings.share_target:
            await refuse_shared_target(target, inp, workflow_id)
        inp.options.searchable = await ensure_searchable(target.client, target.embedded)
    elif not target.embedded and not await worker_seen(target.client):
        raise UsageError(
            f"run {workflow_id} is open, but no worker is running it: its revision would wait "
            f"for one; start one ({invocation.worker()} --address {target.address}) and run this "
            "command again"
        )
    start = {
        "static_summary": f"Plan {inp.plan.title or inp.plan_name} → {inp.options.target_branch}",
        "static_details": _details(inp),
        # Where the run came from, readable by `runs` and `status` without a worker.
        "memo": {
            "run": RunInfo(
                plan=str(settings.plan),
                repo=inp.options.repo,
                target_branch=inp.options.target_branch,
                workspace=str(settings.workspace) if target.embedded else None,
            )
        },
        # A replay of a large run (thousands of events) may take longer than the default
        # 10 s; it must not time out and start over, forever, after a worker restart.
        "task_timeout": timedelta(seconds=60),
    }
    plan_file = str(settings.plan)
    async with contextlib.AsyncExitStack() as stack:
        # The call waits for a worker to take the revision: this command's own, if it runs one.
        if target.embedded and settings.detach:
            _spawn_worker(settings, target.address, workflow_id)
        elif target.embedded:
            from autonomous_pipeline.worker import make_worker

            # It honours what the operator's key granted (this command, if it weakened the sandbox).
            policy = WorkerPolicy(operator_key=approver_key())
            await stack.enter_async_context(
                make_worker(target.client, settings.workspace, policy=policy)
            )
        try:
            if not open_ and not target.embedded and not await worker_seen(target.client):
                # No worker to take the start's revision (the same plan): started plainly, the
                # run waits for one.
                await start_only(target.client, inp, workflow_id, start)
                raise NoAnswer()
            reply = await start_or_revise(
                target.client, inp, workflow_id, plan_file, start, open_, outside
            )
        except RevisionRefused:
            err.print(f"run {workflow_id} refused the revision; it goes on unchanged")
            raise
        except NoAnswer:
            if open_:
                raise UsageError(
                    f"no worker answered run {workflow_id} within {ANSWER_WAIT_S:.0f} s: the "
                    "revision is not confirmed (it takes effect if a worker takes the run soon); "
                    "run this command again to see"
                ) from None
            err.print(f"no worker has taken run {workflow_id} yet; it starts when one does")
            reply = None
        if not open_:
            err.print(
                f"started run {workflow_id}: {len(plan.tasks)} tasks into "
                f"{inp.options.target_branch}"
            )
        elif reply is not None:
            print_reply(reply, workflow_id, err)
        if link:
            print(f"Web UI: {link}", file=sys.stderr, flush=True)  # one line, never wrapped
        if settings.detach:
            started = Started(
                workflow_id=workflow_id,
                target_branch=inp.options.target_branch,
                ui_url=link,
                revision=reply if open_ else None,
            )
            print(started.model_dump_json() if settings.json_output else workflow_id)
            return 0
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
