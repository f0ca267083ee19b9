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


# (api key, min version, max version) of every handler: set by the registry (broker/handlers/__init__.py)
# once it is built; this module cannot import the registry, which imports every handler module.
ADVERTISED: tuple[tuple[int, int, int], ...] = ()


def supported_api_keys(build) -> tuple:
    return tuple(build.ApiVersion(api_key=key, min_version=low, max_version=high) for key, low, high in ADVERTISED)


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
