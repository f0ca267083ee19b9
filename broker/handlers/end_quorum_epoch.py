"""EndQuorumEpoch (key 54): a leader resigns gracefully and names its preferred successors.

Served on the controller listener only; the answer comes from the metadata quorum's state machine
(consensus/kraft.py) through broker/quorum_wire.py. Only the version this broker's own quorum sends is
advertised.
"""

from __future__ import annotations

from kio.schema.end_quorum_epoch.v1.request import EndQuorumEpochRequest
from kio.schema.end_quorum_epoch.v1.response import EndQuorumEpochResponse
from lodestream.consensus import kraft

from lodestream.broker.quorum_wire import serve_quorum_request
from lodestream.broker.request_context import RequestContext

API_KEY = 54
VERSIONS = range(1, 2)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: EndQuorumEpochRequest) -> EndQuorumEpochResponse:
    build = ctx.build
    return await serve_quorum_request(ctx, request, kraft.EndEpochResponse,
                                      lambda code: build.EndQuorumEpochResponse(error_code=code, topics=()))
