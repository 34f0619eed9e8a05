"""The real plans in ../shared/plans parse as the plan format's table says."""

from __future__ import annotations

from pathlib import Path

from autonomous_pipeline.plan_parser import parse_plan


def test_pipeline_hardening(shared_plans: Path) -> None:
    plan = parse_plan((shared_plans / "PipelineHardening_test-plan-01.md").read_bytes())
    assert [(b.id, [t.id for t in b.tasks]) for b in plan.batches] == [
        ("1", ["1.1", "1.2"]),
        ("2", ["2.1"]),
    ]
    assert plan.batch("2").depends_on == ["1"]
    assert [f.path for t in plan.tasks for f in t.files] == [
        "test-artifacts/hello.txt",
        "test-artifacts/hello.py",
        "test-artifacts/config.json",
    ]
    assert plan.warnings == [] and plan.done_elsewhere == []


def test_cc4_master_plan(shared_plans: Path) -> None:
    plan = parse_plan((shared_plans / "CC4_cc3-master-plan.md").read_bytes())
    assert [b.id for b in plan.batches] == ["7", "8", "9", "10", "1", "2", "3", "4", "5", "6"]
    assert len(plan.tasks) == 26
    assert not any(t.done for t in plan.tasks)
    assert [t.id for t in plan.done_elsewhere] == ["1.1.1", "2.1.1", "2.1.2", "2.1.3"]
    tasks = {t.id: t for t in plan.tasks}
    assert [(f.action, f.path) for f in tasks["4.1.3"].files] == [
        ("modify", "backend/app/main.py"),
        ("create", "backend/app/startup.py"),
    ]
    assert all(tasks[f"4.{b}.{n}"].files for b in range(1, 7) for n in range(1, 4))
    prompt = tasks["4.6.3"].instructions
    for later in (
        "Between Batches Protocol",
        "Quick Reference",
        "Project Health Summary",
        "Phase 5",
    ):
        assert later not in prompt
    assert "Success Criteria" not in tasks["7.2"].instructions
    assert plan.batch("8").execution_mode == "dagger"


def test_teach_assist_checklist(shared_plans: Path) -> None:
    plan = parse_plan((shared_plans / "teach-assist_master-plan.md").read_bytes())
    assert [(b.id, len(b.tasks)) for b in plan.batches] == [
        ("A", 19),
        ("B", 8),
        ("C", 16),
        ("D", 11),
        ("E", 15),
    ]
    assert len(plan.tasks) == 69
    assert [t.id for t in plan.batch("A").tasks][:5] == ["0.1", "0.2", "0.3", "0.4", "1.1"]
    assert plan.batch("E").tasks[-1].id == "11.5"
    assert "Backend starts without errors" in plan.batch("A").criteria
    assert all("Worktree Management" not in t.instructions for t in plan.tasks)
