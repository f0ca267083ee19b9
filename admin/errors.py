"""Errors as REST Proxy v3 gives them: an HTTP status and a body {error_code, message}.

Kafka errors from broker services map the way REST Proxy's KafkaExceptionMapper
maps them: unknown topic or partition -> 404 / 40403; client mistakes (topic
exists, invalid partitions / replication factor / config / request, ...) ->
400 / 40002. Request validation errors -> 400 with a message naming the field.
Only faults of the broker itself are 5xx.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from lodestream.protocol.errors import ErrorCode, KafkaError

log = logging.getLogger(__name__)

KAFKA_BAD_REQUEST = 40002
KAFKA_AUTHENTICATION = 40101
KAFKA_AUTHORIZATION = 40301  # REST Proxy's code for an operation the principal's ACLs refuse
TOPIC_NOT_FOUND = 40401
PARTITION_NOT_FOUND = 40402
UNKNOWN_TOPIC_OR_PARTITION = 40403
KAFKA_ERROR = 50002
KAFKA_RETRIABLE = 50003

_BAD_REQUEST = {
    ErrorCode.topic_already_exists, ErrorCode.invalid_partitions, ErrorCode.invalid_replication_factor,
    ErrorCode.invalid_replica_assignment, ErrorCode.invalid_config, ErrorCode.invalid_request,
    ErrorCode.invalid_topic_exception, ErrorCode.policy_violation, ErrorCode.topic_deletion_disabled,
    ErrorCode.message_too_large, ErrorCode.record_list_too_large, ErrorCode.invalid_timestamp,
    ErrorCode.corrupt_message, ErrorCode.invalid_required_acks, ErrorCode.unsupported_version,
    ErrorCode.invalid_record,
}


class ApiError(Exception):
    def __init__(self, status: int, error_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers


async def commit_admin_records(broker, records: list) -> None:
    """Namespace or offset snapshot records, committed through the active controller (UpdateAdminRecords);
    what it refuses is a 400 with its reason."""
    try:
        await broker.controller_client.update_admin_records(records)
    except KafkaError as exc:
        raise ApiError(400, KAFKA_BAD_REQUEST, exc.message or exc.code.name) from None


def kafka_error_status(exc: KafkaError) -> tuple[int, int]:
    """(HTTP status, error_code) for a Kafka error, as REST Proxy's KafkaExceptionMapper."""
    if exc.code == ErrorCode.unknown_topic_or_partition:
        return 404, UNKNOWN_TOPIC_OR_PARTITION
    if exc.code == ErrorCode.group_id_not_found:
        return 404, 404
    if exc.code in _BAD_REQUEST:
        return 400, KAFKA_BAD_REQUEST
    if exc.code in (ErrorCode.coordinator_load_in_progress, ErrorCode.coordinator_not_available,
                    ErrorCode.not_coordinator, ErrorCode.request_timed_out, ErrorCode.not_enough_replicas):
        return 503, KAFKA_RETRIABLE
    return 500, KAFKA_ERROR


def kafka_error_message(exc: KafkaError) -> str:
    return exc.message or exc.code.name


def error_body(error_code: int, message: str | None) -> dict:
    return {"error_code": error_code, "message": message}


def validation_message(errors, prefix: str = "") -> str:
    """`partitions_count: Input should be greater than or equal to 1` (field first, then why)."""
    parts = []
    for error in errors:
        location = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
        if error.get("type") == "json_invalid":
            parts.append(f"request body is not valid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}")
            continue
        message = str(error.get("msg", "invalid"))
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if location and location[0] in ("path", "query", "header"):
            kind = location.pop(0)
            field = ".".join(location)
            parts.append(f"{field} ({kind} parameter): {message}")
        else:
            field = prefix + ".".join(location)
            parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts) or "invalid request"


def record_validation_message(exc: ValidationError) -> str:
    return validation_message(exc.errors())


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods |= set(route_methods)
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.error_code, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(KafkaError)
    async def _kafka_error(request: Request, exc: KafkaError):
        status, code = kafka_error_status(exc)
        if status >= 500:
            log.error("REST %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body(code, kafka_error_message(exc)), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse(error_body(400, validation_message(exc.errors())), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("REST %s %s failed", request.method, request.url.path)
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"), status_code=500)
