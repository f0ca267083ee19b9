"""Vote (key 52): a candidate's (or, with pre_vote, a prospective's: KIP-996) request for this voter's vote.

Served on the controller listener only; the answer comes from the metadata quorum's state machine
(consensus/kraft.py) through broker/quorum_wire.py. Only the version this broker's own quorum sends is
advertised.
"""

from __future__ import annotations

from kio.schema.vote.v2.request import VoteRequest
from kio.schema.vote.v2.response import VoteResponse
from lodestream.consensus import kraft

from lodestream.broker.quorum_wire import serve_quorum_request
from lodestream.broker.request_context import RequestContext

API_KEY = 52
VERSIONS = range(2, 3)
LISTENERS = "controller"


async def handle(ctx: RequestContext, request: VoteRequest) -> VoteResponse:
    build = ctx.build
    return await serve_quorum_request(ctx, request, kraft.VoteResponse,
                                      lambda code: build.VoteResponse(error_code=code, topics=()))
