"""POST /v3/clusters/{cluster_id}/topics/{topic_name}/records: produce records over HTTP.

As REST Proxy v3: the body is one JSON record, or a stream of concatenated
JSON records. A body with a Content-Length holding one record -> one JSON
result with the HTTP status of its outcome (200, or 4xx/5xx with
{error_code, message}). Streaming mode -- a chunked body (no Content-Length,
REST Proxy's trigger), or several records -> HTTP 200 and one result per
record, in order, each on its own line as soon as its write is durable (a
client may wait for each result before sending the next record); a failed
record gets {error_code, message} in its line and the stream goes on (a body
that is not valid JSON ends it).

Each record becomes one uncompressed batch (protocol.record_batch.build_batch)
appended through broker.append.enqueue_batches: the same validation
(max.message.bytes, timestamps, LogAppendTime) and group commit as a Kafka
Produce request. Records of one stream are queued without waiting for the
previous write (up to WINDOW in flight), so they share group commits.

Partitioning without partition_id: murmur2 of the key, as Kafka's Java
producer and librdkafka's consistent_random partitioner do, so a keyed record
lands where a Kafka client would put it; records without a key go round-robin.
"""

from __future__ import annotations

import codecs
import datetime
import itertools
import json
import time
from dataclasses import dataclass
from typing import AsyncIterator

import trio
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from lodestream.broker.append import enqueue_batches
from lodestream.broker.replica_manager import AppendRequest
from lodestream.protocol.errors import ErrorCode, KafkaError
from lodestream.protocol.record_batch import build_batch

from lodestream.admin.errors import (
    KAFKA_BAD_REQUEST,
    KAFKA_ERROR,
    PARTITION_NOT_FOUND,
    UNKNOWN_TOPIC_OR_PARTITION,
    ApiError,
    error_body,
    kafka_error_message,
    kafka_error_status,
    record_validation_message,
)
from lodestream.admin.models import ProduceRequest, ProduceRequestData, decode_base64

_FIELDS = {ErrorCode.invalid_timestamp: "timestamp", ErrorCode.message_too_large: "value"}
WINDOW = 256  # records of one stream queued ahead of the oldest unanswered one
_WHITESPACE = " \t\r\n"


def murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2 (seed 0x9747b28c), as a signed 32-bit int."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class BadBody(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class JsonRecords:
    """Concatenated JSON values from a request body stream, one at a time."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = chunks.__aiter__()
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self._buffer = ""
        self._position = 0
        self._eof = False
        self.limit = limit
        self.count = 0

    async def _more(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            chunk = b""
            self._eof = True
        try:
            text = self._decoder.decode(chunk, final=self._eof)
        except UnicodeDecodeError as exc:
            raise BadBody(400, f"request body is not UTF-8: {exc.reason} at byte {exc.start}") from None
        if self._position:
            self._buffer = self._buffer[self._position:]
            self._position = 0
        self._buffer += text
        return True

    async def next(self):
        """The next JSON value, or raises StopAsyncIteration at the end of the body."""
        while True:
            buffer = self._buffer
            position = self._position
            while position < len(buffer) and buffer[position] in _WHITESPACE:
                position += 1
            self._position = position
            if position < len(buffer):
                try:
                    value, end = self._json.raw_decode(buffer, position)
                except json.JSONDecodeError as exc:
                    if self._eof:
                        raise BadBody(400, f"record {self.count + 1}: body is not valid JSON: {exc.msg} "
                                           f"(line {exc.lineno} column {exc.colno})") from None
                else:
                    self._position = end
                    self.count += 1
                    return value
                if len(buffer) - position > self.limit:
                    raise BadBody(413, f"record {self.count + 1} is larger than {self.limit} bytes of JSON")
            elif self._eof:
                raise StopAsyncIteration
            await self._more()


@dataclass(slots=True)
class Pending:
    """A record queued for append (append set), or its immediate outcome (status, body)."""

    append: AppendRequest | None = None
    status: int = 200
    body: dict | None = None
    partition_id: int = -1
    timestamp_ms: int = -1
    key: dict | None = None
    value: dict | None = None


def _encode(data: ProduceRequestData | None) -> tuple[bytes | None, dict | None]:
    if data is None:
        return None, None
    kind = data.type or "JSON"
    if data.data is None:
        return None, {"type": kind, "size": 0}
    if kind == "BINARY":
        encoded = decode_base64(data.data)
    elif kind == "STRING":
        encoded = data.data.encode()
    else:
        encoded = json.dumps(data.data, separators=(",", ":"), ensure_ascii=False).encode()
    return encoded, {"type": kind, "size": len(encoded)}


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class RecordProducer:
    """Turns parsed JSON records into queued appends and appends into REST Proxy results."""

    def __init__(self, broker, cluster_id: str, topic_name: str) -> None:
        self.broker = broker
        self.cluster_id = cluster_id
        self.topic_name = topic_name
        self._round_robin = itertools.count()

    def _fail(self, status: int, error_code: int, message: str) -> Pending:
        return Pending(status=status, body=error_body(error_code, message))

    def submit(self, obj) -> Pending:
        """Validate one record and queue its append (in call order). Never raises for bad input."""
        if not isinstance(obj, dict):
            return self._fail(400, 400, f"record: expected a JSON object, got {type(obj).__name__}")
        try:
            record = ProduceRequest.model_validate(obj)
        except ValidationError as exc:
            return self._fail(400, 400, record_validation_message(exc))
        topic = self.broker.image.topic(self.topic_name)
        if topic is None:
            return self._fail(404, UNKNOWN_TOPIC_OR_PARTITION,
                              f"This server does not host this topic-partition: topic '{self.topic_name}' does not exist.")
        key, key_info = _encode(record.key)
        value, value_info = _encode(record.value)
        count = len(topic.partitions)
        if record.partition_id is not None:
            partition_id = record.partition_id
            if partition_id not in topic.partitions:
                return self._fail(404, PARTITION_NOT_FOUND,
                                  f"partition_id: topic '{self.topic_name}' has no partition {partition_id} "
                                  f"(it has {count})")
        elif key is not None:
            partition_id = partition_for_key(key, count)
        else:
            partition_id = next(self._round_robin) % count
        headers = [(h.name, None if h.value is None else decode_base64(h.value)) for h in record.headers]
        now_ms = int(time.time() * 1000)
        if record.timestamp is not None:
            stamp = record.timestamp
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=datetime.UTC)
            timestamp_ms = int(stamp.timestamp() * 1000)
            if timestamp_ms < 0:
                return self._fail(400, KAFKA_BAD_REQUEST, "timestamp: must not be before 1970-01-01T00:00:00Z")
        else:
            timestamp_ms = now_ms
        batch = build_batch([(key, value, headers)], timestamp_ms)
        try:
            append = enqueue_batches(self.broker, topic, partition_id, batch, now_ms)
        except KafkaError as exc:
            status, code = kafka_error_status(exc)
            field = _FIELDS.get(exc.code)
            message = kafka_error_message(exc)
            return self._fail(status, code, f"{field}: {message}" if field else message)
        return Pending(append=append, partition_id=partition_id, timestamp_ms=timestamp_ms, key=key_info,
                       value=value_info)

    async def result(self, pending: Pending) -> tuple[int, dict]:
        append = pending.append
        if append is None:
            return pending.status, pending.body  # type: ignore[return-value]
        await append.done.wait()
        if append.error is not None:
            return 500, error_body(KAFKA_ERROR, f"write failed: {append.error}")
        timestamp = append.log_append_time_ms if append.log_append_time_ms is not None else pending.timestamp_ms
        return 200, {
            "error_code": 200, "cluster_id": self.cluster_id, "topic_name": self.topic_name,
            "partition_id": pending.partition_id, "offset": append.base_offset, "timestamp": _iso(timestamp),
            "key": pending.key, "value": pending.value,
        }


def _dumps(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class StreamedResults(Response):
    """Streaming mode: read and queue records in one task, answer them in order in another."""

    media_type = "application/json"

    def __init__(self, producer: RecordProducer, records: JsonRecords, first: list[Pending]) -> None:
        super().__init__(status_code=200, media_type=self.media_type)
        self.raw_headers = [(b"content-type", b"application/json")]  # length unknown: chunked
        self.producer = producer
        self.records = records
        self.first = first

    async def _read(self, channel: trio.MemorySendChannel) -> None:
        async with channel:
            for pending in self.first:
                await channel.send(pending)
            while True:
                try:
                    obj = await self.records.next()
                except StopAsyncIteration:
                    return
                except BadBody as exc:
                    await channel.send(Pending(status=exc.status, body=error_body(exc.status, exc.message)))
                    return
                except ClientDisconnect:
                    return
                await channel.send(self.producer.submit(obj))

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        send_channel, receive_channel = trio.open_memory_channel[Pending](WINDOW)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, send_channel)
            async with receive_channel:
                async for pending in receive_channel:
                    chunk = bytearray(_dumps((await self.producer.result(pending))[1]) + b"\n")
                    while True:  # coalesce what is already answered into one write
                        try:
                            following = receive_channel.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        chunk += _dumps((await self.producer.result(following))[1]) + b"\n"
                    await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def produce(request: Request, broker, cluster_id: str, topic_name: str) -> Response:
    if broker.image.topic(topic_name) is None:
        raise ApiError(404, UNKNOWN_TOPIC_OR_PARTITION,
                       f"This server does not host this topic-partition: topic '{topic_name}' does not exist.")
    limit = 4 * int(broker.broker_config_value("message.max.bytes")) + 65536
    records = JsonRecords(request.stream(), limit)
    producer = RecordProducer(broker, cluster_id, topic_name)
    if "content-length" not in request.headers:
        # Chunked (REST Proxy's streaming trigger): answer each record as soon as it is written,
        # without waiting to see whether another one follows.
        return StreamedResults(producer, records, [])
    try:
        first = await records.next()
    except StopAsyncIteration:
        raise ApiError(400, 400, "request body is empty: expected a JSON record") from None
    except BadBody as exc:
        raise ApiError(exc.status, exc.status, exc.message) from None
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is listening
    pending = producer.submit(first)
    try:
        second = await records.next()
    except StopAsyncIteration:
        status, body = await producer.result(pending)
        return Response(_dumps(body), status_code=status, media_type="application/json")
    except BadBody as exc:
        failed = Pending(status=exc.status, body=error_body(exc.status, exc.message))
        return StreamedResults(producer, _Exhausted(), [pending, failed])
    except ClientDisconnect:
        return Response(status_code=400)
    return StreamedResults(producer, records, [pending, producer.submit(second)])


class _Exhausted:
    async def next(self):
        raise StopAsyncIteration
