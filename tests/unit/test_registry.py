"""Agent backends by name: built-ins, plugins through entry points, and loud failures."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint

import pytest

from autonomous_pipeline.backends import registry
from autonomous_pipeline.backends.agents.command import CommandAgent
from autonomous_pipeline.backends.agents.literal import LiteralAgent
from autonomous_pipeline.backends.base import AgentOutcome, AgentRequest, Heartbeat
from autonomous_pipeline.backends.registry import (
    BackendLoadError,
    UnknownBackendError,
    agent_backend,
    agent_names,
)
from autonomous_pipeline.errors import PipelineError


class PluginAgent:
    name = "plugin"

    async def run(self, request: AgentRequest, heartbeat: Heartbeat) -> AgentOutcome:
        raise NotImplementedError


def fake_entry_points(*eps: tuple[str, str]) -> Callable[[str], list[EntryPoint]]:
    def entry_points(group: str) -> list[EntryPoint]:
        assert group == registry.GROUP
        return [EntryPoint(name=n, value=v, group=group) for n, v in eps]

    return entry_points


def test_builtins_are_registered_through_the_installed_metadata() -> None:
    from importlib.metadata import entry_points

    installed = {ep.name: ep.value for ep in entry_points(group=registry.GROUP)}
    assert installed["literal"] == registry.BUILTIN_AGENTS["literal"]
    assert installed["command"] == registry.BUILTIN_AGENTS["command"]
    assert {"literal", "command"} <= set(agent_names())


def test_builtins_instantiate_fresh() -> None:
    a, b = agent_backend("literal"), agent_backend("literal")
    assert isinstance(a, LiteralAgent) and a is not b
    assert isinstance(agent_backend("command"), CommandAgent)
    assert agent_backend("command").name == "command"


def test_builtins_without_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "entry_points", fake_entry_points())
    assert agent_names() == ["claude", "command", "literal"]
    assert isinstance(agent_backend("literal"), LiteralAgent)


def test_a_plugin_registers_through_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    target = f"{__name__}:PluginAgent"
    monkeypatch.setattr(registry, "entry_points", fake_entry_points(("plugin", target)))
    assert "plugin" in agent_names()
    assert isinstance(agent_backend("plugin"), PluginAgent)


def test_unknown_backend_lists_the_known_names() -> None:
    with pytest.raises(UnknownBackendError) as exc:
        agent_backend("claude-but-misspelled")
    assert isinstance(exc.value, PipelineError)
    message = str(exc.value)
    assert "'claude-but-misspelled'" in message
    assert "command" in message and "literal" in message


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("no_such_module_xyz:Agent", "failed to load"),
        (f"{__name__}:NoSuchAttr", "failed to load"),
        (f"{__name__}:registry", "failed to load"),  # a module: not callable
        ("builtins:object", r"no run\(\) method"),
    ],
)
def test_a_broken_plugin_is_an_error_not_a_substitute(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    monkeypatch.setattr(registry, "entry_points", fake_entry_points(("broken", value)))
    with pytest.raises(BackendLoadError, match=why):
        agent_backend("broken")


def test_a_name_claimed_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        registry, "entry_points", fake_entry_points(("literal", f"{__name__}:PluginAgent"))
    )
    with pytest.raises(BackendLoadError, match="more than once"):
        agent_backend("literal")
    # The same target registered twice (a stale second install) is not a conflict.
    monkeypatch.setattr(
        registry,
        "entry_points",
        fake_entry_points(
            ("literal", "autonomous_pipeline.backends.agents.literal : LiteralAgent")
        ),
    )
    assert isinstance(agent_backend("literal"), LiteralAgent)
