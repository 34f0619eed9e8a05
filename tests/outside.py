"""A host "outside" this machine, for tests of what a sandbox's `internet` reaches.

The sandbox refuses every address of this machine (a service of the worker's on 0.0.0.0 is not
"the outside"), and there is no real outside here: so the outside is a network namespace of the
test's own, behind a veth pair, with an address of its own. Needs root (CI runs as root).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Outside:
    name: str  # the network namespace
    address: str  # where it answers; this machine's side of the link is .1

    def argv(self, *command: str) -> list[str]:
        """`command`, run over there."""
        return ["ip", "netns", "exec", self.name, *command]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def outside_host() -> Iterator[Outside]:
    if os.getuid() != 0:
        pytest.skip("a test host in a network namespace of its own needs root")
    n = os.getpid() % 200 + 20
    name, host_end, far_end = f"ap-out-{os.getpid()}", f"apo{os.getpid() % 100000}", "eth0"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "apo-far")
        _ip("link", "set", "apo-far", "netns", name)
        _ip("-n", name, "link", "set", "apo-far", "name", far_end)
        _ip("addr", "add", f"10.231.{n}.1/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("-n", name, "addr", "add", f"10.231.{n}.2/30", "dev", far_end)
        _ip("-n", name, "link", "set", far_end, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Outside(name, f"10.231.{n}.2")
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", host_end], check=False, capture_output=True)
