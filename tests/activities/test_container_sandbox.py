"""The container sandbox through the real activities, with podman and an image built here.

Every step runs in a container of its own: the agent sees its checkout at /workspace and no
host file, no network unless given one; checks run in the image (a file only the image has);
timeouts and a dead worker's leftovers end with the container removed; what the agent makes
belongs to the worker's user.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.activities.agent import AgentActivities
from autonomous_pipeline.activities.verify import VerifyActivities
from autonomous_pipeline.backends.registry import make_agent
from autonomous_pipeline.backends.sandboxes.container import ContainerSandbox, worker_label
from autonomous_pipeline.backends.sandboxes.container_argv import (
    TASK_LABEL,
    WORKER_LABEL,
    WORKSPACE_LABEL,
)
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.activity_io import RunAgentIn, RunAgentOut, VerifyIn
from autonomous_pipeline.models.run import AgentConfig
from autonomous_pipeline.models.sandbox import (
    AgentNetwork,
    ContainerSpec,
    SandboxConfig,
    SandboxKind,
)
from tests.activities.conftest import RUN, Workspace, activity_env, task
from tests.activities.test_sandbox_attacks import OUTSIDE_SERVER, Listener, own_address
from tests.gitutil import sh
from tests.images import MARKER, busybox_image, podman, run_args
from tests.outside import outside_host


@pytest.fixture(autouse=True)
def container_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    image = busybox_image()
    monkeypatch.setenv("PIPELINE_CONTAINER_RUN_ARGS", run_args())
    yield image


def config(image: str, **spec: object) -> SandboxConfig:
    return SandboxConfig(
        kind=SandboxKind.CONTAINER,
        network=AgentNetwork.NONE,
        container=ContainerSpec.model_validate({"image": image} | spec),
    )


def labelled(task_key: str) -> list[str]:
    out = subprocess.run(
        [podman(), "ps", "-a", "-q", "--filter", f"label={TASK_LABEL}={task_key}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()


async def run(
    ws: Workspace, script: str, base: str, sandbox: SandboxConfig, timeout_s: float = 60
) -> RunAgentOut:
    inp = RunAgentIn(
        run_key=RUN,
        task=task(),
        base_commit=base,
        agent=AgentConfig(backend="command", command=["sh", "-c", script], timeout_s=timeout_s),
        sandbox=sandbox,
    )
    return await activity_env().run(AgentActivities(ws.sandboxes, make_agent).run_agent, inp)


async def test_the_agent_works_in_its_checkout_inside_the_image_and_sees_nothing_else(
    ws: Workspace, container_host: str
) -> None:
    base, wt = await ws.prepare()
    host_only = ws.tmp / "host-only.txt"
    host_only.write_text("the worker's file\n")
    script = f"""
        pwd > where.txt
        test -f {MARKER} && echo image >> where.txt
        test -e {host_only} || echo no-host-file >> where.txt
        test -e {ws.repo} || echo no-user-repo >> where.txt
        nc -w 2 192.0.2.1 80 </dev/null || echo no-network >> where.txt
        echo "$HOME $TMPDIR" >> where.txt
        echo hello > hello.txt
        mkdir -p deep/er && echo x > deep/er/made.txt
        """
    out = await run(ws, script, base, config(container_host))
    assert out.succeeded, out.error
    assert sorted(out.changed_files) == ["deep/er/made.txt", "hello.txt", "where.txt"]
    seen = (wt / "where.txt").read_text().split("\n")
    assert seen[:5] == ["/workspace", "image", "no-host-file", "no-user-repo", "no-network"]
    assert seen[5] == "/home/pipeline /tmp"
    # What the agent made belongs to the worker's user on the host.
    assert (wt / "deep" / "er" / "made.txt").stat().st_uid == os.getuid()
    assert labelled(f"{RUN}/1.1") == []  # every step's container is gone with it


async def test_checks_run_inside_the_image(ws: Workspace, container_host: str) -> None:
    base, _ = await ws.prepare()
    done = await run(ws, "echo x > x.txt", base, config(container_host))
    assert done.commit is not None
    inp = VerifyIn(
        run_key=RUN,
        task_id="1.1",
        commands=[f"test -f {MARKER}", "test -f x.txt", f"test -f {ws.repo}/README.md"],
        base_commit=base,
        sandbox=config(container_host),
    )
    out = await activity_env().run(VerifyActivities(ws.sandboxes).verify_task, inp)
    assert [c.passed for c in out.checks] == [True, True, False]
    assert not os.path.exists(MARKER)  # the host has no such file: it ran in the image
    # The failing one was run again on the base, in a container too, and failed there as well.
    assert out.checks[2].pre_existing and out.passed


async def test_a_timeout_kills_the_container(ws: Workspace, container_host: str) -> None:
    base, _ = await ws.prepare()
    out = await run(ws, "sleep 300", base, config(container_host), timeout_s=2)
    assert out.timed_out and not out.succeeded
    assert labelled(f"{RUN}/1.1") == []


async def test_a_cancelled_step_leaves_no_container(ws: Workspace, container_host: str) -> None:
    base, _ = await ws.prepare()
    step = asyncio.create_task(run(ws, "sleep 300", base, config(container_host)))
    for _ in range(100):
        if labelled(f"{RUN}/1.1"):
            break
        await asyncio.sleep(0.1)
    assert labelled(f"{RUN}/1.1"), "the step's container never started"
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert labelled(f"{RUN}/1.1") == []


def start_leftover(image: str, labels: dict[str, str], name: str | None = None) -> str:
    """A container as a killed worker leaves it: running, labelled, nobody waiting on it."""
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    flags += ["--name", name] if name else []
    out = subprocess.run(
        [podman(), "run", "-d", "--network", "none", *run_args().split(), *flags, image,
         "sleep", "300"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


async def test_the_next_attempt_removes_a_dead_attempts_container(
    ws: Workspace, container_host: str
) -> None:
    base, _ = await ws.prepare()
    # As a runner leaves it when its worker is killed: named in the task's records, running.
    name = f"ap-test-{os.getpid()}"
    records = ws.sb.layout.procs_dir(TaskRef(RUN, "1.1"))
    records.mkdir(parents=True, exist_ok=True)
    (records / f"{name}.container").touch()
    start_leftover(container_host, {TASK_LABEL: f"{RUN}/1.1"}, name)
    assert len(labelled(f"{RUN}/1.1")) == 1
    out = await run(ws, "echo again > again.txt", base, config(container_host))
    assert out.succeeded and labelled(f"{RUN}/1.1") == []


async def test_a_starting_worker_sweeps_what_dead_workers_left(
    ws: Workspace, container_host: str
) -> None:
    sandbox = ws.sandboxes.get(config(container_host))
    assert isinstance(sandbox, ContainerSandbox)
    ours = sandbox.workspace_label()
    dead = start_leftover(container_host, {WORKSPACE_LABEL: ours, WORKER_LABEL: "x/999999/1"})
    host = os.uname().nodename
    gone = start_leftover(
        container_host, {WORKSPACE_LABEL: ours, WORKER_LABEL: f"{host}/999999/12345"}
    )
    alive = start_leftover(container_host, {WORKSPACE_LABEL: ours, WORKER_LABEL: worker_label()})
    try:
        assert await sandbox.sweep() == 1
        listed = subprocess.run(
            [podman(), "ps", "-a", "-q", "--no-trunc"], capture_output=True, text=True, check=True
        ).stdout.split()
        # Another machine's worker is not ours to judge; this process is alive.
        assert gone not in listed and dead in listed and alive in listed
    finally:
        subprocess.run([podman(), "rm", "-f", "-t", "0", "--ignore", dead, alive, gone],
                       check=False, capture_output=True)  # fmt: skip


async def test_setup_env_and_named_variables(
    ws: Workspace, container_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, wt = await ws.prepare()
    monkeypatch.setenv("SHARED_SETTING", "from-the-worker")
    monkeypatch.setenv("NOT_NAMED", "stays-out")
    cfg = config(container_host, setup=["echo prepared > /etc/setup-ran"], env={"MODE": "test"})
    script = "cat /etc/setup-ran > seen.txt; env | sort >> seen.txt"
    inp = RunAgentIn(
        run_key=RUN,
        task=task(),
        base_commit=base,
        agent=AgentConfig(
            backend="command", command=["sh", "-c", script], timeout_s=60, env=["SHARED_SETTING"]
        ),
        sandbox=cfg,
    )
    out = await activity_env().run(AgentActivities(ws.sandboxes, make_agent).run_agent, inp)
    assert out.succeeded, out.error
    seen = (wt / "seen.txt").read_text()
    assert seen.startswith("prepared\n")
    assert "SHARED_SETTING=from-the-worker" in seen and "MODE=test" in seen
    assert "NOT_NAMED" not in seen and f"PATH={os.environ['PATH']}" not in seen


async def test_a_missing_image_fails_the_task_with_the_runtimes_word(ws: Workspace) -> None:
    base, wt = await ws.prepare()
    # No command ran, so none failed: the step fails for good with the engine's words, and
    # no registry is asked for the image.
    with pytest.raises(ApplicationError) as failed:
        await run(ws, "echo x > x.txt", base, config("localhost/no-such-image:0"))
    assert failed.value.type == "SandboxError" and failed.value.non_retryable
    said = str(failed.value)
    assert "podman could not run the step" in said and "no-such-image" in said
    assert "registry" not in said
    assert sh(wt, "status", "--porcelain") == ""


@pytest.mark.skipif(os.getuid() != 0, reason="the firewalled network is podman's as root")
async def test_internet_in_a_container_reaches_out_but_not_the_host_nor_the_metadata_service(
    ws: Workspace, container_host: str
) -> None:
    # podman's slirp4netns mode keeps only the host's loopback out; a service of this machine
    # on 0.0.0.0 answers on its other addresses, and clouds serve credentials at 169.254.169.254.
    here = own_address()
    if here is None:
        pytest.skip("this machine has no address but loopback")
    mine = Listener("0.0.0.0")
    try:
        with outside_host() as far:
            server = subprocess.Popen(
                far.argv(sys.executable, "-c", OUTSIDE_SERVER, far.address),
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
                base, wt = await ws.prepare()
                script = f"""
                    nc -w 3 {here} {mine.port} </dev/null > own.txt 2>&1; echo $? >> own.txt
                    nc -w 3 169.254.169.254 80 </dev/null > meta.txt 2>&1; echo $? >> meta.txt
                    nc -w 3 {far.address} 8080 </dev/null > far.txt 2>&1
                    """
                internet = config(container_host).model_copy(
                    update={"network": AgentNetwork.INTERNET}
                )
                out = await run(ws, script, base, internet)
            finally:
                server.kill()
    finally:
        mine.close()
    assert out.succeeded, out.error
    assert "hello" in (wt / "far.txt").read_text()  # the outside answers
    assert mine.accepted == 0 and "hello" not in (wt / "own.txt").read_text()
    assert (wt / "meta.txt").read_text().split()[-1] != "0"


@pytest.mark.skipif(os.getuid() != 0, reason="the firewalled network is podman's as root")
async def test_the_images_setup_runs_behind_the_same_firewall(
    ws: Workspace, container_host: str
) -> None:
    # Setup commands come from a file in the repository: they get no more network than a step.
    # (A comment of its own: a set-up image made earlier would be reused, its setup not run.)
    setup = ["nc -w 3 169.254.169.254 80 </dev/null 2>/etc/metadata-said || echo refused"
             f" > /etc/metadata-exit # {os.urandom(4).hex()}"]  # fmt: skip
    cfg = config(container_host, setup=setup).model_copy(update={"network": AgentNetwork.INTERNET})
    base, wt = await ws.prepare()
    before = set_up_images()
    try:
        out = await run(ws, "cat /etc/metadata-exit /etc/metadata-said > seen.txt", base, cfg)
    finally:  # its image is of this test alone: not kept in the machine's storage
        made = sorted(set_up_images() - before)
        if made:
            subprocess.run([podman(), "rmi", "-f", *made], capture_output=True, check=False)
    assert out.succeeded, out.error
    seen = (wt / "seen.txt").read_text()
    assert "refused" in seen and "Connection refused" in seen, seen


def set_up_images() -> set[str]:
    out = subprocess.run(
        [podman(), "images", "--format", "{{.Repository}}:{{.Tag}}",
         "--filter", "reference=localhost/autonomous-pipeline-env"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(out.stdout.split())
