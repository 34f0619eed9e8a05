"""The `internet` network of a namespace: slirp4netns, without the host's loopback.

slirp4netns gives the namespace a tap device whose traffic leaves through the worker's own
network stack as ordinary connections: the outside world answers, but with
`--disable-host-loopback` nothing on the host's 127.0.0.1 does (the embedded Temporal server,
anything else the worker's machine serves locally). The namespace's DNS server is slirp's own,
10.0.2.3, which forwards to the host's resolver.

bubblewrap starts the sandbox blocked (`--block-fd`) and says its child's pid (`--info-fd`);
the network is attached to that child's namespace, then the sandbox is let go. slirp4netns exits
when the write end of its exit pipe closes: when `close()` is called, or when the worker dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil

SLIRP = "slirp4netns"
RESOLV_CONF = "nameserver 10.0.2.3\n"
READY_TIMEOUT_S = 10.0


def _read_info(fd: int) -> int:
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        with contextlib.suppress(ValueError):
            return int(json.loads(data)["child-pid"])
    raise OSError("the sandbox ended before it said its pid")


class Internet:
    """One sandbox's network: `fds()` for bwrap, `attach(pid)` once it runs, then `close()`."""

    def __init__(self) -> None:
        self.info_r, self.info_w = os.pipe()
        self.block_r, self.block_w = os.pipe()
        self._exit_w: int | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def child_fds(self) -> tuple[int, int]:
        """(info fd, block fd) for bwrap, inherited by it."""
        return self.info_w, self.block_r

    async def attach(self, _bwrap_pid: int) -> None:
        os.close(self.info_w)
        os.close(self.block_r)
        self.info_w = self.block_r = -1
        pid = await asyncio.wait_for(asyncio.to_thread(_read_info, self.info_r), READY_TIMEOUT_S)
        ready_r, ready_w = os.pipe()
        exit_r, self._exit_w = os.pipe()
        # slirp4netns reads what the agent sends, as the worker's user: it confines itself
        # (--enable-sandbox, --enable-seccomp). Its sandbox detaches its old root, so it runs in a
        # mount namespace of its own made private first: the host's shared mounts (podman's
        # /run/netns) would otherwise be unmounted with it.
        argv = ["unshare", "--mount", "--propagation", "private", SLIRP, "--configure"]
        argv += ["--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp"]
        if os.getuid() != 0:  # the namespace belongs to the sandbox's user namespace
            argv.append(f"--userns-path=/proc/{pid}/ns/user")
        argv += ["--ready-fd", str(ready_w), "--exit-fd", str(exit_r), str(pid), "tap0"]
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                pass_fds=(ready_w, exit_r),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        finally:
            os.close(ready_w)
            os.close(exit_r)
        try:
            ready = await asyncio.wait_for(asyncio.to_thread(os.read, ready_r, 1), READY_TIMEOUT_S)
        finally:
            os.close(ready_r)
        if not ready:
            raise OSError("slirp4netns could not attach the sandbox's network")
        os.write(self.block_w, b"1")  # the sandbox may start

    async def close(self) -> None:
        for fd in (self.info_r, self.info_w, self.block_r, self.block_w, self._exit_w):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.info_r = self.info_w = self.block_r = self.block_w = -1
        self._exit_w = None
        if self._proc is not None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(self._proc.wait(), 5)
            if self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                await self._proc.wait()


def available() -> str | None:
    """None when slirp4netns is installed; else what to do."""
    if shutil.which(SLIRP) is None:
        return "--agent-network internet needs slirp4netns (Debian: apt-get install slirp4netns)"
    return None
