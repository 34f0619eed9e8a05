"""Autonomous Pipeline: run coding agents against a markdown implementation plan, durably, on
Temporal. `workflows` and `activities` are the Temporal code; `cli` the command line; `backends`
the agents, sandboxes and git; `models` the types that cross every boundary."""
