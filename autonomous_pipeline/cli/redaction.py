"""Secret values stop at the process's edge to Temporal, in what the pipeline reports, never in
what it acts on.

Process output is masked where it is read (`backends._proc`), log records by `cli.logs`; this is
the safety net for everything else a worker or the starter sends. Two kinds of payload go out:

- what the pipeline acts on: a run's and a task's input, each activity's argument, a steering
  request. These are never rewritten: a repository at `/x/<value>-app` or a check that greps for
  the value must reach the step as written (masking them once turned a run's repository path
  into `/x/***-app`).
- everything else, which reports: activity results, heartbeats, query answers, memos, workflow
  results, and every failure message and stack trace. These are masked.

The payload converter knows a value's type and so which kind it is; it marks reports, and the
codec, which runs outside the workflow sandbox and reads the process's environment, masks the
marked payloads with the `Redactor` of the process's secret environment variables.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
    PayloadConverter,
)

from autonomous_pipeline.backends.secrets import Redactor, redactor
from autonomous_pipeline.models.activity_refs import ALL
from autonomous_pipeline.models.run import CancelRequest, PlanRunInput, TaskInput
from autonomous_pipeline.models.steer import DecideRequest, RunInfo, SteerRequest

# The types of what the pipeline acts on. Anything else is a report (the safe default: a value
# of a type added later is masked until it is listed here). RunInfo is the run's start memo:
# where it came from, which `runs` and the shared-target check compare with the next command's.
ACTED_ON: frozenset[type] = frozenset(
    {ref.arg for ref in ALL}
    | {PlanRunInput, TaskInput, SteerRequest, DecideRequest, CancelRequest, RunInfo}
)
REPORT_KEY = "pipeline-report"


class _MarkingJSONConverter(PydanticJSONPlainPayloadConverter):
    def to_payload(self, value: Any) -> Payload | None:
        payload = super().to_payload(value)
        if payload is not None and type(value) not in ACTED_ON:
            payload.metadata[REPORT_KEY] = b"1"
        return payload


class MarkingPayloadConverter(CompositePayloadConverter):
    """Pydantic JSON payloads, each report marked for the codec to mask."""

    def __init__(self) -> None:
        json_converter = _MarkingJSONConverter()
        super().__init__(
            *(
                json_converter if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


class RedactingCodec(PayloadCodec):
    """Masks secret values in every marked payload sent; decoding changes nothing."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        mask = redactor()
        if not mask:
            return list(payloads)
        return [
            Payload(metadata=dict(p.metadata), data=masked_json(mask, p.data))
            if REPORT_KEY in p.metadata
            else p
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def masked_json(mask: Redactor, data: bytes) -> bytes:
    """`data` with the secrets in its JSON strings masked. Only strings: a secret of digits
    replaced inside a number (`12.345678` -> `12.***`) would leave a payload nobody can decode,
    and the workflow that reads it would fail at every retry."""
    if not mask.found(data):
        return data
    try:
        value = json.loads(data)
    except ValueError:
        return mask.bytes(data)  # not JSON: text, masked as text
    return json.dumps(mask.deep(value), ensure_ascii=False, separators=(",", ":")).encode()


class RedactingFailureConverter(DefaultFailureConverter):
    """Masks secret values in failure messages and stack traces, causes included."""

    def to_failure(
        self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure
    ) -> None:
        super().to_failure(exception, payload_converter, failure)
        mask = redactor()
        node: Failure | None = failure
        while mask and node is not None:
            node.message = mask(node.message)
            node.stack_trace = mask(node.stack_trace)
            node = node.cause if node.HasField("cause") else None


def data_converter() -> DataConverter:
    """Pydantic payloads; reports and failures masked on the way out."""
    return dataclasses.replace(
        DataConverter.default,
        payload_converter_class=MarkingPayloadConverter,
        payload_codec=RedactingCodec(),
        failure_converter_class=RedactingFailureConverter,
    )
