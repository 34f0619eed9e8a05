"""`python -m autonomous_pipeline ...` is the `autonomous-pipeline` command."""

from autonomous_pipeline.cli.main import entry

entry()
