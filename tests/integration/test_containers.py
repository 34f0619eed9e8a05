"""Batches in containers, end to end on the dev server with podman and images built here.

A plan whose batches name `container` (and `docker`) merges every task; its checks ran in the
image (they need a file only the image has); its agents saw neither the host's files nor a
network. A timeout and `cancel --now` end the container; a worker killed mid-agent is replaced,
the task resumes, and no container is left; the stub claude CLI in a Debian image resumes its
session after its worker was killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autonomous_pipeline.backends.sandboxes.container_argv import TASK_LABEL
from tests.conftest import ROOT, md
from tests.images import MARKER, busybox_image, debian_image, podman, run_args
from tests.integration.helpers import (
    DevServer,
    Procs,
    agent_log_path,
    assert_untouched,
    assert_workspace_clean,
    fsck,
    git,
    make_dirty_user_repo,
    process_env,
    repo_snapshot,
    run_key_of,
    start_worker,
    starter,
    tail,
    trailers,
    wait_finished,
    wait_for,
)

pytestmark = pytest.mark.integration
FIXTURES = ROOT / "tests" / "fixtures" / "claude"


def containers_of(run_key: str) -> list[str]:
    """The containers, running or not, of any task of the run."""
    out = subprocess.run(
        [podman(), "ps", "-a", "--format", f'{{{{index .Labels "{TASK_LABEL}"}}}}'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line for line in out.stdout.split() if line.startswith(f"{run_key}/")]


class Scene:
    def __init__(self, tmp: Path, procs: Procs, plan: str, run_args_extra: str = "") -> None:
        self.tmp, self.procs = tmp, procs
        self.env = process_env(tmp) | {
            "PIPELINE_CONTAINER_RUN_ARGS": f"{run_args()} {run_args_extra}".strip()
        }
        self.server = DevServer(procs, tmp, self.env)
        self.server.start()
        self.workspace = tmp / "ws"
        self.repo = make_dirty_user_repo(tmp / "repo")
        self.before = repo_snapshot(self.repo, "pipeline/box-plan")
        self.plan = tmp / "box-plan.md"
        self.plan.write_text(plan)
        self.workers: list[subprocess.Popen[bytes]] = []

    def worker(self) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{len(self.workers) + 1}.log"
        proc = start_worker(self.procs, self.server.address, self.workspace, log, self.env)
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(tail(p) for p in sorted(self.tmp.glob("*.log")))

    def start(self, *args: str) -> str:
        argv = [
            *("--plan", str(self.plan), "--repo", str(self.repo)),
            *("--address", self.server.address, "--workspace", str(self.workspace)),
            *("--heartbeat-timeout", "3", "--detach", "--json", *args),
        ]
        res = starter(argv, self.env, self.tmp)
        assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{self.logs()}"
        return str(json.loads(res.stdout)["workflow_id"])

    def finished(self, wid: str, timeout: float = 120) -> dict[str, Any]:
        return wait_finished(wid, self.server.address, self.env, self.tmp, timeout, self.logs)

    def status(self, wid: str) -> dict[str, Any]:
        res = starter(
            ["status", wid, "--json", "--address", self.server.address], self.env, self.tmp
        )
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout))


@pytest.fixture
def scene_factory(tmp_path: Path, procs: Procs) -> Iterator[Any]:
    busybox_image()
    made: list[Scene] = []

    def make(plan: str, run_args_extra: str = "") -> Scene:
        made.append(Scene(tmp_path, procs, plan, run_args_extra))
        return made[-1]

    yield make


PLAN = md(
    """
    # Box plan
    ## Batch 1: In containers
    **Execution Mode:** container
    ### Task 1.1: one
    **Files:**
    - Create: `out/1.1.txt`
    **Verification:**
    - `test -f {marker} || test ! -f out/1.1.txt`
    - `grep -qx 1.1 out/1.1.txt`
    ### Task 1.2: two
    **Files:**
    - Create: `out/1.2.txt`
    **Verification:**
    - `test -f {marker} || test ! -f out/1.2.txt`

    ## Batch 2: After them
    **Dependencies:** Batch 1
    **Execution Mode:** docker
    ### Task 2.1: three
    **Files:**
    - Create: `out/2.1.txt`
    **Verification:**
    - `test -f out/1.1.txt && test -f out/1.2.txt`
    """
).replace("{marker}", MARKER)


def agent(script: str) -> list[str]:
    return ["--agent", "command", "--agent-command", f"sh -c '{script}' sh {{task_id}}"]


def test_a_container_plan_merges_with_checks_run_in_the_image(scene_factory: Any) -> None:
    scene = scene_factory(PLAN)
    host_file = scene.tmp / "host-secret.txt"
    host_file.write_text("the worker's\n")
    script = (
        'mkdir -p out && echo "$1" > "out/$1.txt"; '
        f'(test -e {host_file} && echo host-visible || echo no-host-file) > "out/$1.seen"; '
        '(nc -w 2 192.0.2.1 80 </dev/null && echo net || echo no-network) >> "out/$1.seen"'
    )
    scene.worker()
    wid = scene.start(*agent(script), "--container-image", busybox_image())
    result = scene.finished(wid)
    assert result["status"] == "completed", f"{result}\n{scene.logs()}"
    assert {t["id"]: t["status"] for t in result["tasks"]} == dict.fromkeys(
        ["1.1", "1.2", "2.1"], "merged"
    )
    target = "pipeline/box-plan"
    for tid in ("1.1", "1.2", "2.1"):
        assert git(scene.repo, "show", f"{target}:out/{tid}.seen").split() == [
            "no-host-file",
            "no-network",
        ]
    # Verified, though outside the image the first check fails on the task and passes on its
    # base (a failure the task would be blamed for): it ran in the image.
    assert not os.path.exists(MARKER)
    assert containers_of(run_key_of(wid)) == []
    fsck(scene.repo)
    assert_workspace_clean(scene.workspace, scene.repo, run_key_of(wid))
    assert_untouched(scene.before, repo_snapshot(scene.repo, target))


TWO = md(
    """
    # Box plan
    ## Batch 1: Slow
    **Execution Mode:** container
    ### Task 1.1: one
    ### Task 1.2: two
    """
)


def test_a_timeout_and_cancel_now_end_the_container(scene_factory: Any) -> None:
    scene = scene_factory(TWO)
    scene.worker()
    image = busybox_image()
    timed = scene.start(*agent("sleep 300"), "--container-image", image, "--agent-timeout", "3")
    result = scene.finished(timed)
    assert {t["status"] for t in result["tasks"]} == {"failed"}
    assert all("timed out after 3 s" in t["error"] for t in result["tasks"]), result
    assert containers_of(run_key_of(timed)) == []

    scene.plan.write_text(TWO.replace("Slow", "Cancelled"))  # another plan: another run
    wid = scene.start(*agent("sleep 300"), "--container-image", image, "--max-concurrent", "1")
    wait_for(lambda: containers_of(run_key_of(wid)), 60, "a container to run", on_fail=scene.logs)
    res = starter(["cancel", wid, "--now", "--address", scene.server.address], scene.env, scene.tmp)
    assert res.returncode == 0, res.stderr
    final = scene.finished(wid, 60)
    assert final["status"] == "cancelled" and {t["status"] for t in final["tasks"]} == {"cancelled"}
    assert containers_of(run_key_of(wid)) == []


ONE = md(
    """
    # Box plan
    ## Batch 1: Killed
    **Execution Mode:** container
    ### Task 1.1: one
    **Files:**
    - Create: `done.txt`
    """
)


def test_a_worker_killed_mid_agent_leaves_no_container(scene_factory: Any) -> None:
    scene = scene_factory(ONE)
    first = scene.worker()
    wid = scene.start(*agent("sleep 4; echo done > done.txt"), "--container-image", busybox_image())
    wait_for(
        lambda: containers_of(run_key_of(wid)), 60, "the agent's container", on_fail=scene.logs
    )
    time.sleep(1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    # Its container does not die with the worker: the next worker removes it as it starts.
    assert containers_of(run_key_of(wid)) == [f"{run_key_of(wid)}/1.1"]
    scene.worker()
    result = scene.finished(wid)
    (task,) = result["tasks"]
    assert task["status"] == "merged" and task["attempts"] == 2, f"{result}\n{scene.logs()}"
    assert trailers(scene.repo, "pipeline/box-plan") == [f"Pipeline-Task: {run_key_of(wid)}/1.1"]
    assert containers_of(run_key_of(wid)) == []


CLAUDE_WRAPPER = """#!/usr/bin/python3
# The stub claude CLI inside the image: a slow session that writes hello.py.
import os, sys
os.environ.update(
    STUB_CLAUDE_LOG={log!r},
    STUB_CLAUDE_FIXTURE="/opt/stub/success.jsonl",
    STUB_CLAUDE_DELAY="0.5",
    STUB_CLAUDE_WRITE="hello.py",
    STUB_CLAUDE_SESSIONS="home",  # where the CLI keeps them: the task's HOME, mounted
)
os.execv(sys.executable, [sys.executable, "/opt/stub/stub_claude.py", *sys.argv[1:]])
"""
HELLO = md(
    """
    # Box plan
    ## Batch 1: Claude
    **Execution Mode:** container
    ### Task 1.1: Say hello
    **Files:**
    - Create: `hello.py`
    """
)


def test_the_stub_claude_in_a_debian_image_resumes_its_session(
    scene_factory: Any, tmp_path: Path
) -> None:
    image = debian_image()
    stub = tmp_path / "stub"
    stub.mkdir()
    log = agent_log_path(tmp_path, "claude-calls.jsonl")
    for name in ("stub_claude.py", "success.jsonl"):
        (stub / name).write_bytes((FIXTURES / name).read_bytes())
    (stub / "claude").write_text(CLAUDE_WRAPPER.format(log=str(log)))
    (stub / "claude").chmod(0o755)
    mounts = f"-v {stub}:/opt/stub:ro -v {log.parent}:{log.parent}:rw"
    scene = scene_factory(HELLO, mounts)
    scene.env["ANTHROPIC_API_KEY"] = "sk-test-not-a-real-key"
    first = scene.worker()
    wid = scene.start(
        "--agent", "claude", "--claude-bin", "/opt/stub/claude", "--reviewer", "none",
        "--container-image", image,
    )  # fmt: skip

    def calls() -> list[dict[str, Any]]:
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    wait_for(lambda: calls(), 60, "claude to start in its container", on_fail=scene.logs)
    time.sleep(1.5)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    scene.worker()
    result = scene.finished(wid)
    (task,) = result["tasks"]
    assert task["status"] == "merged", f"{result}\n{scene.logs()}\n{calls()}"
    argvs = [c["argv"] for c in calls() if "argv" in c]
    flags = [
        a[a.index("--session-id") if "--session-id" in a else a.index("--resume")] for a in argvs
    ]
    assert flags == ["--session-id", "--resume"], argvs  # the session was found after the kill
    assert {c["cwd"] for c in calls() if "cwd" in c} == {"/workspace"}
    assert {a[a.index("--permission-mode") + 1] for a in argvs} == {"bypassPermissions"}
    assert git(scene.repo, "show", "pipeline/box-plan:hello.py") == "edited by the stub claude"
    assert containers_of(run_key_of(wid)) == []
