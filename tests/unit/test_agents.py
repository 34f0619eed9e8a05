"""The literal and command agents against real directories and real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autonomous_pipeline.backends import _proc
from autonomous_pipeline.backends.agents.command import PRESETS, CommandAgent, render_argv
from autonomous_pipeline.backends.agents.literal import LiteralAgent, named_blocks
from autonomous_pipeline.backends.base import AgentRequest
from tests.conftest import md
from tests.sandboxes import run_with

TASK = md(
    """
    Create a simple Python script that prints a greeting.

    Create `test-artifacts/hello.py`:
    ```python
    #!/usr/bin/env python3
    def main():
        print("Hello from the autonomous pipeline!")
    ```

    1. Then the config:

       `config/settings.json`:
       ~~~json
       {"verbose": true}
       ~~~

    ```yaml title="deploy/app.yaml"
    name: app
    ```

    ```toml:pkg/pyproject.toml
    [project]
    ```

    Run `scripts/check.sh`:
    ```bash
    $ scripts/check.sh
    ok
    ```

    **Verification:**
    ```bash
    python test-artifacts/hello.py
    ```
    """
)


def request(tmp_path: Path, instructions: str = "", **kw: object) -> AgentRequest:
    workdir = tmp_path / "wt"
    workdir.mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "task_id": "1.2",
        "title": "Create Python Script",
        "prompt": "Do the task.\n",
        "instructions": instructions,
        "workdir": workdir,
        "transcript": tmp_path / "logs" / "1.2.log",
        "timeout_s": 30,
    }
    fields.update(kw)
    return AgentRequest.model_validate(fields)


class Beats(list[str]):
    def __call__(self, note: str) -> None:
        self.append(note)


# ------------------------------------------------------------------------------------ literal


async def test_literal_writes_the_named_blocks(tmp_path: Path) -> None:
    req = request(tmp_path, TASK)
    beats = Beats()
    out = await run_with(LiteralAgent(), req, beats)
    assert out.succeeded, out.error
    wt = req.workdir
    assert (wt / "test-artifacts/hello.py").read_text() == (
        '#!/usr/bin/env python3\ndef main():\n    print("Hello from the autonomous pipeline!")\n'
    )
    assert (wt / "config/settings.json").read_text() == '{"verbose": true}\n'
    assert (wt / "deploy/app.yaml").read_text() == "name: app\n"
    assert (wt / "pkg/pyproject.toml").read_text() == "[project]\n"
    assert not (wt / "scripts").exists()  # a command and its output are not file content
    assert len(beats) == 4
    log = req.transcript.read_text()
    assert "wrote test-artifacts/hello.py" in log and "wrote config/settings.json" in log


def test_block_naming_rules() -> None:
    text = md(
        """
        The file should be created at `out/hello.txt` with the following content:
        ```
        Hello, Pipeline!
        ```
        **File:** `x/y.txt`:
        ```
        y
        ```
        Create `Makefile`:
        ```make
        all:
        ```
        Delete `old.txt`:

        In `src/app.py`, after main():
        ```python
        fragment()
        ```
        Append to `notes.md`:
        ```
        more
        ```
        ```diff title="src/app.py"
        -a
        +b
        ```
        """
    )
    blocks = {b.path: b for b in named_blocks(text)}
    assert list(blocks) == ["out/hello.txt", "x/y.txt", "Makefile", "notes.md", "src/app.py"]
    assert blocks["notes.md"].append
    assert blocks["src/app.py"].is_diff
    assert blocks["out/hello.txt"].content == "Hello, Pipeline!\n"


async def test_literal_appends_and_refuses_diffs(tmp_path: Path) -> None:
    req = request(tmp_path, "Append to `notes.md`:\n```\nmore\n```\n")
    (req.workdir / "notes.md").write_text("first\n")
    assert (await run_with(LiteralAgent(), req, Beats())).succeeded
    assert (req.workdir / "notes.md").read_text() == "first\nmore\n"
    diff = request(tmp_path, "Update `a.py`:\n```diff\n-x\n+y\n```\n")
    out = await run_with(LiteralAgent(), diff, Beats())
    assert not out.succeeded and "a.py" in (out.error or "")
    assert not (req.workdir / "a.py").exists()


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt", ".git/hooks/pre-commit"])
async def test_literal_refuses_paths_that_leave_the_worktree(tmp_path: Path, path: str) -> None:
    text = f"Create `ok.txt`:\n```\nfine\n```\n\nCreate `{path}`:\n```\nevil\n```\n"
    req = request(tmp_path, text)
    out = await run_with(LiteralAgent(), req, Beats())
    assert not out.succeeded
    assert path in (out.error or "")
    assert not (tmp_path / "escape.txt").exists()
    assert not (req.workdir / "ok.txt").exists()  # nothing is written when any path is refused


async def test_literal_refuses_an_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "outside" / "abs.txt"
    req = request(tmp_path, f"Create `{target}`:\n```\nevil\n```\n")
    out = await run_with(LiteralAgent(), req, Beats())
    assert not out.succeeded
    assert str(target) in (out.error or "")
    assert not target.exists()


async def test_literal_refuses_symlinks_that_point_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    req = request(tmp_path)
    (req.workdir / "link").symlink_to(outside, target_is_directory=True)
    (req.workdir / "file.txt").symlink_to(outside / "target.txt")
    for path, victim in (("link/evil.txt", "evil.txt"), ("file.txt", "target.txt")):
        req = request(tmp_path, f"Create `{path}`:\n```\nevil\n```\n")
        out = await run_with(LiteralAgent(), req, Beats())
        assert not out.succeeded
        assert path in (out.error or "")
        assert not (outside / victim).exists()


async def test_literal_without_blocks_succeeds_and_writes_nothing(tmp_path: Path) -> None:
    req = request(tmp_path, "Refactor the module.\n\n```bash\npytest\n```\n")
    out = await run_with(LiteralAgent(), req, Beats())
    assert out.succeeded
    assert out.summary == "no code blocks to apply"
    assert list(req.workdir.iterdir()) == []


# ------------------------------------------------------------------------------------ command

AGENT = """\
import json, os, sys
from pathlib import Path
Path("agent-output.txt").write_text(Path(sys.argv[1]).read_text())
print("working on", sys.argv[2], flush=True)
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "secret": os.environ.get("API_KEY")}))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


def agent_script(tmp_path: Path) -> Path:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    return script


async def test_command_substitutes_placeholders_and_keeps_the_prompt_outside(
    tmp_path: Path,
) -> None:
    template = [sys.executable, str(agent_script(tmp_path)), "{prompt_file}", "{task_id}"]
    template += ["{workdir}", "t={title}", '{"json": {braces}}']
    req = request(tmp_path, command=template, prompt="Write hello.\n")
    beats = Beats()
    out = await run_with(CommandAgent(), req, beats)
    assert out.succeeded, out.error
    assert out.exit_code == 0
    report = json.loads(out.summary)
    pf = Path(report["argv"][0])
    # In the agent's TMPDIR, under a name of its own (never one the agent could have planted).
    assert pf.parent == req.workdir.parent / f"{req.workdir.name}.tmp"
    assert pf.name.startswith("1.2.log.") and pf.name.endswith(".prompt.md")
    assert report["argv"][1:] == [
        "1.2",
        str(req.workdir),
        "t=Create Python Script",
        '{"json": {braces}}',
    ]
    assert Path(report["cwd"]).resolve() == req.workdir.resolve()
    assert report["secret"] is None  # the minimal env does not carry the worker's credentials
    assert not pf.resolve().is_relative_to(req.workdir.resolve())
    assert pf.read_text() == "Write hello.\n"
    assert (req.workdir / "agent-output.txt").read_text() == "Write hello.\n"
    assert beats and beats[0] == "started, no output yet"
    assert "working on 1.2" in req.transcript.read_text()


async def test_command_nonzero_exit_fails_with_output_and_redacts(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "EXIT_CODE": "7", "API_KEY": "sk-very-secret-value"}
    cmd = [sys.executable, str(agent_script(tmp_path)), "{prompt_file}", "{task_id}"]
    out = await run_with(CommandAgent(), request(tmp_path, command=cmd, env=env), Beats())
    assert not out.succeeded
    assert out.exit_code == 7
    assert "exited with code 7" in (out.error or "")
    assert "working on 1.2" in (out.error or "")
    assert "sk-very-secret-value" not in (out.error or "") + out.summary


async def test_command_timeout_kills_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_proc, "KILL_GRACE_S", 0.3)
    pidfile = tmp_path / "pids"
    script = f'trap "" TERM; sleep 100 & echo $! > {pidfile}; echo started; wait'
    req = request(tmp_path, command=["bash", "-c", script], timeout_s=0.8)
    out = await run_with(CommandAgent(), req, Beats())
    assert not out.succeeded and out.timed_out
    assert "timed out after 0.8 s; its process group was killed" in (out.error or "")
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("template", [[], ["definitely-not-an-agent-binary-xyz", "{prompt_file}"]])
async def test_command_missing_executable_or_empty_template(
    tmp_path: Path, template: list[str]
) -> None:
    out = await run_with(CommandAgent(), request(tmp_path, command=template), Beats())
    assert not out.succeeded
    assert ("not found" if template else "empty") in (out.error or "")


async def test_command_refuses_a_transcript_inside_the_worktree(tmp_path: Path) -> None:
    req = request(tmp_path, command=["true"])
    req = req.model_copy(update={"transcript": req.workdir / "t.log"})
    out = await run_with(CommandAgent(), req, Beats())
    assert not out.succeeded and "inside the worktree" in (out.error or "")
    assert list(req.workdir.iterdir()) == []


async def test_command_progress_notes_follow_the_output(tmp_path: Path) -> None:
    # The backend keeps the note current; the activity's heartbeat sends it on its own clock.
    script = "for i in $(seq 1 2000); do echo line $i; done; echo done"
    beats = Beats()
    out = await run_with(CommandAgent(), request(tmp_path, command=["sh", "-c", script]), beats)
    assert out.succeeded and out.summary == "done"
    assert beats[0] == "started, no output yet"
    assert beats[-1] == "output lines: 2001, last: done"


# What each preset's program must receive: the prompt whole (quotes, $, newlines untouched by
# the shell wrapper) and, for aider, the flag that keeps it from committing (the pipeline commits).
PROMPT = 'Fix "the" bug in $HOME\'s `code`;\nsecond line: $(not run)\n'


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_gives_its_program_the_whole_prompt(preset: str, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    tools = tmp_path / "bin"
    tools.mkdir()
    program = tools / preset  # the presets run `codex` and `aider` by these names
    recorder = (
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        "files = {a: open(a).read() for a in args if a.endswith('.md')}\n"
        f"json.dump({{'args': args, 'files': files}}, open({str(seen)!r}, 'w'))\n"
    )
    program.write_text(f"#!{sys.executable}\n{recorder}")
    program.chmod(0o755)
    prompt_file = tmp_path / "prompt.md"
    prompt_file.write_text(PROMPT)
    argv = render_argv(PRESETS[preset], {"prompt_file": str(prompt_file)})
    subprocess.run(argv, env={"PATH": f"{tools}:/usr/bin:/bin"}, check=True, timeout=30)
    got = json.loads(seen.read_text())
    if preset == "codex":
        assert got["args"] == ["exec", "--sandbox", "workspace-write", PROMPT]
    else:
        assert "--no-auto-commits" in got["args"] and "--yes-always" in got["args"]
        flag = got["args"].index("--message-file")
        assert got["files"][got["args"][flag + 1]] == PROMPT
