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
LISTENERS = "both"


# {on a controller listener: (api key, min version, max version) of every handler served there}: set by the
# registry (broker/handlers/__init__.py) once it is built; this module cannot import the registry, which
# imports every handler module.
ADVERTISED: dict[bool, tuple[tuple[int, int, int], ...]] = {False: (), True: ()}


# Feature levels (KIP-584), shown by `kafka-features describe`: only those whose meaning this broker
# implements. group.version 1 is the KIP-848 consumer group protocol. Kafka's other features are left out
# rather than claimed: transaction.version 2 would switch Java producers to KIP-890 part 2's transaction
# flow, and metadata.version / kraft.version describe a KRaft metadata log this broker does not have yet.
FEATURES = {"group.version": (0, 1, 1)}  # name -> (supported min, supported max, finalized level)
FINALIZED_FEATURES_EPOCH = 0  # the levels never change


def supported_api_keys(build, controller: bool) -> tuple:
    return tuple(build.ApiVersion(api_key=key, min_version=low, max_version=high)
                 for key, low, high in ADVERTISED[controller])


def unsupported_version_response(controller: bool) -> object:
    """Answer to an ApiVersions request of a version we do not know: v0 body,
    UNSUPPORTED_VERSION, and our ranges, so the client can retry with one we know."""
    build = response_builder(API_KEY, 0)
    return build.ApiVersionsResponse(error_code=ErrorCode.unsupported_version,
                                     api_keys=supported_api_keys(build, controller))


async def handle(ctx: RequestContext, request: ApiVersionsRequest) -> ApiVersionsResponse:
    """Nothing to authorize (Kafka answers ApiVersions before authentication); v3+ names the client software."""
    build = ctx.build
    name = getattr(request, "client_software_name", None)
    if name:  # KIP-511: kept on the session for metrics and logs
        ctx.session.client_software_name = name
        ctx.session.client_software_version = getattr(request, "client_software_version", None) or "unknown"
    features = {}
    if ctx.api_version >= 3:  # features are tagged fields from v3 on
        features = dict(
            supported_features=tuple(build.SupportedFeatureKey(name=name, min_version=low, max_version=high)
                                     for name, (low, high, _) in FEATURES.items()),
            finalized_features_epoch=FINALIZED_FEATURES_EPOCH,
            finalized_features=tuple(build.FinalizedFeatureKey(name=name, max_version_level=level,
                                                               min_version_level=level)
                                     for name, (_, _, level) in FEATURES.items()))
    return build.ApiVersionsResponse(
        error_code=ErrorCode.none,
        api_keys=supported_api_keys(build, ctx.session.controller),
        throttle_time=datetime.timedelta(0),
        zk_migration_ready=False,
        **features,
    )
