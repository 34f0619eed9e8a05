"""Agents that try to get out of the worktree sandbox, and fail. Each test is one attack.

Run through the real run_agent activity, in the default sandbox (namespaces and Landlock), as
root where CI runs. What the attacks were on the old confinement: an agent read the server's
port from the workspace and started a run of its own; left daemons that outlived it; killed its
worker; read the worker's secrets from /proc and committed them; planted symlinks into .git.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autonomous_pipeline.activities.agent import AgentActivities
from autonomous_pipeline.backends.registry import make_agent
from autonomous_pipeline.models.activity_io import RunAgentIn, RunAgentOut
from autonomous_pipeline.models.run import AgentConfig
from autonomous_pipeline.models.sandbox import AgentNetwork, SandboxConfig
from tests.activities.conftest import RUN, Workspace, activity_env, task
from tests.activities.test_misbehaving_agents import processes_with, wait_gone
from tests.gitutil import sh
from tests.outside import outside_host
from tests.sandboxes import ISOLATED, needs_bwrap

pytestmark = needs_bwrap
INTERNET = ISOLATED.model_copy(update={"network": AgentNetwork.INTERNET})


async def run(
    ws: Workspace,
    script: str,
    base: str,
    sandbox: SandboxConfig = ISOLATED,
    env: list[str] | None = None,
    timeout_s: float = 60,
) -> RunAgentOut:
    inp = RunAgentIn(
        run_key=RUN,
        task=task(),
        base_commit=base,
        agent=AgentConfig(
            backend="command", command=["sh", "-c", script], timeout_s=timeout_s, env=env or []
        ),
        sandbox=sandbox,
    )
    return await activity_env().run(AgentActivities(ws.sandboxes, make_agent).run_agent, inp)


class Listener:
    """A TCP server that counts the connections it accepts: a stand-in for the control plane."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def frontend() -> Iterator[Listener]:
    listener = Listener("127.0.0.1")
    yield listener
    listener.close()


def own_address() -> str | None:
    """An address of this machine that is not loopback (a service on 0.0.0.0 answers there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # nothing is sent: it only picks a route
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


OUTSIDE_SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 8080))
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nhello"); c.close()
"""


PROBE = """
import json, socket, sys
ws, port = sys.argv[1], int(sys.argv[2])
out = {}
for name in ("server.json", "temporal.db", "worker.log"):
    try:
        open(f"{ws}/{name}", "rb").read(1)
        out[name] = "read"
    except OSError as exc:
        out[name] = type(exc).__name__
def connect(host, port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "connected: " + s.recv(64).decode(errors="replace")
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()
out["loopback"] = connect("127.0.0.1", port)
out["via slirp"] = connect("10.0.2.2", port)
if len(sys.argv) > 4:
    out["own address"] = connect(sys.argv[3], int(sys.argv[4]))
    out["outside"] = connect(sys.argv[5], 8080)
    out["metadata"] = connect("169.254.169.254", 80)
json.dump(out, open("probe.json", "w"))
"""


@pytest.mark.parametrize("network", [AgentNetwork.NONE, AgentNetwork.INTERNET])
async def test_the_control_plane_is_out_of_reach(
    ws: Workspace, frontend: Listener, network: AgentNetwork
) -> None:
    # Attack 1: read the embedded server's address from the workspace, connect, start a run.
    base, wt = await ws.prepare()
    (ws.tmp / "ws" / "server.json").write_text(json.dumps({"port": frontend.port}))
    (ws.logs / "probe.py").write_text(PROBE)  # where the sandbox can read it
    args = [str(ws.tmp / "ws"), str(frontend.port)]
    with contextlib.ExitStack() as stack:
        here = own_address() if network is AgentNetwork.INTERNET else None
        if here is not None:
            mine = Listener("0.0.0.0")  # a service of this machine's, on every address
            stack.callback(mine.close)
            far = stack.enter_context(outside_host())
            server = subprocess.Popen(
                far.argv(sys.executable, "-c", OUTSIDE_SERVER, far.address),
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            stack.callback(server.kill)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            args += [here, str(mine.port), far.address]
        script = f"python3 {ws.logs}/probe.py {' '.join(args)}"
        out = await run(ws, script, base, ISOLATED.model_copy(update={"network": network}))
        assert out.succeeded, out.error
        seen = json.loads((wt / "probe.json").read_text())
        # The workspace's control files are not there at all, and its loopback is its own.
        assert {seen[n] for n in ("server.json", "temporal.db", "worker.log")} == {
            "FileNotFoundError"
        }
        assert not seen["loopback"].startswith("connected") and frontend.accepted == 0
        assert not seen["via slirp"].startswith("connected")
        if here is not None:
            # Nor this machine's own services on its other addresses ...
            assert not seen["own address"].startswith("connected") and mine.accepted == 0
            # ... while `internet` does reach a host outside.
            assert seen["outside"] == "connected: HTTP/1.0 200 OK\r\n\r\nhello"
            # Nor a cloud's metadata service (an instance's credentials): refused at once.
            assert seen["metadata"] == "ConnectionRefusedError"


@pytest.mark.parametrize("timeout", [False, True], ids=["finished", "timed-out"])
async def test_daemons_die_with_the_step(ws: Workspace, timeout: bool) -> None:
    # Attack 3: processes that outlive the agent, re-parented away from its process group.
    base, _ = await ws.prepare()
    mark = f"{os.getpid()}{time.monotonic_ns() % 10**6}"
    script = f"""
        setsid nohup sleep 301.{mark} >/dev/null 2>&1 &
        nohup sleep 302.{mark} >/dev/null 2>&1 &
        (trap '' TERM HUP; exec sleep 303.{mark}) &
        sh -c 'setsid sh -c "sleep 304.{mark}" &' &
        sleep 0.5
        {"sleep 300" if timeout else "echo done"}
        """
    out = await run(ws, script, base, timeout_s=3 if timeout else 60)
    assert out.timed_out is timeout
    assert wait_gone(mark) == [], "a daemon outlived its agent"


async def test_the_worker_is_out_of_reach_of_signals(ws: Workspace) -> None:
    # Attack 4: `kill -9 $PPID` (and anything else it can find) from the agent.
    base, wt = await ws.prepare()
    me = os.getpid()
    script = f"""
        ls /proc | grep -c '^[0-9]' > seen.txt
        test -e /proc/{me} && echo worker-visible >> seen.txt
        kill -9 {me} 2>>seen.txt; kill -9 $PPID 2>>seen.txt; kill -9 1 2>>seen.txt
        echo still-here >> seen.txt
        """
    out = await run(ws, script, base)
    assert out.succeeded, out.error  # and this process, the worker, is still here to say so
    seen = (wt / "seen.txt").read_text()
    assert int(seen.split()[0]) < 10 and "worker-visible" not in seen and "still-here" in seen


async def test_secrets_of_the_worker_are_not_there_to_read(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Attack 5: read what the agent was not given from /proc, print it encoded, commit it.
    base, wt = await ws.prepare()
    secret = "wk-5ecret-" + os.urandom(8).hex()
    monkeypatch.setenv("WORKER_API_TOKEN", secret)
    # /proc/PID/environ shows what a process started with: a process of the worker's that
    # started with the secret, as the worker itself did.
    holder = subprocess.Popen(["sleep", "120"], env={**os.environ, "WORKER_API_TOKEN": secret})
    script = f"""
        for f in /proc/*/environ /proc/$PPID/environ /proc/1/environ /proc/{holder.pid}/environ; do
            cat "$f" 2>/dev/null
        done | tr '\\0' '\\n' > environ.txt
        env >> environ.txt
        base64 environ.txt; base64 environ.txt > environ.b64
        """
    try:
        out = await run(ws, script, base)
    finally:
        holder.kill()
        holder.wait()
    assert out.succeeded, out.error
    found = (wt / "environ.txt").read_text() + (wt / "environ.b64").read_text()
    assert "WORKER_API_TOKEN" not in found and secret not in found
    transcript = Path(out.transcript or "").read_text()
    assert secret not in transcript and base64.b64encode(secret.encode()).decode() not in transcript
    assert secret not in sh(wt, "log", "-p", "-1")


async def test_the_workers_home_is_not_there_to_read(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The token stores of tools no list names (a Copilot login, glab's config), a socket in
    # HOME: the worker's HOME is hidden whole, and only its toolchains come back.
    home = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="ap-home-"))
    try:
        (home / ".config/github-copilot").mkdir(parents=True)
        (home / ".config/github-copilot/hosts.json").write_text('{"oauth_token": "gho_x"}')
        (home / ".local/bin").mkdir(parents=True)
        (home / ".local/bin/tool").write_text("#!/bin/sh\necho tool-ran\n")
        (home / ".local/bin/tool").chmod(0o755)
        monkeypatch.setenv("HOME", str(home))
        base, wt = await ws.prepare()
        script = f"""
            cat {home}/.config/github-copilot/hosts.json > got.txt 2>/dev/null
            ls -A {home} >> got.txt
            {home}/.local/bin/tool >> got.txt
            """
        out = await run(ws, script, base)
    finally:
        shutil.rmtree(home)
    assert out.succeeded, out.error
    got = (wt / "got.txt").read_text().split()
    assert "gho_x" not in " ".join(got) and ".config" not in got
    assert "tool-ran" in got


@pytest.mark.parametrize("encode", ["plain", "base64", "hex"])
async def test_a_named_secret_is_never_committed(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, encode: str
) -> None:
    # The agent was given a credential to do its work; it must not land in the repository.
    base, wt = await ws.prepare()
    monkeypatch.setenv("DEPLOY_TOKEN", "dpl-" + os.urandom(10).hex())
    how = {"plain": "cat", "base64": "base64 -w0", "hex": "od -An -tx1 | tr -d ' \\n'"}[encode]
    script = f'printf %s "pad$DEPLOY_TOKEN" | {how} > config.txt; echo work > work.txt'
    out = await run(ws, script, base, env=["DEPLOY_TOKEN"])
    assert not out.succeeded and out.commit is None
    assert "config.txt holds the value of one of the worker's secrets" in (out.error or "")
    assert sh(wt, "rev-parse", "HEAD") == base


async def test_symlinks_into_git_are_never_merged(ws: Workspace) -> None:
    # Attack 7: in the user's checkout, x and y would point into the real .git.
    base, wt = await ws.prepare()
    out = await run(ws, "ln -s .git/config x; ln -s .git y; echo ok > ok.txt", base)
    assert not out.succeeded and out.commit is None
    assert "into .git" in (out.error or "")
    assert sh(wt, "rev-parse", "HEAD") == base
    assert not processes_with(str(wt))


@pytest.mark.skipif(os.getuid() != 0, reason="making a shared mount needs root")
async def test_a_sandboxs_network_leaves_the_hosts_mounts_alone(
    ws: Workspace, tmp_path: Path
) -> None:
    # podman keeps its containers' network namespaces under a shared mount (/run/netns); a
    # sandbox whose network tore down the host's mounts there broke every running container.
    shared, inner = tmp_path / "shared", tmp_path / "shared" / "inner"
    inner.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(inner)], check=True)
        base, _ = await ws.prepare()
        out = await run(ws, "echo x > x.txt", base, INTERNET)
        assert out.succeeded, out.error
        mounted = Path("/proc/self/mountinfo").read_text()
        assert f" {inner} " in mounted, "the host lost a mount to the sandbox"
    finally:
        subprocess.run(["umount", "-R", str(shared)], check=False)


async def test_what_an_agent_may_do_inside(ws: Workspace) -> None:
    # The wall is what lets the agent have everything inside it.
    base, wt = await ws.prepare()
    script = """
        echo t > "$TMPDIR/t" && echo tmp >> can.txt
        echo h > "$HOME/h" && echo home >> can.txt
        python3 -c 'import multiprocessing as m; m.Lock()' && echo semaphores >> can.txt
        git status --porcelain >/dev/null && git log -1 --format=%s >/dev/null && echo git >> can.txt
        git commit -q --allow-empty -m mine 2>/dev/null || echo no-commit >> can.txt
        """
    out = await run(ws, script, base)
    assert out.succeeded, out.error
    assert (wt / "can.txt").read_text().split() == ["tmp", "home", "semaphores", "git", "no-commit"]
