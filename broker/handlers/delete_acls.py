"""DeleteAcls (key 31): remove the ACLs each filter matches (kafka-acls --remove), as RemoveAclRecords.

Each filter's result lists what it matched; an ACL two filters match is removed once and listed in both,
as Kafka answers. A filter Kafka would refuse gets INVALID_REQUEST; without authorizer.class.name,
SECURITY_DISABLED."""

from __future__ import annotations

import datetime

from kio.schema.delete_acls.v3.request import DeleteAclsRequest
from kio.schema.delete_acls.v3.response import DeleteAclsResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.consensus.records import RemoveAclRecord
from lodestream.broker.authorizer import DENIED, AclFilter, Operation, ResourceType, acl_of
from lodestream.broker.request_context import RequestContext

API_KEY = 31
VERSIONS = range(1, 4)
LISTENERS = "both"
FORWARDED_TO_CONTROLLER = True


async def handle(ctx: RequestContext, request: DeleteAclsRequest) -> DeleteAclsResponse:
    build = ctx.build
    refusal = None
    if not ctx.authorize(Operation.ALTER, ResourceType.CLUSTER):  # asked first, as Kafka does
        refusal = DENIED[ResourceType.CLUSTER], None
    elif not ctx.broker.config.get("authorizer.class.name"):
        refusal = ErrorCode.security_disabled, "No Authorizer is configured."
    acls = sorted(ctx.broker.image.acls.items(), key=lambda item: acl_of(item[1]))
    removed: dict = {}
    results = []
    for f in request.filters:
        acl_filter = AclFilter(f.resource_type_filter, f.resource_name_filter, f.pattern_type_filter,
                               f.principal_filter, f.host_filter, f.operation, f.permission_type)
        problem = acl_filter.problem()
        error, message = refusal or ((ErrorCode.invalid_request, problem) if problem else (ErrorCode.none, None))
        matching = []
        if error == ErrorCode.none:
            for acl_id, record in acls:
                acl = acl_of(record)
                if acl_filter.matches(acl):
                    removed[acl_id] = RemoveAclRecord(acl_id)
                    matching.append(build.DeleteAclsMatchingAcl(
                        error_code=ErrorCode.none, error_message=None, resource_type=acl.resource_type,
                        resource_name=acl.resource_name, pattern_type=acl.pattern_type, principal=acl.principal,
                        host=acl.host, operation=acl.operation, permission_type=acl.permission))
        results.append(build.DeleteAclsFilterResult(error_code=error, error_message=message,
                                                    matching_acls=tuple(matching)))
    if removed:
        await ctx.broker.propose(list(removed.values()))
    return build.DeleteAclsResponse(throttle_time=datetime.timedelta(0), filter_results=tuple(results))
