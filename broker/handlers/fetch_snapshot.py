"""FetchSnapshot (key 59): a follower whose fetch fell below the log start fetches the leader's snapshot (KIP-630).

Served on the controller listener only; the answer comes from the metadata quorum's state machine
(consensus/kraft.py) through broker/quorum_wire.py. Only the version this broker's own quorum sends is
advertised.
"""

from __future__ import annotations

import datetime

from kio.schema.fetch_snapshot.v1.request import FetchSnapshotRequest
from kio.schema.fetch_snapshot.v1.response import FetchSnapshotResponse
from lodestream.consensus import kraft

from lodestream.broker.quorum_wire import serve_quorum_request
from lodestream.broker.request_context import RequestContext

API_KEY = 59
VERSIONS = range(1, 2)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: FetchSnapshotRequest) -> FetchSnapshotResponse:
    build = ctx.build
    return await serve_quorum_request(ctx, request, kraft.FetchSnapshotResponse,
                                      lambda code: build.FetchSnapshotResponse(
                                          throttle_time=datetime.timedelta(0), error_code=code, topics=()))
