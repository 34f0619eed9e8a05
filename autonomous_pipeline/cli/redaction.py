"""Secret values stop at the process's edge to Temporal: payloads and failures.

Process output is masked where it is read (`backends._proc`), log records by `cli.logs`; this is
the safety net for everything else a worker or the starter sends: every payload (workflow input,
activity results, heartbeats, query answers) and every failure message and stack trace goes
through the `Redactor` of the process's secret environment variables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    PayloadCodec,
    PayloadConverter,
)

from autonomous_pipeline.backends.secrets import redactor


class RedactingCodec(PayloadCodec):
    """Masks secret values in every payload sent; decoding changes nothing."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        mask = redactor()
        if not mask:
            return list(payloads)
        return [Payload(metadata=dict(p.metadata), data=mask.bytes(p.data)) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


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
    """Pydantic payloads, masked on the way out."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=RedactingCodec(),
        failure_converter_class=RedactingFailureConverter,
    )
