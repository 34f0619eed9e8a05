"""OpenTelemetry traces of runs, tasks and steps, when an OTLP collector is configured.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and the
`otel` extra is installed: then `interceptors()` is `[]` and nothing of OpenTelemetry is
imported. On, it gives Temporal's `TracingInterceptor` for `Client.connect(interceptors=...)`:
the client's calls (start, signal, update, query) and the workers made from that client (each
workflow run, each child workflow, each activity) make spans, and the trace context travels in
Temporal's headers from the starter to every worker. The spans go through one TracerProvider
per process and a BatchSpanProcessor to OTLP over HTTP/protobuf; the exporter reads the
standard OTEL_EXPORTER_OTLP_* variables itself (headers, timeout, certificates, compression).

Temporal 1.35 also ships `OpenTelemetryPlugin`, experimental: its workflow spans last the
workflow's life and are exported only when it completes on the worker that started it. A run
lasts hours and moves between workers; the interceptor's workflow spans (zero-length marks,
written once, never on replay) survive that.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from temporalio.client import Interceptor

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE_NAME = "autonomous-pipeline"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_lock = threading.Lock()
_warned = threading.Event()
_provider: TracerProvider | None = None


def _configured() -> bool:
    """Whether an OTLP endpoint is set (and OTEL_SDK_DISABLED does not switch the SDK off)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def interceptors(*, exporter: SpanExporter | None = None) -> list[Interceptor]:
    """The interceptors to pass as `Client.connect(..., interceptors=interceptors())`.

    `[]` when no endpoint is configured or the `otel` extra is missing. Otherwise the process's
    TracerProvider is made on the first call (service name from OTEL_SERVICE_NAME, else
    "autonomous-pipeline") and registered as the global one; later calls share it.

    `exporter` is for tests: the spans go to it synchronously through a provider of their own
    (neither the process's nor the global one), whatever the environment says.
    """
    if exporter is None and not _configured():
        return []
    try:  # the `otel` extra: all three parts
        import opentelemetry.sdk.trace
        from temporalio.contrib.opentelemetry import TracingInterceptor

        if exporter is None:
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError as exc:
        # Asked for, but not installed: said once, so that no one waits for traces in vain.
        if not _warned.is_set():
            _warned.set()
            logging.getLogger(__name__).warning(
                "OTLP endpoint set but traces are off: the otel extra is missing (%s); "
                "pip install 'autonomous-pipeline[otel]'",
                exc.name,
            )
        return []
    provider = _private_provider(exporter) if exporter is not None else _process_provider()
    return [TracingInterceptor(provider.get_tracer(__name__))]


def shutdown() -> None:
    """Export the spans still queued and stop the process's provider; nothing when there is none.

    Call it before the process ends: the entry points leave with os._exit, which skips the
    provider's own atexit flush. It waits at most for one export (OTEL_EXPORTER_OTLP_TIMEOUT,
    10 s by default) when the collector does not answer."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def _resource() -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
    from opentelemetry.sdk.resources import Resource

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, as the SDK reads them; our name only where
    # they give none (the SDK's fallback is "unknown_service...").
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME_KEY, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME_KEY: SERVICE_NAME}))
    return resource


def _process_provider() -> TracerProvider:
    global _provider
    with _lock:
        if _provider is None:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider = TracerProvider(resource=_resource())
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            # Global too, for any library that traces through the OpenTelemetry API; a provider
            # someone set before stays (the API ignores a second one), ours still gets our spans.
            trace.set_tracer_provider(provider)
            _provider = provider
        return _provider


def _private_provider(exporter: SpanExporter) -> TracerProvider:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider
