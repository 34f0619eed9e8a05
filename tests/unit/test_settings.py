"""Where settings come from, and what may never come from a file.

Attack 6: a `.env` committed in the user's repository, with the starter run from inside it,
turned confinement off and handed the agent a token. The .env is now read from the pipeline's
own configuration folder only, and settings that weaken isolation are never read from a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autonomous_pipeline.config import config_dir, load_settings
from autonomous_pipeline.errors import UsageError
from tests.conftest import ROOT, md

WEAKENING_ENV = "PIPELINE_CONFINE=false\nPIPELINE_AGENT_ENV=MY_API_TOKEN\nPIPELINE_NO_ISOLATION=1\n"
PLAN = md(
    """
    ## Batch 1: One
    **Execution Mode:** container
    ### Task 1.1: a
    ## Batch 2: Two
    ### Task 2.1: b
    """
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME and configuration folder of the test's own, no PIPELINE_* from outside."""
    for key in list(os.environ):
        if key.startswith("PIPELINE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    return tmp_path / "home"


def test_a_env_in_the_working_directory_is_never_read(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".env").write_text(WEAKENING_ENV + "PIPELINE_MAX_CONCURRENT=7\n")
    monkeypatch.chdir(repo)
    s = load_settings()
    assert (s.confine, s.agent_env, s.no_isolation, s.max_concurrent) == (True, None, False, 4)


def test_the_configuration_folder_env_sets_what_is_harmless(home: Path) -> None:
    config_dir().mkdir(parents=True)
    (config_dir() / ".env").write_text("PIPELINE_MAX_CONCURRENT=7\nPIPELINE_AGENT=literal\n")
    s = load_settings()
    assert (s.max_concurrent, s.agent) == (7, "literal")


@pytest.mark.parametrize("line", [*WEAKENING_ENV.splitlines(), "PIPELINE_AGENT_NETWORK=host"])
def test_a_weakening_setting_in_a_file_is_refused_by_name(home: Path, line: str) -> None:
    config_dir().mkdir(parents=True)
    (config_dir() / ".env").write_text(f"PIPELINE_MAX_CONCURRENT=2\n{line}\n")
    with pytest.raises(UsageError) as info:
        load_settings()
    name = line.split("=")[0]
    assert name in str(info.value) and str(config_dir() / ".env") in str(info.value)
    assert "command line" in str(info.value)


def test_no_isolation_only_from_the_command_line(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_NO_ISOLATION", "1")
    monkeypatch.setenv("PIPELINE_CONFINE", "false")  # the operator's own shell: taken
    s = load_settings()
    assert s.no_isolation is False and s.confine is False
    assert load_settings(no_isolation=True).no_isolation is True


def starter(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_starter_ignores_the_repositorys_env_and_refuses_the_configs(
    home: Path, tmp_path: Path
) -> None:
    (tmp_path / "PLAN.md").write_text(PLAN)
    (tmp_path / ".env").write_text("PIPELINE_END_BATCH=1\n" + WEAKENING_ENV)
    env = dict(os.environ)
    r = starter("--plan", "PLAN.md", "--dry-run", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    batches = json.loads(r.stdout)["batches"]
    assert [b["id"] for b in batches] == ["1", "2"]  # END_BATCH from the cwd's .env: not read
    # The plan's own execution mode, and the default for the batch that names none.
    assert [b["sandbox"] for b in batches] == ["container", "worktree"]
    config_dir().mkdir(parents=True)
    (config_dir() / ".env").write_text("PIPELINE_CONFINE=false\n")
    r = starter("--plan", "PLAN.md", "--dry-run", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "PIPELINE_CONFINE" in r.stderr and "Traceback" not in r.stderr


def test_sandbox_flags_in_the_dry_run(home: Path, tmp_path: Path) -> None:
    (tmp_path / "PLAN.md").write_text(PLAN)
    env = dict(os.environ)
    flags = ["--plan", "PLAN.md", "--dry-run", "--json", "--sandbox", "dagger"]
    r = starter(*flags, cwd=tmp_path, env=env)
    assert [b["sandbox"] for b in json.loads(r.stdout)["batches"]] == ["container", "dagger"]
    r = starter(*flags, "--override-execution-mode", cwd=tmp_path, env=env)
    assert [b["sandbox"] for b in json.loads(r.stdout)["batches"]] == ["dagger", "dagger"]
    tree = starter("--plan", "PLAN.md", "--dry-run", cwd=tmp_path, env=env)
    assert "sandbox container" in tree.stdout and "sandbox worktree" in tree.stdout


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--sandbox", "vm"), ("--agent-network", "lan"), ("--container-runtime", "lxc")],
)
def test_unknown_choices_are_refused_up_front(
    home: Path, tmp_path: Path, flag: str, value: str
) -> None:
    (tmp_path / "PLAN.md").write_text(PLAN)
    r = starter("--plan", "PLAN.md", flag, value, cwd=tmp_path, env=dict(os.environ))
    assert r.returncode == 2 and f"invalid choice: '{value}'" in r.stderr
    assert not (tmp_path / "home" / ".cache").exists()
