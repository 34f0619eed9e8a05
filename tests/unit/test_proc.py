"""run_process: exit codes, streaming, caps, and that a timeout or cancellation kills the tree."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from autonomous_pipeline.backends import _proc
from autonomous_pipeline.backends._proc import background, run_process

PY = sys.executable


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie waiting for its reaper counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], within_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


async def wait_for_pids(pidfile: Path, count: int, within_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if pidfile.exists():
            pids = [int(x) for x in pidfile.read_text().split()]
            if len(pids) >= count:
                return pids
        await asyncio.sleep(0.02)
    raise AssertionError(f"{pidfile} never held {count} pids")


def stubborn_tree(pidfile: Path) -> list[str]:
    """bash -> a grandchild bash that ignores SIGTERM -> its sleep (which inherits the ignore)."""
    inner = f'trap "" TERM; sleep 100 & echo $$ $! >> {pidfile}; wait'
    return ["bash", "-c", f"bash -c '{inner}' & wait"]


@pytest.mark.parametrize(("code", "ok"), [(0, True), (3, False), (255, False)])
async def test_exit_codes(tmp_path: Path, code: int, ok: bool) -> None:
    res = await run_process(["sh", "-c", f"exit {code}"], cwd=tmp_path)
    assert res.exit_code == code
    assert res.ok is ok
    assert not res.timed_out


async def test_killed_by_signal_is_a_negative_code(tmp_path: Path) -> None:
    res = await run_process(["sh", "-c", "kill -9 $$"], cwd=tmp_path)
    assert res.exit_code == -9
    assert not res.ok


async def test_stdout_and_stderr_interleave_in_order(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "for i in range(3):\n"
        "    print(f'out{i}', flush=True)\n"
        "    print(f'err{i}', file=sys.stderr, flush=True)\n"
    )
    transcript = tmp_path / "t.log"
    res = await run_process([PY, "-c", script], cwd=tmp_path, transcript=transcript)
    expected = "out0\nerr0\nout1\nerr1\nout2\nerr2\n"
    assert res.output == expected
    assert transcript.read_text() == expected


async def test_stdin_is_fed(tmp_path: Path) -> None:
    res = await run_process(["cat"], cwd=tmp_path, stdin=b"hello\n")
    assert res.output == "hello\n"


async def test_on_line_per_line_including_the_unterminated_last(tmp_path: Path) -> None:
    got: list[str] = []
    await run_process(["printf", "a\\nb\\n\\nc"], cwd=tmp_path, on_line=got.append)
    assert got == ["a", "b", "", "c"]


async def test_timeout_kills_a_grandchild_that_ignores_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_proc, "KILL_GRACE_S", 0.3)
    pidfile = tmp_path / "pids"
    start = time.monotonic()
    res = await run_process(stubborn_tree(pidfile), cwd=tmp_path, timeout_s=0.7)
    assert res.timed_out
    assert res.exit_code is None
    assert not res.ok
    pids = [int(x) for x in pidfile.read_text().split()]
    assert len(pids) == 2
    assert wait_gone(pids) == []
    assert time.monotonic() - start < 5


async def test_timeout_when_the_leader_itself_ignores_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_proc, "KILL_GRACE_S", 0.3)
    pidfile = tmp_path / "pids"
    script = f'trap "" TERM; sleep 100 & echo $$ $! > {pidfile}; wait'
    res = await run_process(["bash", "-c", script], cwd=tmp_path, timeout_s=0.5)
    assert res.timed_out
    assert wait_gone([int(x) for x in pidfile.read_text().split()]) == []


async def test_cancellation_kills_the_group_and_reraises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_proc, "KILL_GRACE_S", 0.3)
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(run_process(stubborn_tree(pidfile), cwd=tmp_path, timeout_s=60))
    pids = await wait_for_pids(pidfile, 2)
    assert all(alive(p) for p in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_gone(pids) == []


async def test_transcript_cap_bounds_the_file(tmp_path: Path) -> None:
    transcript = tmp_path / "t.log"
    cap = 100_000
    flood = "import sys\nsys.stdout.write('x' * 10_000_000)\n"
    res = await run_process(
        [PY, "-c", flood], cwd=tmp_path, transcript=transcript, transcript_cap=cap, tail_chars=8000
    )
    assert res.ok
    assert res.truncated
    size = transcript.stat().st_size
    assert 0 < size <= cap + 200
    assert transcript.read_bytes().endswith(
        b"[transcript truncated: output beyond the cap is not kept]\n"
    )
    assert len(res.output) <= 8000


async def test_an_endless_line_without_newline(tmp_path: Path) -> None:
    pieces: list[int] = []
    script = "import sys\nsys.stdout.write('y' * 3_000_000)\n"
    res = await run_process(
        [PY, "-c", script], cwd=tmp_path, on_line=lambda s: pieces.append(len(s))
    )
    assert res.ok
    assert sum(pieces) == 3_000_000
    assert max(pieces) <= 1_000_000 + 65536  # handed over in bounded pieces, never all at once
    assert set(res.output) == {"y"}


async def test_utf8_split_across_chunks_decodes(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "b = 'é€'.encode()\n"
        "sys.stdout.buffer.write(b'a' + b[:1]); sys.stdout.flush(); time.sleep(0.2)\n"
        "sys.stdout.buffer.write(b[1:4]); sys.stdout.flush(); time.sleep(0.2)\n"
        "sys.stdout.buffer.write(b[4:] + b'\\n'); sys.stdout.flush()\n"
    )
    got: list[str] = []
    res = await run_process([PY, "-c", script], cwd=tmp_path, on_line=got.append)
    assert res.output == "aé€\n"
    assert got == ["aé€"]


def test_a_recorded_group_is_killed_only_while_its_leader_is_the_process_recorded(
    tmp_path: Path,
) -> None:
    import subprocess

    leader = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = tmp_path / "group"
        # The pid was reused: same number, another start time. Left alone, record dropped.
        record.write_text(f"{leader.pid} 1")
        assert _proc.kill_recorded_group(record) is False
        assert leader.poll() is None and not record.exists()
        # Garbage and init are never killed.
        record.write_text("1 " + _proc.start_time(1))
        assert _proc.kill_recorded_group(record) is False
        record.write_text("not a pid")
        assert _proc.kill_recorded_group(record) is False
        # Still the process recorded: its group is killed.
        record.write_text(f"{leader.pid} {_proc.start_time(leader.pid)}")
        assert _proc.kill_recorded_group(record) is True
        assert leader.wait(timeout=10) == -9
    finally:
        leader.kill()
        leader.wait()


async def test_a_background_step_runs_its_processes_at_a_lower_priority(tmp_path: Path) -> None:
    # `nice` alone prints the niceness it runs at; its children inherit it.
    base = int(os.getpriority(os.PRIO_PROCESS, 0))
    plain = await run_process(["nice"], cwd=tmp_path, die_with_parent=False)
    with background():
        low = await run_process(["sh", "-c", "nice"], cwd=tmp_path, die_with_parent=False)
    assert int(plain.output) == base
    assert int(low.output) == min(base + 10, 19)
