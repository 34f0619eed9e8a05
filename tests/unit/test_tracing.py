"""`autonomous_pipeline.tracing`: off without an endpoint or the `otel` extra; on, one trace per run.

The run test drives a parent workflow, its child and the child's activity through the
interceptor on the time-skipping server (the installed binary, nothing downloaded), the
workflows in the SDK's default sandbox as the product's are.
"""

from __future__ import annotations

import http.server
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from autonomous_pipeline import tracing
    from tests import temporal_env

NO_EXTRA = "the `otel` extra is not installed (pip install -e '.[otel]')"
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def need_extra() -> None:
    for module in (
        "temporalio.contrib.opentelemetry",
        "opentelemetry.sdk.trace",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ):
        pytest.importorskip(module, reason=NO_EXTRA)


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENDPOINTS, "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)


@activity.defn
async def step(name: str) -> str:
    return f"did {name}"


@workflow.defn
class TracedChild:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(
            step, name, start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn
class TracedParent:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_child_workflow(
            TracedChild.run, "one", id=f"{workflow.info().workflow_id}-child"
        )


def test_off_without_an_endpoint(no_otel_env: None) -> None:
    assert tracing.interceptors() == []
    assert tracing._provider is None


def test_off_when_the_sdk_is_disabled(no_otel_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.interceptors() == []


def test_off_without_the_extra(no_otel_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint but no OpenTelemetry: no ImportError, no interceptor, no provider."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    # A None in sys.modules makes its import raise ImportError, as when it is not installed.
    monkeypatch.setitem(sys.modules, "temporalio.contrib.opentelemetry", None)
    assert tracing.interceptors() == []
    assert tracing._provider is None


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An OTLP/HTTP receiver on a free port: its URL, and each POST's path and body."""
    received: list[tuple[str, bytes]] = []

    # Made here, not at import: the workflow sandbox re-imports this module and refuses a
    # class that extends http.server's.
    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_the_endpoint_gets_the_spans_at_shutdown(
    no_otel_env: None,
    monkeypatch: pytest.MonkeyPatch,
    collector: tuple[str, list[tuple[str, bytes]]],
) -> None:
    """The process path: one provider for every call, OTLP/HTTP to the configured endpoint,
    the queued spans sent by shutdown()."""
    need_extra()
    from opentelemetry import trace
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from temporalio.contrib.opentelemetry import TracingInterceptor

    url, received = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    # The global provider is set once per process: this test's stays out of it.
    made_global: list[object] = []
    monkeypatch.setattr(trace, "set_tracer_provider", made_global.append)
    monkeypatch.setattr(tracing, "_provider", None)

    first = tracing.interceptors()
    assert [type(i) for i in first] == [TracingInterceptor]
    provider = tracing._provider
    assert provider is not None and made_global == [provider]
    assert provider.resource.attributes["service.name"] == "autonomous-pipeline"
    assert tracing.interceptors() and tracing._provider is provider

    interceptor = first[0]
    assert isinstance(interceptor, TracingInterceptor)
    with interceptor.tracer.start_as_current_span("a step"):
        pass
    assert received == []  # batched, not sent yet
    tracing.shutdown()
    assert tracing._provider is None
    tracing.shutdown()  # twice is harmless

    [(path, body)] = received
    assert path == "/v1/traces"
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "autonomous-pipeline"
    assert [s.name for ss in resource_spans.scope_spans for s in ss.spans] == ["a step"]


def test_the_service_name_from_the_environment(
    no_otel_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_extra()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "pipeline-ci")
    assert tracing._resource().attributes["service.name"] == "pipeline-ci"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    assert tracing._resource().attributes["service.name"] == "from-attributes"


async def test_a_run_is_one_trace(no_otel_env: None) -> None:
    """StartWorkflow (the client) is the root; the parent's run, the child's and the
    activity's spans hang under it by Temporal's headers."""
    need_extra()
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with (
        await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=temporal_env.test_server_path(),
            interceptors=tracing.interceptors(exporter=exporter),
        ) as env,
        Worker(
            env.client, task_queue=queue, workflows=[TracedParent, TracedChild], activities=[step]
        ),
    ):
        result = await env.client.execute_workflow(
            TracedParent.run, id=f"parent-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
    assert result == "did one"

    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1, "one trace"
    name_of = {s.context.span_id: s.name for s in spans}
    parent_of = {s.name: name_of[s.parent.span_id] if s.parent else None for s in spans}
    assert len(parent_of) == len(spans), "one span of each name"
    # Spans made in a workflow hang under the span that started it (its header); the interceptor
    # writes a workflow's spans once, as zero-length marks, never on replay.
    assert parent_of == {
        "StartWorkflow:TracedParent": None,
        "RunWorkflow:TracedParent": "StartWorkflow:TracedParent",
        "StartChildWorkflow:TracedChild": "StartWorkflow:TracedParent",
        "CompleteWorkflow:TracedParent": "StartWorkflow:TracedParent",
        "RunWorkflow:TracedChild": "StartChildWorkflow:TracedChild",
        "StartActivity:step": "StartChildWorkflow:TracedChild",
        "CompleteWorkflow:TracedChild": "StartChildWorkflow:TracedChild",
        "RunActivity:step": "StartActivity:step",
    }
    by_name = {s.name: s for s in spans}
    activity_attributes = dict(by_name["RunActivity:step"].attributes or {})
    assert str(activity_attributes["temporalWorkflowID"]).endswith("-child")
    assert by_name["StartWorkflow:TracedParent"].resource.attributes["service.name"] == (
        "autonomous-pipeline"
    )
