"""Start, follow and steer plan runs: `python starter.py --plan MASTER_PLAN.md` (installed:
`autonomous-pipeline --plan MASTER_PLAN.md`). The command line itself is `autonomous_pipeline.cli`."""

from autonomous_pipeline.cli.main import entry

if __name__ == "__main__":
    entry()
