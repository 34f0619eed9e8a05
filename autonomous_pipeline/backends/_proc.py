"""The one subprocess runner: async, in its own process group, with a timeout that kills the tree.

Every agent, verification command and git call goes through `run_process`, so that a timeout or a
cancelled activity never leaves a grandchild running and no blocking call stalls the event loop.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import contextvars
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from autonomous_pipeline.backends.confine import available
from autonomous_pipeline.backends.secrets import redactor

# After SIGTERM the group gets this long to exit before SIGKILL.
KILL_GRACE_S = 2.0
SPAWN = Path(__file__).with_name("spawn.py")

# Set (as niceness added to the worker's) while a step's work can wait for others': its processes
# run at that lower priority, so that on a busy machine the CPU goes first to what an agent
# waits for.
_BACKGROUND: contextvars.ContextVar[int] = contextvars.ContextVar("background", default=0)


@contextlib.contextmanager
def background(lower: int = 10) -> Iterator[None]:
    """The processes this block starts (and theirs) run at a lower CPU priority. Only a
    priority: with the CPU free they run at full speed (a merge that dependants wait for is
    never held back for long)."""
    token = _BACKGROUND.set(lower)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


@dataclass(frozen=True)
class ProcResult:
    argv: tuple[str, ...]
    exit_code: int | None  # None when killed by a timeout
    timed_out: bool
    output: str  # the last `tail_chars` characters of stdout and stderr, interleaved
    duration_s: float
    truncated: bool = False  # the transcript hit its cap

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    stdin: bytes | None = None,
    transcript: Path | None = None,
    transcript_cap: int = 5_000_000,
    on_line: Callable[[str], None] | None = None,
    tail_chars: int = 8000,
    record: Path | None = None,
    confine: Sequence[Path] | None = None,
    die_with_parent: bool = True,
    pass_fds: Sequence[int] = (),
    on_spawn: Callable[[int], Awaitable[None]] | None = None,
    mask: bool = True,
) -> ProcResult:
    """Run `argv`, stream its output, and return when it exits or its timeout kills it.

    Cancellation (the activity was cancelled, the worker is shutting down) kills the whole process
    group and re-raises, so the caller's cleanup runs. A worker killed outright cannot do that: the
    child dies with it (parent-death signal), and `record` keeps the group (with the leader's
    start time, so that a recycled pid is never taken for it) for the next attempt to kill
    whatever the child left behind (`kill_recorded_group`).

    The parent-death signal and confinement are set by an exec wrapper (`backends/spawn.py`, a
    small Python process that then becomes the command), not by a `preexec_fn`. `die_with_parent=
    False` is for short commands (git): no wrapper, no second interpreter to start.

    With `confine`, the process and its descendants can write only beneath those paths
    (`backends.confine`). Secret values (`backends.secrets`) are masked in everything this returns
    or writes: the transcript, the output's tail and the lines given to `on_line`. `mask=False`
    is for output that is data, not a message (git's lists of paths, which are checked for
    secrets themselves): the caller masks what it says.

    `pass_fds` are inherited by the child; `on_spawn(pid)` runs once it exists and before its
    output is read (a sandbox attaches its network then).
    """
    start = time.monotonic()
    command = list(argv)
    if die_with_parent or confine is not None:
        # Set up by an exec wrapper, never by Python code in the forked worker (see spawn.py).
        check_executable(command[0], Path(cwd), env)
        wrapper = [sys.executable, "-I", "-S", str(SPAWN), "--parent", str(os.getpid())]
        if confine is not None:
            if not available():
                raise OSError("Landlock is not available on this kernel")
            wrapper.append("--confine")
            for path in confine:
                wrapper += ["--writable", str(path)]
        command = [*wrapper, "--", *command]
    if (lower := _BACKGROUND.get()) > 0 and (nice := shutil.which("nice")) is not None:
        # Lowered before it runs, and all it starts with it; added to the worker's own niceness.
        command = [nice, "-n", str(lower), *command]
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=str(cwd),
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: killpg reaches grandchildren
        pass_fds=tuple(pass_fds),
    )
    redact = redactor(env) if mask else None
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(f"{proc.pid} {start_time(proc.pid)}")
    tail: deque[str] = deque()
    tail_len = 0
    written = 0
    truncated = False
    sink = transcript.open("ab") if transcript else None

    partial = ""
    pending = ""  # decoded output not yet masked: a secret may continue in the next chunk

    def emit(text: str, final: bool) -> None:
        nonlocal tail_len, written, truncated, partial, pending
        if redact:
            pending += text
            # Complete lines are masked at once; an endless line keeps back only its last bytes.
            cut = len(pending) if final else pending.rfind("\n") + 1
            if not cut and len(pending) > 65536:
                cut = len(pending) - redact.overlap
            text, pending = redact(pending[:cut]), pending[cut:]
        if not text:
            return
        if sink is not None:
            data = text.encode("utf-8", "replace")
            if written + len(data) <= transcript_cap:
                sink.write(data)
                written += len(data)
            elif not truncated:
                sink.write(b"\n[transcript truncated: output beyond the cap is not kept]\n")
                truncated = True
        tail.append(text)
        tail_len += len(text)
        while tail_len > tail_chars and len(tail) > 1:
            tail_len -= len(tail.popleft())
        if on_line is not None:
            *lines, partial = (partial + text).split("\n")
            for line in lines:
                on_line(line)
            if len(partial) > 1_000_000:  # no newline in sight: hand it over as it is
                on_line(partial)
                partial = ""

    async def pump() -> None:
        assert proc.stdout is not None
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin)
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                await proc.stdin.drain()
            proc.stdin.close()
        decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span chunks
        while True:
            # Chunks, not lines: an agent that floods one endless line must not break the reader.
            chunk = await proc.stdout.read(65536)
            if not chunk:
                break
            emit(decoder.decode(chunk), final=False)
        emit(decoder.decode(b"", final=True), final=True)
        if on_line is not None and partial:
            on_line(partial)
        await proc.wait()

    timed_out = False
    try:
        if on_spawn is not None:
            await on_spawn(proc.pid)
        await asyncio.wait_for(pump(), timeout=timeout_s)
    except TimeoutError:
        timed_out = True
        await _kill_group(proc)
    except BaseException:
        await _kill_group(proc)
        raise
    finally:
        emit("", final=True)  # what a timeout or cancellation cut off mid-line
        if sink is not None:
            sink.close()
        if record is not None:
            # Only our own record: a newer attempt may already have written its group there.
            with contextlib.suppress(OSError):
                if record.read_text().split()[:1] == [str(proc.pid)]:
                    record.unlink()
    out = "".join(tail)[-tail_chars:]
    return ProcResult(
        argv=tuple(argv),
        exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        output=out,
        duration_s=time.monotonic() - start,
        truncated=truncated,
    )


def check_executable(program: str, cwd: Path, env: Mapping[str, str] | None) -> None:
    """Raise as exec would (FileNotFoundError, PermissionError) before the wrapper runs it."""
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        if not path.exists():
            raise FileNotFoundError(2, "No such file or directory", program)
        if path.is_dir() or not os.access(path, os.X_OK):
            raise PermissionError(13, "Permission denied", program)
        return
    search = (env if env is not None else os.environ).get("PATH", os.defpath)
    if shutil.which(program, path=search) is None:
        raise FileNotFoundError(2, "No such file or directory", program)


def start_time(pid: int) -> str:
    """When `pid` started (clock ticks since boot), or "" where /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name before it may hold spaces


def kill_recorded_group(record: Path) -> bool:
    """Kill the process group a dead worker's child left running. True when there was one.

    Only if its leader is still the process that was recorded: a pid reused since (by the next
    worker, say) is left alone.
    """
    try:
        pid_text, *started = record.read_text().split()
        pgid = int(pid_text)
    except (OSError, ValueError):
        return False
    killed = False
    if pgid > 1 and started == [start_time(pgid)] and started != [""]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
            killed = True
    with contextlib.suppress(OSError):
        record.unlink()
    return killed


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it after a grace period."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=wait)
        except TimeoutError:
            continue
        # The leader is gone; grandchildren that ignored SIGTERM still die with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        return
