"""The checklist dialect: `- [ ] **N.M** title` items under batch headers."""

from __future__ import annotations

from autonomous_pipeline.plan_parser import parse_plan
from tests.conftest import md

CHECKLIST = md(
    """
    # Checklist plan

    ## Batch A: Foundation

    ### Phase 0: Setup

    - [ ] **0.1** Initialize the repo
      ```bash
      git init
      ## Batch Z: not a batch
      ```

    - [x] **0.2** Already there
    - [ ] **0.3**: Create `backend/api/main.py` (FastAPI app)
      - detail one
      - detail two

    ### Phase 1: More

    - [ ] **1.1** Copy things

    **Batch A Exit Criteria:**
    - [ ] Backend starts
    - [ ] Health is OK

    ## Batch B: Personas
    - [ ] **3.1** Create `personas/a.yaml`, `personas/b.yaml`

    ## Appendix
    - [ ] **9.9** not a task: outside any batch
    """
)


def test_checklist_items_are_tasks() -> None:
    plan = parse_plan(CHECKLIST)
    assert [b.id for b in plan.batches] == ["A", "B"]
    assert [t.id for t in plan.batch("A").tasks] == ["0.1", "0.2", "0.3", "1.1"]
    assert [t.id for t in plan.batch("B").tasks] == ["3.1"]


def test_checked_items_are_done() -> None:
    tasks = {t.id: t for t in parse_plan(CHECKLIST).tasks}
    assert tasks["0.2"].done
    assert not tasks["0.1"].done and not tasks["1.1"].done


def test_checklist_task_body_is_its_indented_detail() -> None:
    tasks = {t.id: t for t in parse_plan(CHECKLIST).tasks}
    assert tasks["0.1"].title == "Initialize the repo"
    assert tasks["0.1"].instructions == "```bash\ngit init\n## Batch Z: not a batch\n```"
    assert tasks["0.3"].instructions == "- detail one\n- detail two"
    assert tasks["1.1"].instructions == ""


def test_unnumbered_checkboxes_are_batch_criteria() -> None:
    plan = parse_plan(CHECKLIST)
    assert plan.batch("A").criteria == ["Backend starts", "Health is OK"]


def test_checklist_titles_name_their_files() -> None:
    tasks = {t.id: t for t in parse_plan(CHECKLIST).tasks}
    assert [(f.action, f.path) for f in tasks["0.3"].files] == [("create", "backend/api/main.py")]
    assert [f.path for f in tasks["3.1"].files] == ["personas/a.yaml", "personas/b.yaml"]


def test_checklist_item_outside_batches_is_warned_not_run() -> None:
    plan = parse_plan(CHECKLIST)
    assert "9.9" not in {t.id for t in plan.tasks}
    assert any("9.9" in w.message and "outside any batch" in w.message for w in plan.warnings)


def test_bold_task_word_in_checklist_items() -> None:
    plan = parse_plan("## Batch 1: b\n- [ ] **Task 1.1:** first\n- [X] **1.2.** second\n")
    assert [(t.id, t.title, t.done) for t in plan.tasks] == [
        ("1.1", "first", False),
        ("1.2", "second", True),
    ]
