"""The `internet` network of a namespace: slirp4netns, without the host's loopback.

slirp4netns gives the namespace a tap device whose traffic leaves through the worker's own
network stack as ordinary connections: the outside world answers, but with
`--disable-host-loopback` nothing on the host's 127.0.0.1 does (the embedded Temporal server,
anything else the worker's machine serves locally). The namespace's DNS server is slirp's own,
10.0.2.3, which forwards to the host's resolver.

The host's own addresses are "the outside" to slirp too: a service the worker's machine serves
on 0.0.0.0 would answer there, and so would a Temporal frontend on another machine. So, before
the sandbox starts, the namespace gets firewall rules (iptables, set from outside it; the agent
has no capability to change them) that refuse those addresses: the host's, and the ones the
worker names as its control plane.

bubblewrap starts the sandbox blocked (`--block-fd`); once its child's pid is known the network
is attached to that child's namespace, then the sandbox is let go. slirp4netns exits when the
write end of its exit pipe closes: when `close()` is called, or when the worker dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger(__name__)
SLIRP = "slirp4netns"
DNS = "10.0.2.3"  # slirp's own resolver, which forwards to the host's
RESOLV_CONF = f"nameserver {DNS}\n"
_SPAWN = Path(__file__).resolve().parents[1] / "spawn.py"
READY_TIMEOUT_S = 10.0
_NS_GET_USERNS = 0xB701  # ioctl: the user namespace that owns a namespace


def _owning_userns(pid: int) -> int:
    """An fd of the user namespace that owns `pid`'s network namespace. Unprivileged, bubblewrap
    nests the sandbox's user namespace inside the one that owns its network: slirp4netns must
    join that one, not the process's own."""
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(net, _NS_GET_USERNS)
    finally:
        os.close(net)


def host_addresses() -> list[str]:
    """The IPv4 addresses of this machine's interfaces, but loopback (slirp has no IPv6 here)."""
    try:
        listing = json.loads(
            subprocess.run(
                ["ip", "-j", "-4", "addr"], capture_output=True, text=True, timeout=10
            ).stdout
        )
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    found = {
        a["local"]
        for link in listing
        for a in link.get("addr_info", [])
        if a.get("family") == "inet" and not ipaddress.ip_address(a["local"]).is_loopback
    }
    return sorted(found)


def resolve(hosts: list[str]) -> list[str]:
    """IPv4 addresses of host names (a Temporal frontend's), best effort."""
    found: set[str] = set()
    for host in hosts:
        with contextlib.suppress(OSError, UnicodeError):
            found |= {str(info[4][0]) for info in socket.getaddrinfo(host, None, socket.AF_INET)}
    return sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)


# Never reached from `internet`, wherever the worker runs: link-local, where clouds serve an
# instance's credentials (169.254.169.254), and Alibaba's metadata address.
ALWAYS_REFUSED = ("169.254.0.0/16", "100.100.100.200/32")


def refusal_rules(addresses: list[str]) -> str:
    """iptables-restore input: reject every packet to these addresses or networks, whatever
    the port."""
    lines = ["*filter", ":OUTPUT ACCEPT [0:0]"]
    nets = [a if "/" in a else f"{a}/32" for a in addresses]
    lines += [f"-A OUTPUT -d {n} -j REJECT --reject-with icmp-port-unreachable" for n in nets]
    return "\n".join([*lines, "COMMIT", ""])


class Internet:
    """One sandbox's network: `block_fd` for bwrap, `attach(pid)` once its child runs, then
    `close()`. `refused`: addresses the sandbox must not reach (the host's own, the control
    plane's)."""

    def __init__(self, refused: list[str] | None = None) -> None:
        self.refused = list(refused or [])
        self.block_r, self.block_w = os.pipe()
        self._exit_w: int | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def block_fd(self) -> int:
        return self.block_r

    async def attach(self, pid: int, let_go: bool = True) -> None:
        """Give `pid`'s namespace the network and its firewall; with `let_go`, then release
        the sandbox waiting on `block_fd`."""
        os.close(self.block_r)
        self.block_r = -1
        ready_r, ready_w = os.pipe()
        exit_r, self._exit_w = os.pipe()
        keep = [ready_w, exit_r]
        argv = [SLIRP, "--configure", "--mtu=65520", "--disable-host-loopback"]
        # slirp4netns reads what the agent sends: it confines itself (--enable-sandbox,
        # --enable-seccomp). Its sandbox detaches its old root; as root that would unmount the
        # host's shared mounts too (podman's /run/netns), so it gets a private mount namespace
        # first. Unprivileged, the kernel makes those mounts slaves by itself.
        argv += ["--enable-sandbox", "--enable-seccomp"]
        if os.getuid() == 0:
            argv = ["unshare", "--mount", "--propagation", "private", *argv]
        else:
            userns = _owning_userns(pid)
            keep.append(userns)
            argv.append(f"--userns-path=/proc/self/fd/{userns}")
        argv += ["--ready-fd", str(ready_w), "--exit-fd", str(exit_r), str(pid), "tap0"]
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                pass_fds=keep,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        finally:
            for fd in keep:
                os.close(fd)
        try:
            ready = await asyncio.wait_for(asyncio.to_thread(os.read, ready_r, 1), READY_TIMEOUT_S)
        finally:
            os.close(ready_r)
        if not ready:
            raise OSError("slirp4netns could not attach the sandbox's network")
        if self.refused:
            await self._refuse(pid)
        if let_go:
            os.write(self.block_w, b"1")  # the sandbox may start

    async def _refuse(self, pid: int) -> None:
        """The firewall rules, set in the sandbox's network namespace from outside it."""
        enter = ["nsenter", f"--target={pid}", "--net"]
        if os.getuid() != 0:
            enter += ["--user", "--preserve-credentials"]
        proc = await asyncio.create_subprocess_exec(
            *enter, "iptables-restore",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate(refusal_rules(self.refused).encode())
        if proc.returncode != 0:
            # Not started, rather than started with the host's own services in reach.
            raise OSError(f"the sandbox's firewall could not be set: {err.decode()[-300:]}")

    async def close(self) -> None:
        for fd in (self.block_r, self.block_w, self._exit_w):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.block_r = self.block_w = -1
        self._exit_w = None
        if self._proc is not None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(self._proc.wait(), 5)
            if self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                await self._proc.wait()


@contextlib.asynccontextmanager
async def namespace(refused: list[str]) -> AsyncIterator[Path]:
    """A network namespace with `internet` and its firewall, for a container engine to join
    (`podman run --network ns:PATH`): held by a process that dies with the worker, as does
    slirp4netns."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", str(_SPAWN), "--parent", str(os.getpid()), "--",
        "unshare", "--net", "sleep", "infinity",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    net = Internet(refused)
    try:
        await _own_namespace(holder.pid)
        await net.attach(holder.pid, let_go=False)  # nothing waits: the engine joins later
        yield Path(f"/proc/{holder.pid}/ns/net")
    finally:
        with contextlib.suppress(ProcessLookupError):
            holder.kill()
        await holder.wait()
        await net.close()


async def _own_namespace(pid: int) -> None:
    """Until `pid` has left the worker's network namespace (unshare has run)."""
    mine = os.readlink("/proc/self/ns/net")
    for _ in range(5000):
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != mine:
                return
        except OSError as exc:
            raise OSError("the network namespace's holder died before it was made") from exc
        await asyncio.sleep(0.001)
    raise OSError("the network namespace was not made within 5 s")


def available() -> str | None:
    """None when slirp4netns and what sets the firewall are installed; else what to do."""
    if shutil.which(SLIRP) is None:
        return "--agent-network internet needs slirp4netns (Debian: apt-get install slirp4netns)"
    for tool, package in (("iptables-restore", "iptables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"--agent-network internet needs {tool} (Debian: apt-get install {package})"
    return None
