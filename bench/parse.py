"""Parse time of a generated 2,000-task plan. Prints one JSON object as its last line.

.venv/bin/python bench/parse.py [--tasks 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from autonomous_pipeline.plan_parser import parse_plan


def generate(
    n_tasks: int, per_batch: int = 10, runnable: bool = False, title: str = "Generated plan"
) -> str:
    """A plan shaped like real ones: files, commands, criteria, fences, task dependencies.

    `runnable`: a check that passes anywhere and no chain of dependencies inside a batch, for
    benchmarks that run the plan (bench/scale.py) rather than parse it.
    """
    out = [f"# {title}", ""]
    for b in range(1, (n_tasks + per_batch - 1) // per_batch + 1):
        out += [
            f"## Batch {b}: Generated batch {b}",
            f"**Dependencies:** {'None' if b == 1 else f'Batch {b - 1}'}",
            "",
        ]
        for t in range(1, min(per_batch, n_tasks - (b - 1) * per_batch) + 1):
            tid = f"{b}.{t}"
            check = "test -d ." if runnable else f"pytest tests/pkg{b}/test_mod{t}.py"
            out += [
                f"### Task {tid}: Implement feature {tid}",
                "**Files:**",
                f"- Create: `src/pkg{b}/mod{t}.py`",
                f"- Test: tests/pkg{b}/test_mod{t}.py",
                "**Implementation:**",
                f"Write `mod{t}` with a function that returns {tid}.",
                "```python",
                f"def value():\n    return '{tid}'",
                "```",
                "**Verification:**",
                f"- `{check}`",
                "- The function is documented",
            ]
            if t > 1 and not runnable:
                out.append(f"**Depends on:** Task {b}.{t - 1}")
            out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    text = generate(args.tasks)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        plan = parse_plan(text)
        times.append(time.perf_counter() - start)
    assert len(plan.tasks) == args.tasks
    print(
        json.dumps(
            {
                "tasks": len(plan.tasks),
                "batches": len(plan.batches),
                "lines": text.count("\n"),
                "parse_s_best": round(min(times), 4),
                "parse_s_median": round(statistics.median(times), 4),
                "goal_s": 0.5,
            }
        )
    )


if __name__ == "__main__":
    main()
