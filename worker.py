"""A worker process: `python worker.py --address HOST:PORT --workspace DIR` (installed:
`autonomous-pipeline-worker`). The worker itself is `autonomous_pipeline.worker`."""

from autonomous_pipeline.worker import entry

if __name__ == "__main__":
    entry()
