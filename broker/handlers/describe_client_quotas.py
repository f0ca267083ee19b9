"""DescribeClientQuotas (key 48): the quotas stored in the metadata image (broker/quotas.py).

Filters as Kafka's: each component matches one entity type exactly (0), its
default (1) or any specified name (2); strict excludes entities with other
types. Besides Kafka's user / client-id, entity type consumer-group is listed.
"""

from __future__ import annotations

import datetime

from kio.schema.describe_client_quotas.v1.request import DescribeClientQuotasRequest
from kio.schema.describe_client_quotas.v1.response import DescribeClientQuotasResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.quotas import CLIENT_ID, CONSUMER_GROUP, IP, USER
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 48
VERSIONS = range(0, 2)

_TYPES = (USER, CLIENT_ID, IP, CONSUMER_GROUP)


async def handle(ctx: RequestContext, request: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse:
    build = ctx.build
    if not ctx.authorize(Operation.DESCRIBE_CONFIGS, ResourceType.CLUSTER):
        return build.DescribeClientQuotasResponse(
            throttle_time=datetime.timedelta(0), error_code=DENIED[ResourceType.CLUSTER], error_message=None,
            entries=None)
    components = []
    seen = set()
    for c in request.components:
        match_type = int(c.match_type)
        error = None
        if c.entity_type in seen:
            error = f"Duplicate filter component entity type {c.entity_type}"
        elif c.entity_type not in _TYPES:
            error = f"Custom entity type '{c.entity_type}' not supported"
        elif match_type not in (0, 1, 2) or (match_type == 0 and c.match is None):
            error = f"Unexpected match type {match_type}"
        if error is not None:
            return build.DescribeClientQuotasResponse(
                throttle_time=datetime.timedelta(0), error_code=ErrorCode.invalid_request,
                error_message=error, entries=None)
        seen.add(c.entity_type)
        components.append((c.entity_type, match_type, c.match))
    entries = tuple(
        build.EntryData(
            entity=tuple(build.EntityData(entity_type=t, entity_name=n) for t, n in entity),
            values=tuple(build.ValueData(key=k, value=float(v)) for k, v in sorted(values.items())),
        )
        for entity, values in ctx.broker.quotas.describe(components, bool(request.strict))
    )
    return build.DescribeClientQuotasResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, error_message=None, entries=entries)
