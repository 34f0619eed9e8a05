"""Whether a server can take the runs' search attributes (models.search), registering them where
the server is the pipeline's own."""

from __future__ import annotations

import sys

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError

from autonomous_pipeline.models.search import ATTRIBUTES, Kind, create_commands

_TYPES = {
    Kind.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    Kind.DOUBLE: IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
}


async def missing_attributes(client: Client) -> dict[str, Kind]:
    """The attributes the client's namespace lacks (or has with another type)."""
    have = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return {
        name: kind
        for name, kind in ATTRIBUTES.items()
        if have.custom_attributes.get(name) != _TYPES[kind]
    }


async def ensure_searchable(client: Client, embedded: bool) -> bool:
    """True when the run may write its search attributes. The embedded server registers them as
    it starts; one started by an older version gets them now. On a cluster that lacks them the
    run goes on unsearchable, and the operator is told the commands that register them."""
    try:
        missing = await missing_attributes(client)
        if missing and embedded:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={n: _TYPES[k] for n, k in missing.items()},
                )
            )
            missing = await missing_attributes(client)
    except RPCError as exc:
        print(
            f"warning: runs are not searchable: cannot read the server's search attributes "
            f"({exc.message})",
            file=sys.stderr,
        )
        return False
    if missing:
        print(
            f"warning: runs are not searchable on this server: it lacks the search attributes "
            f"{', '.join(missing)}; an administrator registers them with\n  "
            + "\n  ".join(create_commands(client.namespace)),
            file=sys.stderr,
        )
        return False
    return True
