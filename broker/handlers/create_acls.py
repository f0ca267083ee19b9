"""CreateAcls (key 30): add ACLs (kafka-acls --add), as AclRecords in the metadata log (broker/authorizer.py).

Answered per ACL, in request order: INVALID_REQUEST for one Kafka would refuse (an unknown or ANY type,
pattern, operation or permission, an empty name, a CLUSTER resource not named kafka-cluster, a principal
that is not Type:name), success for one that exists already (nothing is written twice). Without
authorizer.class.name there are no ACLs to keep: SECURITY_DISABLED, as Kafka answers.
"""

from __future__ import annotations

import datetime

from kio.schema.create_acls.v3.request import CreateAclsRequest
from kio.schema.create_acls.v3.response import CreateAclsResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.authorizer import DENIED, Acl, Operation, ResourceType, acl_of, acl_problem, acl_record
from lodestream.broker.request_context import RequestContext

API_KEY = 30
VERSIONS = range(1, 4)
LISTENERS = "both"
FORWARDED_TO_CONTROLLER = True


async def handle(ctx: RequestContext, request: CreateAclsRequest) -> CreateAclsResponse:
    build = ctx.build
    results = []
    if not ctx.authorize(Operation.ALTER, ResourceType.CLUSTER):  # asked first, as Kafka does
        refusal = DENIED[ResourceType.CLUSTER], None
    elif not ctx.broker.config.get("authorizer.class.name"):
        refusal = ErrorCode.security_disabled, "No Authorizer is configured."
    else:
        refusal = None
    existing = {acl_of(record) for record in ctx.broker.image.acls.values()}
    records = []
    for creation in request.creations:
        acl = Acl(creation.resource_type, creation.resource_name, creation.resource_pattern_type, creation.principal,
                  creation.host, creation.operation, creation.permission_type)
        error, message = refusal or (ErrorCode.none, None)
        problem = None if refusal else acl_problem(acl)
        if problem:
            error, message = ErrorCode.invalid_request, problem
        elif refusal is None and acl not in existing:
            existing.add(acl)
            records.append(acl_record(acl))
        results.append(build.AclCreationResult(error_code=error, error_message=message))
    if records:
        await ctx.broker.propose(records)
    return build.CreateAclsResponse(throttle_time=datetime.timedelta(0), results=tuple(results))
