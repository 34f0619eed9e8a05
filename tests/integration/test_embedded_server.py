"""The embedded server a starter starts is its own: a port taken between the check and the bind
is a lost race, tried again elsewhere, never another workspace's server used in silence."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from autonomous_pipeline.cli import server

pytestmark = pytest.mark.integration


async def test_a_port_taken_after_it_was_chosen_is_lost_and_another_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process (another starter's server) takes the port just after it was found free.
    rival = socket.socket()
    rival.bind(("127.0.0.1", 0))
    rival.listen()
    taken = rival.getsockname()[1]
    real = server._free_port
    calls: list[int] = []

    def racing(start: int, avoid: set[int]) -> int:
        calls.append(start)
        return taken if len(calls) == 1 else real(start, avoid | {taken})

    monkeypatch.setattr(server, "_free_port", racing)
    workspace = tmp_path / "ws"
    try:
        info = await server.ensure_server(workspace)
        assert info.port != taken
        assert server.listens(info.pid, info.port)
        assert not server.listens(info.pid, taken)
        # What the workspace records is the server that won, and it is found again.
        assert server.running_server(workspace) == info
        assert "address already in use" in (workspace / "server.log").read_text()
    finally:
        server.stop_server(workspace)
        rival.close()


def test_a_port_answered_by_another_process_is_not_ours(tmp_path: Path) -> None:
    rival = socket.socket()
    rival.bind(("127.0.0.1", 0))
    rival.listen()
    try:
        port = rival.getsockname()[1]
        assert server.listens(os.getpid(), port)  # this process holds it
        assert not server.listens(1, port)  # init does not, though the port answers
    finally:
        rival.close()


async def test_a_server_that_did_not_start_in_time_is_not_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[server.ServerInfo] = []
    real = server._spawn

    def spawn(workspace: Path, avoid: set[int]) -> server.ServerInfo:
        spawned.append(real(workspace, avoid))
        return spawned[-1]

    monkeypatch.setattr(server, "_spawn", spawn)
    monkeypatch.setattr(server, "STARTUP_TIMEOUT_S", 0.0)
    workspace = tmp_path / "ws"
    with pytest.raises(server.UsageError, match="did not start"):
        await server.ensure_server(workspace)
    (info,) = spawned
    # Not running, not recorded: the next command starts one server, not a second beside it.
    for _ in range(50):
        if not server._alive(info.pid):
            break
        await asyncio.sleep(0.1)
    assert not server._alive(info.pid)
    assert server.running_server(workspace) is None and not (workspace / "server.json").exists()
