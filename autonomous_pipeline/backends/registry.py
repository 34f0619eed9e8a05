"""Agent backends by name: built-ins and third-party plugins, found the same way.

A plugin package registers a class (or a factory taking no arguments) in its own metadata:

    [project.entry-points."autonomous_pipeline.agents"]
    my-agent = "my_package.agent:MyAgent"

The built-ins are declared in this project's pyproject.toml under the same group. `BUILTIN_AGENTS`
repeats them so that a source checkout without installed metadata still finds them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import cast

from autonomous_pipeline.backends.agents.claude_cli import ClaudeCliAgent
from autonomous_pipeline.backends.agents.command import CommandAgent
from autonomous_pipeline.backends.base import AgentBackend
from autonomous_pipeline.errors import PipelineError
from autonomous_pipeline.models.run import AgentConfig, ClaudeOptions, ReviewerConfig

GROUP = "autonomous_pipeline.agents"

BUILTIN_AGENTS: dict[str, str] = {
    "literal": "autonomous_pipeline.backends.agents.literal:LiteralAgent",
    "command": "autonomous_pipeline.backends.agents.command:CommandAgent",
    "claude": "autonomous_pipeline.backends.agents.claude_cli:ClaudeCliAgent",
}


class UnknownBackendError(PipelineError):
    """A configured backend name that nothing provides. Never replaced by another backend."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"unknown agent backend {name!r}; known backends: {', '.join(known) or '(none)'}"
        )


class BackendLoadError(PipelineError):
    """A backend that is registered but cannot be imported, instantiated, or is ambiguous."""


def _targets() -> dict[str, set[str]]:
    """Every name with the `module:attr` targets registered for it."""
    found: dict[str, set[str]] = {name: {target} for name, target in BUILTIN_AGENTS.items()}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, set()).add(ep.value.replace(" ", ""))
    return found


def agent_names() -> list[str]:
    return sorted(_targets())


def agent_backend(name: str) -> AgentBackend:
    """A fresh instance of the backend registered as `name`."""
    targets = _targets()
    if name not in targets:
        raise UnknownBackendError(name, sorted(targets))
    if len(targets[name]) > 1:
        # Two packages claim the name: picking one silently would run the wrong agent.
        raise BackendLoadError(
            f"agent backend {name!r} is registered more than once: {', '.join(sorted(targets[name]))}"
        )
    (target,) = targets[name]
    module_name, _, attr = target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{target} is not callable")
        backend = obj()
    except Exception as exc:
        raise BackendLoadError(f"agent backend {name!r} ({target}) failed to load: {exc}") from exc
    if not callable(getattr(backend, "run", None)):
        raise BackendLoadError(f"agent backend {name!r} ({target}) has no run() method")
    return cast(AgentBackend, backend)


# The ClaudeOptions fields ClaudeCliAgent.from_options accepts (it refuses any other key).
_CLAUDE_FIELDS = ("binary", "model", "max_turns", "permission_mode", "max_budget_usd", "extra_args")


def claude_agent(options: ClaudeOptions) -> AgentBackend:
    """A ClaudeCliAgent built from the run's options; bad options are a BackendLoadError."""
    values = options.model_dump()
    try:
        return ClaudeCliAgent.from_options({k: values[k] for k in _CLAUDE_FIELDS})
    except ValueError as exc:
        raise BackendLoadError(f"agent backend 'claude': {exc}") from exc


def make_agent(config: AgentConfig) -> AgentBackend:
    """The backend that runs a task's agent: claude with the run's options, others by name."""
    if config.backend == "claude":
        return claude_agent(config.claude)
    return agent_backend(config.backend)


def make_reviewer_agent(config: ReviewerConfig) -> AgentBackend | None:
    """The reviewer's backend; None for "none" (no reviewer: every change is approved)."""
    if config.backend == "none":
        return None
    if config.backend == "claude":
        return claude_agent(config.claude)
    if config.backend == "command":
        return CommandAgent()
    return agent_backend(config.backend)
