"""The pure parts of the sandboxes: command lines, mount plans, the workers' policy."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from autonomous_pipeline.backends.sandboxes import dagger as dagger_mod
from autonomous_pipeline.backends.sandboxes.bwrap import Mounts, bwrap_argv, mount_args
from autonomous_pipeline.backends.sandboxes.container_argv import (
    ContainerStep,
    network_flag,
    run_argv,
)
from autonomous_pipeline.backends.sandboxes.dagger_step import plan_step
from autonomous_pipeline.backends.sandboxes.hidden import hidden_paths, origin_url
from autonomous_pipeline.backends.sandboxes.policy import WorkerPolicy, sandbox_grant, weakenings
from autonomous_pipeline.models.sandbox import (
    AgentNetwork,
    ContainerRuntime,
    SandboxConfig,
    SandboxKind,
)


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


def test_a_folder_shown_again_does_not_bring_back_what_is_hidden_inside_it() -> None:
    # The pipeline cloned under /tmp (hidden whole) is shown again; its demo workspace, inside
    # it, stays hidden, and the checkout inside that stays writable.
    m = Mounts(
        workdir=Path("/tmp/clone/.demo/ws/worktrees/1.1"),
        writable=[Path("/tmp/clone/.demo/ws/worktrees/1.1")],
        hidden_dirs=[Path("/tmp/clone/.demo/ws"), Path("/tmp")],
        readonly=[(Path("/tmp/clone"), Path("/tmp/clone"))],
    )
    ops = mount_args(m)
    order = [ops[i + 1] if ops[i] == "--tmpfs" else ops[i + 2] for i in range(len(ops))
             if ops[i] in ("--tmpfs", "--bind", "--ro-bind")]  # fmt: skip
    assert order == [
        "/tmp",
        "/tmp/clone",
        "/tmp/clone/.demo/ws",
        "/tmp/clone/.demo/ws/worktrees/1.1",
    ]


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
        "env_names": ["PATH", "HOME", "API_TOKEN"],
        "env_values": {"MODE": "test", "API_TOKEN": "from-the-image"},
    }
    return ContainerStep(**(values | kw))  # type: ignore[arg-type]


def test_container_steps_mount_the_checkout_and_forward_values_by_name_only() -> None:
    argv = run_argv(step(timeout_s=30), ["sh", "-c", "true"])
    assert argv[:6] == ["/usr/bin/podman", "run", "--rm", "--pull=never", "--name", "ap-x"]
    joined = " ".join(argv)
    for mount in ("/ws/wt:/workspace:rw", "/ws/tmp:/tmp:rw", "/ws/home:/home/pipeline:rw",
                  "/ws/repos/a.git:/ws/repos/a.git:ro",
                  "/ws/repos/a.git.sandbox-config:/ws/repos/a.git/config:ro"):  # fmt: skip
        assert f"-v {mount}" in joined
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    # The worker's PATH and HOME stay out; a secret crosses by name (and wins over a literal
    # of the same name); literals by value.
    assert envs == ["HOME=/home/pipeline", "TMPDIR=/tmp", "MODE=test", "API_TOKEN"]
    assert "--security-opt" in argv and "--pids-limit" in argv
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


def test_a_container_joins_the_workers_firewalled_namespace_with_slirps_resolver() -> None:
    argv = run_argv(step(netns=Path("/proc/42/ns/net")), ["x"])
    assert argv[argv.index("--network") + 1] == "ns:/proc/42/ns/net"
    assert argv[argv.index("--dns") + 1] == "10.0.2.3"


def test_a_dagger_step_copies_in_without_the_git_pointer_and_keeps_secrets_secret() -> None:
    s = plan_step(
        "img:1", ["pip install x"], Path("/wt"), Path("/t"), Path("/h"),
        {"MODE": "a", "API_TOKEN": "from-the-image"}, ["PATH", "API_TOKEN"], ["claude", "-p"],
        stdin=b"prompt",
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
    key = b"k" * 32
    strict = WorkerPolicy(operator_key=key)
    assert strict.refusal(SandboxConfig(), "pipeline-a") is None
    assert "--allow-weakened-isolation" in (strict.refusal(weak, "pipeline-a") or "")
    granted = weak.model_copy(update={"grant": sandbox_grant(key, "pipeline-a", weak)})
    assert strict.refusal(granted, "pipeline-a") is None
    # A grant seen in one run's history does not carry to another run, nor to more weakening,
    # nor past a worker that holds another key (or none).
    assert strict.refusal(granted, "pipeline-b") is not None
    net_only = SandboxConfig(network=AgentNetwork.HOST)
    reused = net_only.model_copy(update={"grant": sandbox_grant(key, "pipeline-a", net_only)})
    more = reused.model_copy(update={"isolation": False})
    assert strict.refusal(reused, "pipeline-a") is None
    assert strict.refusal(more, "pipeline-a") is not None
    assert WorkerPolicy(operator_key=b"o" * 32).refusal(granted, "pipeline-a") is not None
    assert WorkerPolicy().refusal(granted, "pipeline-a") is not None
    assert WorkerPolicy(any_run=True).refusal(weak, "anything") is None


def test_what_a_sandbox_hides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A HOME outside /tmp (which is hidden whole, with everything in it).
    home = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="ap-home-")).resolve()
    dots = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="ap-dots-")).resolve()
    try:
        for d in (".ssh", ".config/some-tool", ".local/bin", "tools/bin", "scripts"):
            (home / d).mkdir(parents=True)
        (home / ".netrc").write_text("machine x password y\n")
        (home / ".config/some-tool/hosts.json").write_text('{"token": "t"}')
        (dots / "gitconfig").write_text("[credential]\n")
        (home / ".gitconfig").symlink_to(dots / "gitconfig")
        monkeypatch.setenv("PATH", f"{home / 'tools/bin'}:/usr/bin:/bin")
        repo, ws = tmp_path / "repo", tmp_path / "ws"
        (repo / ".git").mkdir(parents=True)
        ws.mkdir()
        hidden = hidden_paths(ws, f"file://{repo}/.git", home, hide_run=True)
        dirs, files = set(hidden.dirs), set(hidden.files)
        # HOME whole: the token store of a tool no list names is not there to read.
        assert {home, Path("/run"), Path("/tmp"), repo.resolve()} <= dirs
        assert ws.resolve().is_relative_to(Path("/tmp")) and repo.is_relative_to(Path("/tmp"))
        # A dotfile kept elsewhere and linked: what it points at is what is hidden.
        assert dots / "gitconfig" in files
        # Its toolchains come back: the usual folders, and PATH's folders in HOME.
        assert {home / ".local/bin", home / "tools/bin"} <= set(hidden.shown)
        assert not any(p.is_relative_to(home / ".config") for p in hidden.shown)
        # What a command line names comes back from scratch space and HOME only: not the
        # workspace, not the user's repository, not a credential.
        script = tmp_path / "agent.py"
        script.write_text("print(1)\n")
        (home / "scripts/agent.sh").write_text("echo 1\n")
        (repo / "tool.py").write_text("print(2)\n")
        keep = (script, home / "scripts/agent.sh", ws, repo / "tool.py", home / ".netrc",
                home / ".ssh")  # fmt: skip
        named = hidden_paths(ws, f"file://{repo}/.git", home, True, keep=keep).shown
        assert {script.resolve(), home / "scripts/agent.sh"} <= set(named)
        assert not {ws.resolve(), (repo / "tool.py").resolve(), home / ".netrc"} & set(named)
        assert home / ".ssh" not in named
        # A program kept in HOME itself names HOME as its folder: never shown whole again.
        assert home not in hidden_paths(ws, None, home, True, keep=(home, Path("/tmp"))).shown
        # Credentials stay covered inside what is hidden, or made writable, around them.
        assert home / ".netrc" in files
        assert Path("/run/user") in hidden_paths(ws, None, home, hide_run=False).dirs
        # The pipeline's own code and interpreter stay visible: not hidden, or shown again.
        root = Path(__file__).resolve().parents[2]
        assert root in hidden.shown or not any(root.is_relative_to(d) for d in dirs)
    finally:
        shutil.rmtree(home)
        shutil.rmtree(dots)
    outside = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="ap-repo-"))
    try:  # the repository's working tree, named by its .git, is hidden whole
        (outside / ".git").mkdir()
        assert outside in hidden_paths(ws, str(outside / ".git"), home, True).dirs
    finally:
        shutil.rmtree(outside)


@pytest.mark.skipif(not os.access("/var/lib", os.W_OK), reason="needs to write in /var/lib")
def test_a_services_socket_is_hidden_where_services_keep_them(tmp_path: Path) -> None:
    # A database's or an engine's socket under /var/lib: a read-only mount still connects.
    place = Path(tempfile.mkdtemp(dir="/var/lib", prefix="ap-test-"))
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(place / "engine.sock"))
        hidden = hidden_paths(tmp_path, None, tmp_path, hide_run=True)
        assert place / "engine.sock" in hidden.files
    finally:
        s.close()
        shutil.rmtree(place)


@pytest.mark.skipif(not os.access("/var/lib", os.W_OK), reason="needs to write in /var/lib")
def test_a_socket_bound_after_a_scan_is_hidden_by_the_next(tmp_path: Path) -> None:
    # The scans are kept between steps: one kept from before a service started must not let
    # its socket through. Folders older than a second, so that their scans are kept.
    place = Path(tempfile.mkdtemp(dir="/var/lib", prefix="ap-test-"))
    (place / "deeper").mkdir()
    old = time.time() - 60
    for folder in (place / "deeper", place):
        os.utime(folder, (old, old))
    socks = [socket.socket(socket.AF_UNIX) for _ in range(2)]
    try:
        assert not [
            f for f in hidden_paths(tmp_path, None, tmp_path, True).files if place in f.parents
        ]
        socks[0].bind(str(place / "late.sock"))
        socks[1].bind(str(place / "deeper" / "later.sock"))
        files = hidden_paths(tmp_path, None, tmp_path, hide_run=True).files
        assert {place / "late.sock", place / "deeper" / "later.sock"} <= set(files)
        # Gone again: no longer named (a mount over a missing file would fail the sandbox).
        for s in socks:
            s.close()
        (place / "late.sock").unlink()
        assert place / "late.sock" not in hidden_paths(tmp_path, None, tmp_path, True).files
    finally:
        for s in socks:
            s.close()
        shutil.rmtree(place)


def test_origin_url_is_read_as_text(tmp_path: Path) -> None:
    (tmp_path / "config").write_text(
        '[core]\n\tbare = true\n[remote "origin"]\n\turl = /src/app\n\tfetch = +x\n'
    )
    assert origin_url(tmp_path) == "/src/app"
    assert origin_url(tmp_path / "none") is None


def test_origin_url_is_read_as_git_reads_it(tmp_path: Path) -> None:
    # A path with spaces and a semicolon is written quoted; the folder hidden is the unquoted one.
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path)], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "remote", "add", "origin", "/x/my app; v2"], check=True
    )
    assert '"/x/my app; v2"' in (tmp_path / "config").read_text()
    assert origin_url(tmp_path) == "/x/my app; v2"


async def test_without_bubblewrap_preflight_says_so_and_how_to_run_anyway(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from autonomous_pipeline.backends.sandboxes import worktree

    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no slirp4netns on it
    none = await worktree._try_namespaces(AgentNetwork.NONE)
    assert none is not None and "bubblewrap" in none and "--no-isolation" in none
    (tmp_path / "bwrap").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bwrap").chmod(0o755)  # bubblewrap present now, slirp4netns still missing
    net = await worktree._try_namespaces(AgentNetwork.INTERNET)
    assert net is not None and "slirp4netns" in net and "--no-isolation" in net
