"""The pure parts of the sandboxes: command lines, mount plans, the workers' policy."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from backends.sandboxes import dagger as dagger_mod
from backends.sandboxes.bwrap import Mounts, bwrap_argv
from backends.sandboxes.container_argv import ContainerStep, network_flag, run_argv
from backends.sandboxes.dagger_step import plan_step
from backends.sandboxes.hidden import hidden_paths, origin_url
from backends.sandboxes.policy import WorkerPolicy, weakenings
from models.sandbox import AgentNetwork, ContainerRuntime, SandboxConfig, SandboxKind


def test_bwrap_hides_then_binds_and_drops_every_capability() -> None:
    m = Mounts(
        workdir=Path("/ws/worktrees/r/1.1"),
        writable=[Path("/ws/worktrees/r/1.1"), Path("/ws/tmp/r/1.1")],
        hidden_dirs=[Path("/ws"), Path("/home/u/.ssh")],
        hidden_files=[Path("/home/u/.netrc")],
        readonly=[(Path("/ws/repos/a.git"), Path("/ws/repos/a.git"))],
    )
    argv = bwrap_argv(m, AgentNetwork.NONE, ["agent", "--go"])
    assert argv[:4] == ["bwrap", "--die-with-parent", "--new-session", "--unshare-all"]
    assert "--share-net" not in argv and argv[argv.index("--cap-drop") + 1] == "ALL"
    pos = {flag: argv.index(flag) for flag in ("--tmpfs", "--ro-bind", "--bind")}
    # The host read-only first, then the hiding, then what is given back: later mounts win.
    assert (
        argv.index("/") < pos["--tmpfs"] < argv.index("/dev/null") < argv.index("/ws/repos/a.git")
    )
    assert argv.index("/ws/repos/a.git") < pos["--bind"]
    assert argv[-3:] == ["--", "agent", "--go"]
    assert argv[argv.index("--chdir") + 1] == "/ws/worktrees/r/1.1"
    host = bwrap_argv(m, AgentNetwork.HOST, ["x"], info_fd=5, block_fd=6)
    assert "--share-net" in host and host[host.index("--info-fd") + 1] == "5"


def step(**kw: object) -> ContainerStep:
    values: dict[str, object] = {
        "runtime": ContainerRuntime.PODMAN,
        "binary": "/usr/bin/podman",
        "image": "img:1",
        "name": "ap-x",
        "checkout": Path("/ws/wt"),
        "tmp": Path("/ws/tmp"),
        "home": Path("/ws/home"),
        "clone": Path("/ws/repos/a.git"),
        "clone_config": Path("/ws/repos/a.git.sandbox-config"),
        "network": AgentNetwork.NONE,
        "labels": {"k": "v"},
        "env_names": ["PATH", "HOME", "API_TOKEN", "MODE"],
        "env_values": {"MODE": "test"},
    }
    return ContainerStep(**(values | kw))  # type: ignore[arg-type]


def test_container_steps_mount_the_checkout_and_forward_values_by_name_only() -> None:
    argv = run_argv(step(timeout_s=30), ["sh", "-c", "true"])
    assert argv[:5] == ["/usr/bin/podman", "run", "--rm", "--name", "ap-x"]
    joined = " ".join(argv)
    for mount in ("/ws/wt:/workspace:rw", "/ws/tmp:/tmp:rw", "/ws/home:/home/pipeline:rw",
                  "/ws/repos/a.git:/ws/repos/a.git:ro",
                  "/ws/repos/a.git.sandbox-config:/ws/repos/a.git/config:ro"):  # fmt: skip
        assert f"-v {mount}" in joined
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    # The worker's PATH and HOME stay out; a secret crosses by name; literals by value.
    assert envs == ["HOME=/home/pipeline", "TMPDIR=/tmp", "MODE=test", "API_TOKEN"]
    assert argv[argv.index("--timeout") + 1] == "90" and argv[-4:] == ["img:1", "sh", "-c", "true"]
    docker = run_argv(step(runtime=ContainerRuntime.DOCKER, uid=1000, gid=1000), ["x"])
    assert "--timeout" not in docker and docker[docker.index("--user") + 1] == "1000:1000"
    assert "--userns=keep-id" in run_argv(step(uid=1000), ["x"])


@pytest.mark.parametrize(
    ("runtime", "network", "flag"),
    [
        (ContainerRuntime.PODMAN, AgentNetwork.NONE, "none"),
        (ContainerRuntime.PODMAN, AgentNetwork.INTERNET, "slirp4netns:allow_host_loopback=false"),
        (ContainerRuntime.DOCKER, AgentNetwork.INTERNET, "bridge"),
        (ContainerRuntime.DOCKER, AgentNetwork.HOST, "host"),
    ],
)
def test_container_networks(runtime: ContainerRuntime, network: AgentNetwork, flag: str) -> None:
    assert network_flag(runtime, network) == flag


def test_a_dagger_step_copies_in_without_the_git_pointer_and_keeps_secrets_secret() -> None:
    s = plan_step(
        "img:1", ["pip install x"], Path("/wt"), Path("/t"), Path("/h"),
        {"MODE": "a"}, ["PATH", "API_TOKEN", "MODE"], ["claude", "-p"], stdin=b"prompt",
    )  # fmt: skip
    assert [(m.host, str(m.inside), m.exclude) for m in s.mounts] == [
        (Path("/wt"), "/workspace", (".git",)),
        (Path("/t"), "/tmp", ()),
        (Path("/h"), "/home/pipeline", ()),
    ]
    assert s.env == {"MODE": "a", "HOME": "/home/pipeline", "TMPDIR": "/tmp"}
    assert s.secrets == ["API_TOKEN"] and s.stdin == "prompt" and s.exports == s.mounts


def test_exporting_a_dagger_directory_mirrors_deletions_and_keeps_the_pointer(
    tmp_path: Path,
) -> None:
    target, source = tmp_path / "wt", tmp_path / "export"
    (target / "gone").mkdir(parents=True)
    (target / "gone" / "x").write_text("x")
    (target / ".git").write_text("gitdir: /x\n")
    (target / "kept.txt").write_text("old")
    (source / "new").mkdir(parents=True)
    (source / "new" / "y").write_text("y")
    (source / "kept.txt").write_text("new")
    dagger_mod._mirror(source, target, (".git",))
    assert sorted(p.name for p in target.iterdir()) == [".git", "kept.txt", "new"]
    assert (target / "kept.txt").read_text() == "new" and (target / ".git").exists()


def test_dagger_preflight_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DAGGER_SESSION_PORT", "_EXPERIMENTAL_DAGGER_RUNNER_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    problem = dagger_mod.engine_problem() or ""
    assert "dagger" in problem and ("no Dagger engine is reachable" in problem or "SDK" in problem)


def test_the_policy_refuses_weakening_unless_the_operator_allowed_it() -> None:
    weak = SandboxConfig(isolation=False, network=AgentNetwork.HOST, confine=False)
    assert weakenings(weak) == ["--no-isolation", "--agent-network host", "--no-confine"]
    assert weakenings(SandboxConfig(kind=SandboxKind.CONTAINER, isolation=False)) == []
    strict = WorkerPolicy()
    assert strict.refusal(SandboxConfig(), "pipeline-a/task-1.1") is None
    assert "--allow-weakened-isolation" in (strict.refusal(weak, "pipeline-a/task-1.1") or "")
    scoped = WorkerPolicy(frozenset({"pipeline-a"}))
    assert scoped.refusal(weak, "pipeline-a/task-1.1/try-2") is None
    assert scoped.refusal(weak, "pipeline-b/task-1.1") is not None
    assert WorkerPolicy(None).refusal(weak, "anything") is None


def test_what_a_sandbox_hides(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for d in (".ssh", ".aws", ".config/autonomous-pipeline"):
        (home / d).mkdir(parents=True)
    (home / ".netrc").write_text("machine x password y\n")
    repo, ws = tmp_path / "repo", tmp_path / "ws"
    repo.mkdir()
    ws.mkdir()
    sock_dir = Path("/tmp") / f"ap-test-{os.getpid()}"
    sock_dir.mkdir(exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_dir / "agent.sock"))
    try:
        hidden = hidden_paths(ws, str(repo), home, hide_run=True)
    finally:
        s.close()
        (sock_dir / "agent.sock").unlink()
        sock_dir.rmdir()
    dirs = set(hidden.dirs)
    assert {ws, repo, home / ".ssh", home / ".aws", Path("/run")} <= dirs
    assert home / ".netrc" in hidden.files and sock_dir / "agent.sock" in hidden.files
    # The pipeline's own code and interpreter are never hidden, whatever holds them.
    root = Path(__file__).resolve().parents[2]
    assert not any(root.is_relative_to(d) for d in dirs)


def test_origin_url_is_read_as_text(tmp_path: Path) -> None:
    (tmp_path / "config").write_text(
        '[core]\n\tbare = true\n[remote "origin"]\n\turl = /src/app\n\tfetch = +x\n'
    )
    assert origin_url(tmp_path) == "/src/app"
    assert origin_url(tmp_path / "none") is None


async def test_without_bubblewrap_preflight_says_so_and_how_to_run_anyway(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from backends.sandboxes import worktree

    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no slirp4netns on it
    none = await worktree._try_namespaces(AgentNetwork.NONE)
    assert none is not None and "bubblewrap" in none and "--no-isolation" in none
    net = await worktree._try_namespaces(AgentNetwork.INTERNET)
    assert net is not None and "slirp4netns" in net and "--no-isolation" in net
