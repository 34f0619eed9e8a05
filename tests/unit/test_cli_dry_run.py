"""The `--dry-run` command-line contract, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, md

VALID = md(
    """
    # Tiny

    ## Batch 1: First
    **Dependencies:** None
    **Execution Mode:** local
    ### Task 1.1: Make a file ✅
    **Files:**
    - Create: `a.txt`
    ### Task 1.2: Another
    **Files:**
    - Modify: b.py
    **Verification:**
    - `pytest -q`
    - Looks right

    ## Batch 2: Second
    **Dependencies:** Batch 1
    ### Task 2.1: Depends
    **Depends on:** Task 1.2
    Just do it.
    """
)


def starter(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    p = tmp_path / "PLAN.md"
    p.write_text(VALID)
    return p


def test_tree_output(plan_file: Path) -> None:
    r = starter("--plan", str(plan_file), "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for expected in (
        "Tiny",
        "Batch 1",
        "Batch 2",
        "after 1",
        "Task 1.1",
        "done",
        "create a.txt",
        "$ pytest -q",
        "criterion: Looks right",
        "depends on 1.2",
    ):
        assert expected in out, expected
    assert out.index("Batch 1") < out.index("Batch 2")


def test_json_contract(plan_file: Path) -> None:
    r = starter("--plan", str(plan_file), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"title", "batches", "done_elsewhere", "warnings"}
    assert data["title"] == "Tiny"
    b1, b2 = data["batches"]
    assert set(b1) == {"id", "title", "line", "depends_on", "execution_mode", "sandbox", "tasks"}
    assert (b1["id"], b1["line"], b1["depends_on"], b1["execution_mode"]) == ("1", 3, [], "local")
    assert b2["depends_on"] == ["1"]
    t11, t12 = b1["tasks"]
    assert set(t11) == {
        "id",
        "title",
        "line",
        "depends_on",
        "done",
        "files",
        "verification",
        "commands",
        "criteria",
        "instructions",
    }
    assert (t11["id"], t11["title"], t11["done"]) == ("1.1", "Make a file", True)
    assert t11["files"] == [{"action": "create", "path": "a.txt"}]
    # `verification` keeps both, in order; `commands` and `criteria` tell them apart.
    assert t12["verification"] == ["pytest -q", "Looks right"]
    assert (t12["commands"], t12["criteria"]) == (["pytest -q"], ["Looks right"])
    assert b2["tasks"][0]["depends_on"] == ["1.2"]
    assert b2["tasks"][0]["instructions"].endswith("Just do it.")
    assert data["done_elsewhere"] == []
    # Task 2.1 is to run and nothing verifies it (1.1 is done, 1.2 has a command).
    (warning,) = data["warnings"]
    assert warning["line"] == b2["tasks"][0]["line"]
    assert "1 of 2 tasks have no verification command" in warning["message"]
    assert warning["message"].endswith(": 2.1")


def test_json_selection_lists_only_selected_batches(plan_file: Path) -> None:
    r = starter(
        "--plan", str(plan_file), "--dry-run", "--json", "--start-batch", "2", "--end-batch", "2"
    )
    # Batch 1 still has a task to run, so batch 2 cannot run alone.
    assert r.returncode == 2
    assert f"{plan_file}:" in r.stderr and "--start-batch 1" in r.stderr
    r = starter("--plan", str(plan_file), "--dry-run", "--json", "--end-batch", "1")
    assert r.returncode == 0
    assert [b["id"] for b in json.loads(r.stdout)["batches"]] == ["1"]


def test_invalid_plan_prints_every_problem_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad plan ü.md"
    bad.write_text(
        "### Task 0.1: stray\n## Batch 1: a\n**Dependencies:** Batch 9\n## Batch 2: empty\n"
    )
    r = starter("--plan", str(bad), "--dry-run")
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith(f"{bad}:1: task 0.1 is outside any batch")
    assert any(line.startswith(f"{bad}:2: batch 1 has no tasks") for line in lines)
    assert any(line.startswith(f"{bad}:3: batch 1 depends on unknown batch '9'") for line in lines)
    assert "Traceback" not in r.stderr


def test_filename_is_printed_as_given(tmp_path: Path) -> None:
    (tmp_path / "p.md").write_text("nothing here\n")
    r = starter("--plan", "p.md", "--dry-run", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("p.md:1: no batches found")


@pytest.mark.parametrize("kind", ["missing", "directory", "unreadable"])
def test_unreadable_plan(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "plan.md"
    if kind == "directory":
        path.mkdir()
    elif kind == "unreadable":
        path.write_bytes(b"## Batch 1: a\n### Task 1.1: b\n")
        path.chmod(0)
        if os.access(path, os.R_OK):
            pytest.skip("this user (root) can read a file without read permission")
    r = starter("--plan", str(path), "--dry-run")
    assert r.returncode == 2
    assert r.stderr.startswith(f"{path}:1: cannot read the plan")
    assert "Traceback" not in r.stderr


def test_non_utf8_plan(tmp_path: Path) -> None:
    path = tmp_path / "latin1.md"
    path.write_bytes("## Batch 1: a\n### Task 1.1: café\n".encode("latin-1"))
    r = starter("--plan", str(path), "--dry-run", "--json")
    assert r.returncode == 2 and r.stderr.startswith(f"{path}:2: the plan is not valid UTF-8")


def test_missing_plan_flag_is_a_usage_error() -> None:
    r = starter("--dry-run")
    assert r.returncode == 2 and "--plan is required" in r.stderr


def test_warnings_reach_the_tree_and_json(tmp_path: Path) -> None:
    path = tmp_path / "w.md"
    path.write_text(
        "## Batch 1: a\n### Task 1.1: t\n**Files:** x.py\n### Task 1.2: u\n**Files:** x.py\n"
    )
    tree = starter("--plan", str(path), "--dry-run")
    assert (
        tree.returncode == 0 and f"{path}:4:" in tree.stdout and "both change x.py" in tree.stdout
    )
    data = json.loads(starter("--plan", str(path), "--dry-run", "--json").stdout)
    by_line = {w["line"]: w["message"] for w in data["warnings"]}
    assert "both change x.py" in by_line[4]
    assert "2 of 2 tasks have no verification command" in by_line[2]
    assert "no verification command" in tree.stdout


def test_real_plan_json(shared_plans: Path) -> None:
    r = starter(
        "--plan",
        str(shared_plans / "CC4_cc3-master-plan.md"),
        "--dry-run",
        "--json",
        "--start-batch",
        "8",
        "--end-batch",
        "10",
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [b["id"] for b in data["batches"]] == ["8", "9", "10"]
    assert [t["id"] for t in data["done_elsewhere"]] == ["1.1.1", "2.1.1", "2.1.2", "2.1.3"]
