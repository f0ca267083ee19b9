"""DescribeUserScramCredentials (key 50): which SCRAM mechanisms and iteration counts users have (never
their keys or salts).

A named user without credentials gets RESOURCE_NOT_FOUND, a user named twice DUPLICATE_RESOURCE, and "all
users" (a null list) every user with one, as Kafka answers. kafka-configs asks for it whenever it describes a
user's quotas, and fails outright if the API is missing.
"""

from __future__ import annotations

import datetime
from collections import Counter

from kio.schema.describe_user_scram_credentials.v0.request import DescribeUserScramCredentialsRequest
from kio.schema.describe_user_scram_credentials.v0.response import DescribeUserScramCredentialsResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext
from lodestream.broker.scram import MECHANISMS

API_KEY = 50
VERSIONS = range(0, 1)


async def handle(ctx: RequestContext, request: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse:
    build = ctx.build
    if not ctx.authorize(Operation.DESCRIBE, ResourceType.CLUSTER):
        return build.DescribeUserScramCredentialsResponse(
            throttle_time=datetime.timedelta(0), error_code=DENIED[ResourceType.CLUSTER],
            error_message=None, results=())
    by_user: dict[str, list] = {}
    for (user, mechanism), record in sorted(ctx.broker.image.scram_credentials.items()):
        by_user.setdefault(user, []).append(build.CredentialInfo(mechanism=MECHANISMS[mechanism][0],
                                                                 iterations=record.iterations))
    names = [user.name for user in request.users] if request.users is not None else list(by_user)
    counts = Counter(names)
    results = []
    for name in dict.fromkeys(names):  # once each, in request order
        error, message = ErrorCode.none, None
        if counts[name] > 1:
            error, message = ErrorCode.duplicate_resource, (
                f"Cannot describe SCRAM credentials for the same user twice in a single request: {name}")
        elif name not in by_user:
            error, message = ErrorCode.resource_not_found, f"Attempt to describe a user credential that does not exist: {name}"
        results.append(build.DescribeUserScramCredentialsResult(
            user=name, error_code=error, error_message=message,
            credential_infos=tuple(by_user.get(name, ())) if error == ErrorCode.none else ()))
    return build.DescribeUserScramCredentialsResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, error_message=None, results=tuple(results))
