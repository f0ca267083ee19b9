"""BeginQuorumEpoch (key 53): a newly elected leader announces its epoch.

Served on the controller listener only; the answer comes from the metadata quorum's state machine
(consensus/kraft.py) through broker/quorum_wire.py. Only the version this broker's own quorum sends is
advertised.
"""

from __future__ import annotations

from kio.schema.begin_quorum_epoch.v1.request import BeginQuorumEpochRequest
from kio.schema.begin_quorum_epoch.v1.response import BeginQuorumEpochResponse
from lodestream.consensus import kraft

from lodestream.broker.quorum_wire import serve_quorum_request
from lodestream.broker.request_context import RequestContext

API_KEY = 53
VERSIONS = range(1, 2)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: BeginQuorumEpochRequest) -> BeginQuorumEpochResponse:
    build = ctx.build
    return await serve_quorum_request(ctx, request, kraft.BeginEpochResponse,
                                      lambda code: build.BeginQuorumEpochResponse(error_code=code, topics=()))
