"""AlterClientQuotas (key 49): set / remove quotas as QuotaRecords (broker/quotas.py).

Entity types: Kafka's user and client-id (alone or together), plus
consumer-group (alone; keys consumer_byte_rate and commit_request_rate). A
null entity name is the type's default. validate_only checks and changes nothing.
"""

from __future__ import annotations

import datetime

from kio.schema.alter_client_quotas.v1.request import AlterClientQuotasRequest
from kio.schema.alter_client_quotas.v1.response import AlterClientQuotasResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.consensus.records import QuotaRecord
from lodestream.broker import audit
from lodestream.broker.quotas import QuotaError, make_entity, validate
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext

API_KEY = 49
VERSIONS = range(0, 2)
LISTENERS = "both"  # served on the controller listener too: other nodes forward it there
FORWARDED_TO_CONTROLLER = True


async def handle(ctx: RequestContext, request: AlterClientQuotasRequest) -> AlterClientQuotasResponse:
    build = ctx.build
    results = []
    records = []
    may_alter = ctx.authorize(Operation.ALTER_CONFIGS, ResourceType.CLUSTER)
    for entry in request.entries:
        entity_data = tuple(build.EntityData(entity_type=e.entity_type, entity_name=e.entity_name)
                            for e in entry.entity)
        error, message = ErrorCode.none, None
        entry_records = []
        if not may_alter:  # as Kafka: every entry refused, nothing written
            results.append(build.EntryData(error_code=DENIED[ResourceType.CLUSTER], error_message=None,
                                           entity=entity_data))
            continue
        try:
            types = [e.entity_type for e in entry.entity]
            if len(set(types)) != len(types):
                raise QuotaError("Invalid quota entity: duplicate entity type")
            entity = make_entity((e.entity_type, e.entity_name) for e in entry.entity)
            keys = set()
            for op in entry.ops:
                if op.key in keys:
                    raise QuotaError(f"Duplicate quota key {op.key}")
                keys.add(op.key)
                value = None if op.remove else float(op.value)
                validate(entity, op.key, value)
                entry_records.append(QuotaRecord(entity, op.key, value))
        except QuotaError as exc:
            error, message = ErrorCode.invalid_request, str(exc)
            entry_records = []
        records.extend(entry_records)
        results.append(build.EntryData(error_code=error, error_message=message, entity=entity_data))
    if records and not request.validate_only:
        await ctx.broker.propose(records)
        changed: dict = {}
        for record in records:  # one audit line per entity
            changed.setdefault(record.entity, {})[record.key] = record.value
        for entity, changes in changed.items():
            audit.quotas_changed(ctx.session, entity, changes)
    return build.AlterClientQuotasResponse(throttle_time=datetime.timedelta(0), entries=tuple(results))
