"""The process's Temporal runtime: the SDK core's logs through Python logging (so they take the
same processors, masking included, as every other line), and with `--metrics-port` its metrics
on a Prometheus endpoint: the SDK's `temporal_*` worker metrics and the pipeline's own
(`workflows.metrics`).

Set once per process, before the first client connects."""

from __future__ import annotations

import logging

from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.workflows import metrics as m

# Buckets fit to what each measures (the SDK's defaults are for milliseconds of latency).
MINUTES = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
HOURS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 24 * 3600.0)
DOLLARS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0)
BUCKETS = {
    m.AGENT_SECONDS: MINUTES,
    m.AGENT_COST: DOLLARS,
    m.LIMIT_WAIT: HOURS,
    m.APPROVAL_WAIT: HOURS,
}


def configure_runtime(metrics_port: int | None = None, metrics_host: str = "0.0.0.0") -> None:
    metrics = (
        PrometheusConfig(
            bind_address=f"{metrics_host}:{metrics_port}",
            counters_total_suffix=True,  # Prometheus's naming: a counter's name ends _total
            durations_as_seconds=True,
            histogram_bucket_overrides=BUCKETS,
        )
        if metrics_port is not None
        else None
    )
    telemetry = TelemetryConfig(
        logging=LoggingConfig(
            filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
            forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
        ),
        metrics=metrics,
    )
    try:
        runtime = Runtime(telemetry=telemetry)
    except ValueError as exc:  # the port is taken, or no address to bind
        raise UsageError(f"--metrics-port {metrics_port}: {exc}") from None
    Runtime.set_default(runtime, error_if_already_set=False)
