"""A cluster (Temporal Cloud included) is reached through Temporal's standard environment
configuration: a TOML profile with its address, namespace, API key and TLS, no code change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from autonomous_pipeline.cli import connect


async def test_a_profile_gives_the_address_namespace_api_key_and_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.cloud]\naddress = "my-ns.a1b2c.tmprl.cloud:7233"\nnamespace = "my-ns.a1b2c"\n'
        'api_key = "key-from-profile"\n[profile.cloud.tls]\nserver_name = "my-ns.a1b2c"\n'
    )
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    seen: dict[str, Any] = {}

    async def fake_connect(target: str, **kwargs: Any) -> str:
        seen.update(kwargs, target=target)
        return "client"

    monkeypatch.setattr(Client, "connect", fake_connect)
    assert await connect.connect_client(None) == "client"
    assert seen["target"] == "my-ns.a1b2c.tmprl.cloud:7233"
    assert seen["namespace"] == "my-ns.a1b2c" and seen["api_key"] == "key-from-profile"
    assert seen["tls"] and seen["tls"].domain == "my-ns.a1b2c"
    # The command line's --address and --namespace win over the profile's.
    await connect.connect_client("10.0.0.5:7233", "other")
    assert (seen["target"], seen["namespace"]) == ("10.0.0.5:7233", "other")
    assert seen["api_key"] == "key-from-profile"
