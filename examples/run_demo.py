"""`make demo`: a real plan, end to end, on the embedded Temporal dev server.

1. builds a small demo repository (package `toolkit` with its own unittest suite) under .demo/;
2. runs examples/demo_plan.md on it with the literal agent: each task in its own worktree,
   verified, merged into `pipeline/demo-plan` by the durable pipeline;
3. checks out the merged result and runs the demo's tests there;
4. stops the embedded server it started.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
sys.path.insert(0, str(ROOT / "examples"))

from make_demo_repo import make_demo_repo  # noqa: E402


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    if DEMO.exists():
        subprocess.call(
            [
                sys.executable,
                str(ROOT / "starter.py"),
                "server",
                "stop",
                "--workspace",
                str(DEMO / "workspace"),
            ]
        )
        shutil.rmtree(DEMO)
    repo, workspace, result = DEMO / "repo", DEMO / "workspace", DEMO / "result"
    step(f"building the demo repository in {repo}")
    make_demo_repo(repo)
    plan = ROOT / "examples" / "demo_plan.md"
    step("the plan, as the pipeline reads it")
    subprocess.check_call(
        [sys.executable, str(ROOT / "starter.py"), "--plan", str(plan), "--dry-run"]
    )
    step("running it: literal agent, one worktree per task, verify, merge")
    sandbox = []
    if shutil.which("bwrap") is None:
        # The demo's checks are its own unit tests, and the literal agent runs nothing: said
        # out loud, on the command line, as the starter requires for running without namespaces.
        print(
            "bubblewrap is not installed (apt-get install bubblewrap): the demo runs its checks "
            "with --no-isolation (Landlock only)",
            flush=True,
        )
        sandbox = ["--no-isolation"]
    run = [
        sys.executable,
        str(ROOT / "starter.py"),
        "--plan",
        str(plan),
        "--repo",
        str(repo),
        "--agent",
        "literal",
        "--workspace",
        str(workspace),
        *sandbox,
    ]
    try:
        code = subprocess.call(run)
        if code != 0:
            print(f"the run ended with exit code {code}", file=sys.stderr)
            return code
        step("the demo's tests on the merged result (branch pipeline/demo-plan)")
        subprocess.check_call(
            ["git", "clone", "-q", "-b", "pipeline/demo-plan", str(repo), str(result)]
        )
        subprocess.check_call(["git", "log", "--oneline", "main..pipeline/demo-plan"], cwd=repo)
        tests = subprocess.call(
            [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-t", ".", "-v"],
            cwd=result,
        )
        if tests != 0:
            return tests
        step("running the same command again attaches to the finished run instead of redoing it")
        return subprocess.call(run)
    finally:
        subprocess.call(
            [
                sys.executable,
                str(ROOT / "starter.py"),
                "server",
                "stop",
                "--workspace",
                str(workspace),
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
