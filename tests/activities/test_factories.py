"""The agent factories the worker hands to the activities."""

from __future__ import annotations

import pytest

from autonomous_pipeline.backends.agents.claude_cli import ClaudeCliAgent
from autonomous_pipeline.backends.agents.command import CommandAgent
from autonomous_pipeline.backends.agents.literal import LiteralAgent
from autonomous_pipeline.backends.registry import (
    BackendLoadError,
    UnknownBackendError,
    make_agent,
    make_reviewer_agent,
)
from autonomous_pipeline.models.run import AgentConfig, ClaudeOptions, ReviewerConfig


def test_make_agent_builds_claude_from_the_run_options() -> None:
    options = ClaudeOptions(
        binary="/opt/claude",
        model="opus",
        max_turns=12,
        permission_mode="bypassPermissions",
        max_budget_usd=3.5,
        extra_args=["--allowedTools", "Bash(pytest:*)"],
    )
    agent = make_agent(AgentConfig(backend="claude", claude=options))
    assert isinstance(agent, ClaudeCliAgent) and agent.sessions is True
    assert (agent.binary, agent.model, agent.max_turns) == ("/opt/claude", "opus", 12)
    assert (agent.permission_mode, agent.max_budget_usd) == ("bypassPermissions", 3.5)
    assert agent.extra_args == ["--allowedTools", "Bash(pytest:*)"]
    default = make_agent(AgentConfig(backend="claude"))
    # No mode chosen: the backend picks by whether a sandbox holds it.
    assert isinstance(default, ClaudeCliAgent) and default.permission_mode is None


def test_make_agent_by_name_and_bad_options() -> None:
    assert isinstance(make_agent(AgentConfig(backend="literal")), LiteralAgent)
    assert isinstance(make_agent(AgentConfig(backend="command")), CommandAgent)
    with pytest.raises(UnknownBackendError):
        make_agent(AgentConfig(backend="nope"))
    bad = AgentConfig(backend="claude", claude=ClaudeOptions(permission_mode="yolo"))
    with pytest.raises(BackendLoadError, match="permission_mode 'yolo'"):
        make_agent(bad)


def test_make_reviewer_agent() -> None:
    assert make_reviewer_agent(ReviewerConfig()) is None  # "none" is the default
    assert isinstance(make_reviewer_agent(ReviewerConfig(backend="command")), CommandAgent)
    claude = make_reviewer_agent(ReviewerConfig(backend="claude"))
    assert isinstance(claude, ClaudeCliAgent) and claude.permission_mode == "plan"
    with pytest.raises(UnknownBackendError):
        make_reviewer_agent(ReviewerConfig(backend="nope"))
