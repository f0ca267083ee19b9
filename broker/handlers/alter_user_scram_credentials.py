"""AlterUserScramCredentials (key 51): add, replace or delete users' SCRAM credentials (kafka-configs
--entity-type users --alter --add-config 'SCRAM-SHA-512=[password=...]').

The client sends a salted password (never the password); the controller keeps only the salt, the iteration
count, StoredKey and ServerKey (broker/scram.py) as ScramCredentialRecords. Answered per user, as Kafka does:
one bad change to a user (an unknown mechanism, iterations outside 4096-16384, an empty name, salt or
password, the same credential twice, deleting one that does not exist) refuses all of that user's changes
and none of the others'.
"""

from __future__ import annotations

import datetime

from kio.schema.alter_user_scram_credentials.v0.request import AlterUserScramCredentialsRequest
from kio.schema.alter_user_scram_credentials.v0.response import AlterUserScramCredentialsResponse
from lodestream.protocol.errors import ErrorCode

from lodestream.consensus.records import RemoveScramCredentialRecord
from lodestream.broker.authorizer import DENIED, Operation, ResourceType
from lodestream.broker.request_context import RequestContext
from lodestream.broker.scram import (MAX_ITERATIONS, MECHANISM_BY_CODE, MIN_ITERATIONS, credential_from_salted_password,
                                     credential_record)

API_KEY = 51
VERSIONS = range(0, 1)
LISTENERS = "both"
FORWARDED_TO_CONTROLLER = True


async def handle(ctx: RequestContext, request: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse:
    build = ctx.build
    changes = [(d.name, d.mechanism, None) for d in request.deletions] + \
              [(u.name, u.mechanism, u) for u in request.upsertions]
    users = list(dict.fromkeys(name for name, _, _ in changes))
    if not ctx.authorize(Operation.ALTER, ResourceType.CLUSTER):
        return build.AlterUserScramCredentialsResponse(
            throttle_time=datetime.timedelta(0),
            results=tuple(build.AlterUserScramCredentialsResult(
                user=user, error_code=DENIED[ResourceType.CLUSTER], error_message=None) for user in users))
    problems: dict[str, tuple[ErrorCode, str]] = {}
    records_by_user: dict[str, list] = {user: [] for user in users}
    seen: set[tuple[str, int]] = set()
    credentials = ctx.broker.image.scram_credentials
    for name, code, upsertion in changes:
        if name in problems:
            continue
        mechanism = MECHANISM_BY_CODE.get(code)
        problem = None
        if not name:
            problem = ErrorCode.unacceptable_credential, "Username must not be empty"
        elif mechanism is None:
            problem = ErrorCode.unsupported_sasl_mechanism, f"Unknown SCRAM mechanism {code}"
        elif (name, code) in seen:
            problem = ErrorCode.duplicate_resource, "A user credential cannot be altered twice in the same request"
        elif upsertion is None:
            if (name, mechanism) not in credentials:
                problem = ErrorCode.resource_not_found, "Attempt to delete a user credential that does not exist"
            else:
                records_by_user[name].append(RemoveScramCredentialRecord(name, mechanism))
        elif not MIN_ITERATIONS <= upsertion.iterations <= MAX_ITERATIONS:
            problem = ErrorCode.unacceptable_credential, (
                f"Too {'few' if upsertion.iterations < MIN_ITERATIONS else 'many'} iterations: "
                f"{upsertion.iterations} ({MIN_ITERATIONS}-{MAX_ITERATIONS} allowed)")
        elif not upsertion.salt or not upsertion.salted_password:
            problem = ErrorCode.unacceptable_credential, "Salt and salted password must not be empty"
        else:
            credential = credential_from_salted_password(mechanism, upsertion.salt, upsertion.salted_password,
                                                         upsertion.iterations)
            records_by_user[name].append(credential_record(name, mechanism, credential))
        seen.add((name, code))
        if problem is not None:
            problems[name] = problem
    records = [record for user in users if user not in problems for record in records_by_user[user]]
    if records:
        await ctx.broker.propose(records)
    return build.AlterUserScramCredentialsResponse(
        throttle_time=datetime.timedelta(0),
        results=tuple(build.AlterUserScramCredentialsResult(
            user=user, error_code=problems.get(user, (ErrorCode.none, None))[0],
            error_message=problems.get(user, (ErrorCode.none, None))[1]) for user in users))
