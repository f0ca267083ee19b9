"""ApiVersions (key 18): advertised ranges come from the handler registry."""

from __future__ import annotations

import datetime

from kio.schema.api_versions.v4.request import ApiVersionsRequest
from kio.schema.api_versions.v4.response import ApiVersionsResponse
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import response_builder
from lodestream.broker.request_context import RequestContext

API_KEY = 18
VERSIONS = range(0, 5)


def supported_api_keys(build) -> tuple:
    from lodestream.broker.handlers import REGISTRY

    return tuple(
        build.ApiVersion(api_key=h.api_key, min_version=h.versions.start, max_version=h.versions.stop - 1)
        for h in sorted(REGISTRY.values(), key=lambda h: h.api_key)
    )


def unsupported_version_response() -> object:
    """Answer to an ApiVersions request of a version we do not know: v0 body,
    UNSUPPORTED_VERSION, and our ranges, so the client can retry with one we know."""
    build = response_builder(API_KEY, 0)
    return build.ApiVersionsResponse(error_code=ErrorCode.unsupported_version, api_keys=supported_api_keys(build))


async def handle(ctx: RequestContext, request: ApiVersionsRequest) -> ApiVersionsResponse:
    """Nothing to authorize (Kafka answers ApiVersions before authentication); v3+ names the client software."""
    build = ctx.build
    name = getattr(request, "client_software_name", None)
    if name:  # KIP-511: kept on the session for metrics and logs
        ctx.session.client_software_name = name
        ctx.session.client_software_version = getattr(request, "client_software_version", None) or "unknown"
    return build.ApiVersionsResponse(
        error_code=ErrorCode.none,
        api_keys=supported_api_keys(build),
        throttle_time=datetime.timedelta(0),
        supported_features=(),
        finalized_features_epoch=-1,
        finalized_features=(),
        zk_migration_ready=False,
    )
