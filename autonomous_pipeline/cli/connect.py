"""Connect to Temporal: `--address`, else the standard environment config, with pydantic payloads."""

from __future__ import annotations

from temporalio.client import Client

from autonomous_pipeline import tracing
from autonomous_pipeline.cli.redaction import data_converter
from autonomous_pipeline.errors import UsageError

TASK_QUEUE = "autonomous-pipeline"
# A run's workflow id is this prefix and its run key (`cli.run.run_identity`).
RUN_PREFIX = "pipeline-"


def run_key_of(workflow_id: str) -> str:
    return workflow_id.removeprefix(RUN_PREFIX)


async def connect_client(address: str | None, namespace: str | None = None) -> Client:
    from temporalio.envconfig import ClientConfigProfile

    config = dict(ClientConfigProfile.load().to_client_connect_config())
    if address:
        config["target_host"] = address
    if namespace:
        config["namespace"] = namespace
    config.setdefault("target_host", "127.0.0.1:7233")
    target = str(config.pop("target_host"))
    try:
        # Traced when an OTLP endpoint is set: the workers made from this client too.
        return await Client.connect(
            target,
            data_converter=data_converter(),
            interceptors=tracing.interceptors(),
            **config,  # type: ignore[arg-type]
        )
    except Exception as exc:
        text = str(exc)
        reason = "connection refused" if "refused" in text.lower() else text.splitlines()[0][:200]
        raise UsageError(
            f"cannot reach Temporal at {target} ({reason}); start it, fix --address, or leave --address "
            "out to use the embedded server"
        ) from None


def ui_base_of(address: str, ui_url: str | None) -> str:
    """The Web UI of a server given by address: `ui_url` when set, else its host on port 8233."""
    return ui_url or f"http://{address.rsplit(':', 1)[0]}:8233"


def workflow_link(ui_base: str | None, namespace: str, workflow_id: str) -> str | None:
    """The Web UI page of one workflow."""
    return f"{ui_base}/namespaces/{namespace}/workflows/{workflow_id}" if ui_base else None
