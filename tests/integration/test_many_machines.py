"""Two machines, one cluster: workers on two hosts share a run, and when one host dies for good
mid-agent, the other host claims its task and the run completes.

The hosts are Linux network namespaces (`ip netns`). Each one connects to this machine through its
own veth pair (10.213.N.1/30 <-> .2, 10.213.N.5/30 <-> .6). The dev server listens on this
machine (0.0.0.0; see ClusterServer for why not the veth addresses alone), and each host's
worker reaches it over its own link, at the host-side address of that link. Each host runs one
`worker.py` inside its namespace, with a workspace of its own. To the pipeline that is a machine
of its own: its own workspace queue, clone and worktrees. The starter runs on this machine, as
from an operator's laptop.

The repository is a bare repository on a local path that both hosts see (`ip netns exec` keeps
the filesystem: its mount namespace is a copy of ours). `git daemon` would not work: the starter
takes `--repo` only as a local directory (preflight.check_repo refuses anything else). A path
that every machine sees is what shared storage gives real machines. The network under test is
the one to the Temporal frontend, not git's.

The story: task 1.1's agent is slow the first time it runs and quick after that; the other tasks
are quick, and they spread over both hosts as the workers claim them. Once they have merged and
1.1's agent is running on one host, that host's worker gets SIGKILL (its whole process group)
and is never started again. The agent step's heartbeat times out, and its retry waits on the
dead machine's queue until `--worker-lost-timeout`. Then the task is claimed again by the other
host, the only one left, where it starts over and merges. Every task lands on the target exactly
once. Only the killed task's agent ran twice, and its first run never finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from examples.make_demo_repo import make_demo_repo
from tests.conftest import md
from tests.integration.helpers import (
    PYTHON,
    ROOT,
    DevServer,
    Procs,
    agent_command,
    agent_runs,
    assert_merged_once,
    assert_no_agent_alive,
    assert_workspace_clean,
    fsck,
    git,
    kill_group,
    process_env,
    run_key_of,
    starter,
    tail,
    wait_finished,
    wait_for,
    write_agent,
)

pytestmark = pytest.mark.integration

HEARTBEAT_TIMEOUT_S = 3
WORKER_LOST_TIMEOUT_S = 5
FAST_S = 0.5
SLOW = ("1.1", 60.0)  # its first run only (see WRAPPER): killed long before it ends
IDS = ["1.1", "1.2", "1.3", "1.4", "1.5"]
TARGET = "pipeline/two-hosts"
PLAN = md(
    """
    # Two hosts

    ## Batch 1: Five at once
    **Dependencies:** None

    """
) + "".join(f"### Task {t}: file {t}\n**Files:**\n- Create: `out/{t}.txt`\n\n" for t in IDS)

# Runs before the fake agent, in the same process (it execs it). It logs "<task_id> <ticks> <cwd>"
# to WHERE: the cwd is the task's worktree, inside the workspace of the host that runs it, and
# <ticks> matches the agent's own log lines (AgentRun.ticks). It also makes a task's agent slow
# only the first time it runs.
WRAPPER = """\
import os, sys

where, task_id, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    with open(where) as fh:
        again = any(line.split()[0] == task_id for line in fh)
except FileNotFoundError:
    again = False
if again:
    argv = [a for a in argv if not a.startswith("--slow=")]
with open("/proc/self/stat") as fh:
    ticks = fh.read().rsplit(")", 1)[1].split()[19]
fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, f"{task_id} {ticks} {os.getcwd()}\\n".encode())
os.close(fd)
os.execv(argv[0], argv)
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


@dataclass
class Host:
    """A network namespace linked to this machine by a veth pair, with a worker's workspace."""

    name: str
    netns: str
    veth: str  # the end on this machine; its peer is in the namespace
    gateway: str  # the address of this machine's end
    address: str  # the address of the namespace's end
    workspace: Path
    log: Path
    worker: subprocess.Popen[bytes] | None = None

    def owns(self, path: str) -> bool:
        return Path(path).resolve().is_relative_to(self.workspace.resolve())


def free_subnet() -> int:
    """A third octet N such that no interface has an address in 10.213.N.0/24."""
    used = ip("-o", "-4", "addr", "show").stdout
    for i in range(254):
        n = (os.getpid() + i) % 254 + 1
        if f" 10.213.{n}." not in used:
            return n
    pytest.skip("no free 10.213.N.0/24 subnet for the hosts' links")


def make_hosts(tmp: Path) -> list[Host]:
    """Hosts a (10.213.N.0/30) and b (10.213.N.4/30), named after this process (parallel runs
    do not clash). Skips the test when namespaces or veth pairs cannot be made."""
    pid, n = os.getpid(), free_subnet()
    hosts: list[Host] = []
    try:
        for i, name in enumerate("ab"):
            netns, veth, peer = f"ap-{pid}-{name}", f"ap{name}{pid}", f"ap{name}{pid}n"
            host = Host(
                name, netns, veth, f"10.213.{n}.{4 * i + 1}", f"10.213.{n}.{4 * i + 2}",
                tmp / f"ws-{name}", tmp / f"worker-{name}.log",
            )  # fmt: skip
            added = ip("netns", "add", netns, check=False)
            if added.returncode != 0:
                pytest.skip(f"`ip netns add` failed: {added.stderr.strip()}")
            hosts.append(host)
            linked = ip("link", "add", veth, "type", "veth", "peer", "name", peer, check=False)
            if linked.returncode != 0:
                pytest.skip(f"`ip link add ... type veth` failed: {linked.stderr.strip()}")
            ip("link", "set", peer, "netns", netns)
            ip("addr", "add", f"{host.gateway}/30", "dev", veth)
            ip("link", "set", veth, "up")
            inside = ("netns", "exec", netns, "ip")
            ip(*inside, "addr", "add", f"{host.address}/30", "dev", peer)
            ip(*inside, "link", "set", peer, "up")
            ip(*inside, "link", "set", "lo", "up")
    except BaseException:  # a skip too: what was made goes
        remove_hosts(hosts)
        raise
    return hosts


def remove_hosts(hosts: list[Host]) -> None:
    for host in hosts:
        ip("link", "del", host.veth, check=False)  # takes its peer with it
        ip("netns", "del", host.netns, check=False)


class ClusterServer(DevServer):
    """The dev server of the helpers, with its flags, but listening on every address of this
    machine (the hosts' links among them) instead of 127.0.0.1 alone.

    Not on the link addresses alone: given an `--ip` other than 127.0.0.1 or 0.0.0.0, the dev
    server (temporal CLI 1.9.1, server 1.32.0) binds all its internal services to that address
    but dials them at 127.0.0.1. So every call that goes past the frontend fails ("dial tcp
    127.0.0.1:PORT: connect: connection refused"), although the health check passes and workers
    say they are serving."""

    def __init__(self, procs: Procs, root: Path, env: dict[str, str]) -> None:
        super().__init__(procs, root, env)
        self.procs = OnAllAddresses(procs)  # type: ignore[assignment]

    def address_from(self, host: Host) -> str:
        """The frontend as `host` reaches it: over its own link, at this machine's end."""
        return f"{host.gateway}:{self.port}"


@dataclass
class OnAllAddresses:
    """`Procs.spawn` with the dev server's `--ip ADDRESS` made `--ip 0.0.0.0`."""

    procs: Procs

    def spawn(
        self, argv: list[str], log: Path, env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        at = argv.index("--ip") + 1
        return self.procs.spawn([*argv[:at], "0.0.0.0", *argv[at + 1 :]], log, env, cwd)


@pytest.fixture
def hosts(tmp_path: Path, procs: Procs) -> Iterator[list[Host]]:
    made = make_hosts(tmp_path)
    try:
        yield made
    finally:
        # The processes first (a namespace lives on while a process is in it), then the links.
        procs.close()
        remove_hosts(made)


class Scene:
    def __init__(self, tmp: Path, procs: Procs, hosts: list[Host], log: Path) -> None:
        self.tmp, self.procs, self.hosts, self.log = tmp, procs, hosts, log
        self.env = process_env(tmp)
        self.server = ClusterServer(procs, tmp, self.env)
        self.where = Path(str(log) + ".where")

    def start_workers(self) -> None:
        """Both workers at once, each inside its namespace; returns once both are serving."""
        for host in self.hosts:
            argv = ["ip", "netns", "exec", host.netns, PYTHON, str(ROOT / "worker.py")]
            argv += ["--address", self.server.address_from(host)]
            argv += ["--workspace", str(host.workspace)]
            host.worker = self.procs.spawn(argv, host.log, self.env, ROOT)
        for host in self.hosts:

            def serving(proc: Any = host.worker, log: Path = host.log) -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"the worker exited: {log.read_text()[-2000:]}")
                return b"worker serving" in log.read_bytes()

            wait_for(serving, 60, f"host {host.name}'s worker to start", on_fail=self.logs)

    def command(self) -> str:
        wrapper = self.tmp / "where_agent.py"
        wrapper.write_text(WRAPPER)
        agent = agent_command(write_agent(self.tmp), self.log, FAST_S, slow=SLOW)
        return shlex.join([PYTHON, str(wrapper), str(self.where), "{task_id}"]) + " " + agent

    def host_of(self) -> dict[str, str]:
        """The host of each agent process (by its ticks), from its working directory."""
        found: dict[str, str] = {}
        if self.where.exists():
            for line in self.where.read_text().splitlines():
                _tid, ticks, cwd = line.split(" ", 2)
                names = [h.name for h in self.hosts if h.owns(cwd)]
                assert len(names) == 1, f"an agent ran in {cwd}: not in one host's workspace"
                found[ticks] = names[0]
        return found

    def status(self, wid: str) -> dict[str, Any]:
        args = ["status", wid, "--json", "--address", self.server.address]
        res = starter(args, self.env, self.tmp)
        assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{self.logs()}"
        return dict(json.loads(res.stdout))

    def logs(self) -> str:
        parts = [tail(h.log) for h in self.hosts] + [tail(self.server.log)]
        where = self.where.read_text() if self.where.exists() else ""
        return "\n".join(parts) + f"\nagent runs: {agent_runs(self.log)}\nwhere:\n{where}"


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces (ip netns) need root")
@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (`ip`) is not installed")
def test_two_hosts_share_a_run_and_a_dead_hosts_task_moves_to_the_other(
    tmp_path: Path, procs: Procs, hosts: list[Host], agent_log: Path
) -> None:
    scene = Scene(tmp_path, procs, hosts, agent_log)
    # The repository both machines fetch from and push to: bare, on a path both see.
    repo = tmp_path / "shared.git"
    seed = make_demo_repo(tmp_path / "seed")
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(repo)], check=True)
    plan = tmp_path / "two-hosts.md"
    plan.write_text(PLAN)

    scene.server.start()
    scene.start_workers()
    args = [
        *("--plan", str(plan), "--repo", str(repo), "--target-branch", TARGET),
        *("--address", scene.server.address, "--workspace", str(tmp_path / "ws-starter")),
        *("--agent", "command", "--agent-command", scene.command()),
        *("--max-concurrent", str(len(IDS)), "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT_S)),
        *("--worker-lost-timeout", str(WORKER_LOST_TIMEOUT_S), "--detach", "--json"),
    ]
    res = starter(args, scene.env, tmp_path)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{scene.logs()}"
    wid = str(json.loads(res.stdout)["workflow_id"])

    # Wait until the quick tasks have merged (their steps are over, so nothing of theirs is left
    # on either host) and 1.1's slow agent runs. Its worktree tells which host runs it.
    fast = [t for t in IDS if t != SLOW[0]]

    def only_the_slow_one_left() -> bool:
        runs = agent_runs(scene.log)
        if not any(r.task_id == SLOW[0] for r in runs):
            return False
        if sum(1 for r in runs if r.task_id in fast and r.end is not None) < len(fast):
            return False
        tasks = {t["id"]: t["status"] for t in scene.status(wid)["tasks"]}
        return all(tasks[t] == "merged" for t in fast) and tasks[SLOW[0]] == "running"

    wait_for(only_the_slow_one_left, 40, "the quick tasks to merge", 0.5, scene.logs)
    (slow_run,) = [r for r in agent_runs(scene.log) if r.task_id == SLOW[0]]
    assert slow_run.end is None and slow_run.alive(), scene.logs()
    before_kill = scene.host_of()
    doomed = next(h for h in hosts if h.name == before_kill[slow_run.ticks])
    survivor = next(h for h in hosts if h is not doomed)
    assert doomed.worker is not None and survivor.worker is not None

    # The machine dies for good: its worker's whole process group at once, and nothing starts
    # it again.
    killed_at = time.time()
    kill_group(doomed.worker, signal.SIGKILL)
    doomed.worker.wait(timeout=10)

    def still_there() -> str:
        """What the process found as the agent is, when it does not die (a diagnosis)."""
        pid = slow_run.host_pid()
        if pid is None:
            return scene.logs()
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int(stat.split(") ")[1].split()[1])
            chain = []
            while ppid > 1:
                pst = Path(f"/proc/{ppid}/stat").read_text()
                pcmd = Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                chain.append(f"{ppid}: {pst[:60]} :: {pcmd[:300]}")
                ppid = int(pst.split(") ")[1].split()[1])
            return (
                "CHAIN\n" + "\n".join(chain) + f"\npid {pid}: {stat[:120]}\n{cmd}\n{scene.logs()}"
            )
        return scene.logs()

    # It dies with its sandbox (which dies with the worker); a loaded machine may take a while.
    wait_for(lambda: not slow_run.alive(), 30, "the dead host's agent to die", 0.2, still_there)

    result = wait_finished(wid, scene.server.address, scene.env, tmp_path, 60, scene.logs)
    assert survivor.worker.poll() is None, f"the surviving host's worker died\n{scene.logs()}"

    # Every task merged, each exactly once on the target (one trailer and one file per task).
    assert result["status"] == "completed", f"{result}\n{scene.logs()}"
    assert {t["id"]: t["status"] for t in result["tasks"]} == dict.fromkeys(IDS, "merged")
    # The agent that ran on the lost host counts: two starts, on two hosts.
    runs = {t["id"]: t["agent_runs"] for t in result["tasks"]}
    assert runs == {t: 2 if t == SLOW[0] else 1 for t in IDS}, runs
    assert result["target_commit"] == git(repo, "rev-parse", f"refs/heads/{TARGET}")
    assert_merged_once(repo, TARGET, run_key_of(wid), IDS)
    fsck(repo)

    # Who ran what. Both hosts ran agents of the run. Each task's agent ran once, except 1.1's,
    # which ran twice: first on the dead host, killed before it finished; then on the survivor,
    # started only after the dead host's queue had waited out --worker-lost-timeout.
    where = scene.host_of()
    runs = agent_runs(scene.log)
    ran_on = {h.name: sorted(r.task_id for r in runs if where[r.ticks] == h.name) for h in hosts}
    assert all(ran_on.values()), f"a host ran no agent: {ran_on}"
    finished = sorted(r.task_id for r in runs if r.end is not None)
    assert finished == IDS, f"an agent finished twice, or never: {runs}"
    again = [r for r in runs if r.task_id == SLOW[0] and r.ticks != slow_run.ticks]
    assert len(runs) == len(IDS) + 1 and len(again) == 1, runs
    assert where[again[0].ticks] == survivor.name, f"{ran_on}\n{scene.logs()}"
    waited = again[0].start - killed_at
    assert waited >= WORKER_LOST_TIMEOUT_S, f"1.1 started again {waited:.1f} s after the kill"
    spread = {h: [t for t in ts if t != SLOW[0]] for h, ts in ran_on.items()}
    print(f"quick tasks per host: {spread}; host {doomed.name} killed; 1.1 ran again on host "
          f"{survivor.name} {waited:.1f} s after the kill")  # fmt: skip

    # The survivor's workspace is clean. The dead host's keeps 1.1's worktree: nobody is left
    # on that machine to remove it.
    assert_workspace_clean(survivor.workspace, repo, run_key_of(wid))
    assert_no_agent_alive(scene.log)
