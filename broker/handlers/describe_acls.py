"""DescribeAcls (key 29): the ACLs a filter matches (kafka-acls --list), grouped by resource pattern, from
this broker's metadata image. A filter Kafka would refuse gets INVALID_REQUEST; without
authorizer.class.name, SECURITY_DISABLED."""

from __future__ import annotations

import datetime

from kio.schema.describe_acls.v3.request import DescribeAclsRequest
from kio.schema.describe_acls.v3.response import DescribeAclsResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.broker.authorizer import DENIED, AclFilter, Operation, ResourceType, acl_of
from lodestream.broker.request_context import RequestContext

API_KEY = 29
VERSIONS = range(1, 4)


async def handle(ctx: RequestContext, request: DescribeAclsRequest) -> DescribeAclsResponse:
    build = ctx.build

    def refused(error: ErrorCode, message: str | None) -> DescribeAclsResponse:
        return build.DescribeAclsResponse(throttle_time=datetime.timedelta(0), error_code=error,
                                          error_message=message, resources=())

    if not ctx.authorize(Operation.DESCRIBE, ResourceType.CLUSTER):  # asked first, as Kafka does
        return refused(DENIED[ResourceType.CLUSTER], None)
    if not ctx.broker.config.get("authorizer.class.name"):
        return refused(ErrorCode.security_disabled, "No Authorizer is configured.")
    acl_filter = AclFilter(request.resource_type_filter, request.resource_name_filter, request.pattern_type_filter,
                           request.principal_filter, request.host_filter, request.operation, request.permission_type)
    problem = acl_filter.problem()
    if problem:
        return refused(ErrorCode.invalid_request, problem)
    by_pattern: dict[tuple[int, str, int], list] = {}
    for acl in sorted(map(acl_of, ctx.broker.image.acls.values())):
        if acl_filter.matches(acl):
            by_pattern.setdefault((acl.resource_type, acl.resource_name, acl.pattern_type), []).append(
                build.AclDescription(principal=acl.principal, host=acl.host, operation=acl.operation,
                                     permission_type=acl.permission))
    return build.DescribeAclsResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, error_message=None,
        resources=tuple(build.DescribeAclsResource(resource_type=resource_type, resource_name=name,
                                                   pattern_type=pattern_type, acls=tuple(acls))
                        for (resource_type, name, pattern_type), acls in by_pattern.items()))
