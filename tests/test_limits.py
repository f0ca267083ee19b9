"""Back-pressure and resource limits (broker/limits.py, docs/limits.md): the request memory pool,
max.connections, max.connections.per.ip (+ overrides), connections.max.idle.ms, a client that
never reads its responses, rate-limited logging and lodestream_limit_hits_total.

Every wait is bounded by a trio deadline (fail_after / move_on_after); no sleeps."""

from __future__ import annotations

import datetime
import logging
import socket

import pytest
import trio
import trio.testing

from lodestream.broker.config import BrokerConfig, ConfigError
from lodestream.broker.limits import PRODUCE_CHARGE_FACTOR, LimitReporter, MemoryPool, parse_ip_overrides
from lodestream.broker.server import MAX_IN_FLIGHT_FETCHES_PER_CONNECTION
from inprocess_broker import start_broker
from lodestream.protocol.codec import decode_response, encode_request, response_type
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder
from record_batches import value_batch
from test_metrics import create_topic, produce, samples, value

API_VERSIONS, FETCH, METADATA = 18, 1, 3
DEADLINE_S = 10


# -- MemoryPool ---------------------------------------------------------------------------------------

async def test_pool_grants_within_capacity_and_blocks_beyond():
    pool = MemoryPool(100)
    await pool.acquire(60)
    await pool.acquire(40)
    assert pool.used == 100 and pool.available == 0
    got = trio.Event()

    async def want(n):
        await pool.acquire(n)
        got.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(want, 10)
        await trio.testing.wait_all_tasks_blocked()
        assert not got.is_set() and pool.waiting == 1
        pool.release(5)  # 95 + 10 > 100: still waiting
        await trio.testing.wait_all_tasks_blocked()
        assert not got.is_set()
        pool.release(5)
        with trio.fail_after(DEADLINE_S):
            await got.wait()
    assert pool.used == 100 and pool.waiting == 0


async def test_pool_serves_waiters_in_order_and_large_ones_are_not_starved():
    pool = MemoryPool(100)
    await pool.acquire(100)
    order = []

    async def want(name, n):
        await pool.acquire(n)
        order.append(name)

    async with trio.open_nursery() as nursery:
        for name, n in (("big", 80), ("small1", 10), ("small2", 10)):
            nursery.start_soon(want, name, n)
            await trio.testing.wait_all_tasks_blocked()
        pool.release(30)  # the small ones would fit, but "big" is first in line
        await trio.testing.wait_all_tasks_blocked()
        assert order == [] and pool.waiting == 3
        assert not pool.try_acquire(1)  # no overtaking the queue either
        pool.release(50)  # 20 held + 80: "big" alone fits
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["big"] and pool.waiting == 2
        pool.release(20)
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(order[1:]) == ["small1", "small2"] and pool.used == 100


async def test_pool_admits_an_oversized_request_only_when_empty():
    pool = MemoryPool(100)
    await pool.acquire(1)
    admitted = trio.Event()

    async def huge():
        await pool.acquire(500)
        admitted.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(huge)
        await trio.testing.wait_all_tasks_blocked()
        assert not admitted.is_set()
        pool.release(1)
        with trio.fail_after(DEADLINE_S):
            await admitted.wait()
    assert pool.used == 500
    pool.release(500)
    assert pool.used == 0


async def test_cancelled_waiter_leaves_the_queue_and_lets_the_next_in():
    pool = MemoryPool(100)
    await pool.acquire(90)
    order = []

    async def want(name, n):
        await pool.acquire(n)
        order.append(name)

    big_scope = trio.CancelScope()

    async def want_big():
        with big_scope:
            await want("big", 50)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(want_big)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(want, "small", 10)
        await trio.testing.wait_all_tasks_blocked()
        assert order == []  # behind "big"
        big_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
    assert order == ["small"] and pool.used == 100 and pool.waiting == 0


async def test_unbounded_pool_only_counts():
    pool = MemoryPool(None)
    await pool.acquire(10**12)
    assert pool.used == 10**12 and pool.available is None
    pool.release(10**12)


# -- reporting and configuration ------------------------------------------------------------------------

def test_limit_reporter_logs_once_per_interval_and_counts_every_hit(caplog):
    now = [0.0]
    reporter = LimitReporter(interval_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="broker.limits"):
        assert reporter.hit("max.connections", "closing %s", "a")
        assert not reporter.hit("max.connections", "closing %s", "b")
        assert not reporter.hit("max.connections", "closing %s", "c")
        assert reporter.hit("connections.max.idle.ms", "idle %s", "x")  # another limit: its own interval
        now[0] = 61
        assert reporter.hit("max.connections", "closing %s", "d")
    assert reporter.hits == {"max.connections": 4, "connections.max.idle.ms": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["limit max.connections reached: closing a",
                        "limit connections.max.idle.ms reached: idle x",
                        "limit max.connections reached: closing d (2 more since the last report)"]


def test_limit_configs_parse_and_reject_bad_values():
    config = BrokerConfig({"queued.max.request.bytes": "67108864", "max.connections.per.ip.overrides":
                           "127.0.0.1:5, [::1]:7,10.0.0.1:0"})
    assert config.get("queued.max.request.bytes") == 67108864
    assert config.get("max.connections.per.ip.overrides") == {"127.0.0.1": 5, "::1": 7, "10.0.0.1": 0}
    assert BrokerConfig({}).get("queued.max.request.bytes") == 256 << 20
    assert BrokerConfig({"queued.max.request.bytes": "-1"}).get("queued.max.request.bytes") == -1
    assert BrokerConfig({}).get("connections.max.idle.ms") == 600000
    for key, bad in (("queued.max.request.bytes", "0"), ("max.connections.per.ip.overrides", "127.0.0.1"),
                     ("max.connections.per.ip.overrides", "h:x"), ("max.connections", "-1"),
                     ("connections.max.idle.ms", "0")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            BrokerConfig({key: bad})
    assert parse_ip_overrides("") == {}


# -- over the wire ----------------------------------------------------------------------------------------

async def _api_versions(stream: trio.SocketStream, correlation: int = 1) -> int:
    b = request_builder(API_VERSIONS, 3)
    await stream.send_all(encode_request(correlation, b.ApiVersionsRequest(
        client_software_name="t", client_software_version="1"), "test"))
    return correlation


async def _read_response(stream, buffer: bytearray, api_key: int, version: int):
    while True:
        if len(buffer) >= 4:
            length = int.from_bytes(buffer[:4], "big")
            if len(buffer) >= 4 + length:
                frame = bytes(buffer[4:4 + length])
                del buffer[:4 + length]
                return decode_response(frame, response_type(api_key, version))
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError
        buffer += chunk


async def _answered(stream) -> bool:
    buffer = bytearray()
    correlation = await _api_versions(stream)
    got, response = await _read_response(stream, buffer, API_VERSIONS, 3)
    return got == correlation and response.error_code == ErrorCode.none


async def _closed_by_broker(stream) -> None:
    with trio.fail_after(DEADLINE_S):
        while True:
            try:
                if not await stream.receive_some(65536):
                    return
            except trio.BrokenResourceError:
                return


async def _broker(nursery, tmp_path, **overrides):
    return await start_broker(nursery, tmp_path / "data", **overrides)


async def test_max_connections_closes_the_extra_connection(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await _broker(nursery, tmp_path, **{"max.connections": "2"})
        first, second = [await trio.open_tcp_stream("127.0.0.1", running.port) for _ in range(2)]
        with trio.fail_after(DEADLINE_S):
            assert await _answered(first) and await _answered(second)
            third = await trio.open_tcp_stream("127.0.0.1", running.port)
            await _closed_by_broker(third)
            assert await _answered(first)  # the others are unaffected
        assert value(samples(running.broker), "lodestream_limit_hits_total", limit="max.connections") == 1
        await first.aclose()
        with trio.fail_after(DEADLINE_S):
            while len(running.broker.connections) > 1:  # the slot frees once the broker sees the close
                await trio.testing.wait_all_tasks_blocked()
            fourth = await trio.open_tcp_stream("127.0.0.1", running.port)
            assert await _answered(fourth)
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_max_connections_per_ip_with_override(tmp_path):
    overrides = {"max.connections.per.ip": "1", "max.connections.per.ip.overrides": "127.0.0.1:3"}
    async with trio.open_nursery() as nursery:
        running = await _broker(nursery, tmp_path, **overrides)
        streams = [await trio.open_tcp_stream("127.0.0.1", running.port) for _ in range(3)]
        with trio.fail_after(DEADLINE_S):
            for stream in streams:
                assert await _answered(stream)
            extra = await trio.open_tcp_stream("127.0.0.1", running.port)
            await _closed_by_broker(extra)
        assert running.broker.connections_per_ip == {"127.0.0.1": 3}
        assert value(samples(running.broker), "lodestream_limit_hits_total", limit="max.connections.per.ip") == 1
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_max_connections_per_ip_without_override(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await _broker(nursery, tmp_path, **{"max.connections.per.ip": "1",
                                                      "max.connections.per.ip.overrides": "10.9.9.9:100"})
        first = await trio.open_tcp_stream("127.0.0.1", running.port)
        with trio.fail_after(DEADLINE_S):
            assert await _answered(first)
            second = await trio.open_tcp_stream("127.0.0.1", running.port)
            await _closed_by_broker(second)
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_idle_connection_is_closed_after_connections_max_idle_ms(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await _broker(nursery, tmp_path, **{"connections.max.idle.ms": "300"})
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        with trio.fail_after(DEADLINE_S):
            assert await _answered(stream)
        answered_at = trio.current_time()
        await _closed_by_broker(stream)
        assert trio.current_time() - answered_at >= 0.3
        assert value(samples(running.broker), "lodestream_limit_hits_total", limit="connections.max.idle.ms") == 1
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_connection_with_a_request_in_flight_is_not_idle(tmp_path):
    """A long-poll Fetch longer than connections.max.idle.ms keeps the connection open."""
    async with trio.open_nursery() as nursery:
        running = await _broker(nursery, tmp_path, **{"connections.max.idle.ms": "200"})
        client = await running.client()
        await create_topic(client, "quiet", 1)
        b = request_builder(FETCH, 12)
        started = trio.current_time()
        with trio.fail_after(DEADLINE_S):
            response = await client.request(b.FetchRequest(
                replica_id=-1, max_wait=datetime.timedelta(milliseconds=600), min_bytes=1, max_bytes=1 << 20,
                isolation_level=0, session_id=0, session_epoch=-1,
                topics=(b.FetchTopic(topic="quiet", partitions=(
                    b.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20),)),),
                forgotten_topics_data=(), rack_id=""))
        assert response.error_code == ErrorCode.none
        assert trio.current_time() - started >= 0.5
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_exhausted_pool_stops_reading_and_keeps_order(tmp_path):
    """With the pool used up, requests wait unread; once memory frees they are answered in order."""
    async with trio.open_nursery() as nursery:
        running = await _broker(nursery, tmp_path, **{"queued.max.request.bytes": "65536"})
        pool = running.broker.request_pool
        await pool.acquire(65536)  # someone else holds the whole pool
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        for correlation in (1, 2, 3):
            await _api_versions(stream, correlation)
        buffer = bytearray()
        with trio.move_on_after(0.3) as scope:
            await _read_response(stream, buffer, API_VERSIONS, 3)
        assert scope.cancelled_caught, "answered although the pool was exhausted"
        assert pool.waiting == 1
        m = samples(running.broker)
        assert value(m, "lodestream_limit_hits_total", limit="queued.max.request.bytes") == 1
        assert value(m, "lodestream_request_pool_used_bytes") == 65536
        assert value(m, "lodestream_request_pool_capacity_bytes") == 65536
        assert value(m, "lodestream_request_pool_waiting_connections") == 1
        pool.release(65536)
        with trio.fail_after(DEADLINE_S):
            got = [(await _read_response(stream, buffer, API_VERSIONS, 3))[0] for _ in range(3)]
        assert got == [1, 2, 3]
        await trio.testing.wait_all_tasks_blocked()
        assert pool.used == 0  # every reservation released
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_produce_holds_three_times_its_size_in_the_pool_until_written(tmp_path):
    """A Produce is charged PRODUCE_CHARGE_FACTOR x its frame (its records live as kio's copy, the stamped
    batch and the WriteBatch) until its group commit is written and the answer built; then all is freed."""
    async with trio.open_nursery() as nursery:
        running = await _broker(nursery, tmp_path)
        pool = running.broker.request_pool
        client = await running.client()
        await create_topic(client, "held", 1)
        limiter = running.broker.io_limiter  # hold every log-writer slot: the group commit cannot run
        borrowers = [object() for _ in range(int(limiter.total_tokens))]
        for borrower in borrowers:
            await limiter.acquire_on_behalf_of(borrower)
        b = request_builder(0, 9)
        frame = encode_request(7, b.ProduceRequest(
            transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=30),
            topic_data=(b.TopicProduceData(name="held", partition_data=(
                b.PartitionProduceData(index=0, records=value_batch([b"x" * 200_000])),)),)), "held")
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        await stream.send_all(frame)
        await trio.testing.wait_all_tasks_blocked(cushion=0.3)
        assert pool.used == PRODUCE_CHARGE_FACTOR * (len(frame) - 4)
        for borrower in borrowers:
            limiter.release_on_behalf_of(borrower)
        with trio.fail_after(DEADLINE_S):
            _, response = await _read_response(stream, bytearray(), 0, 9)
        assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
        await trio.testing.wait_all_tasks_blocked()
        assert pool.used == 0
        await stream.aclose()
        await client.aclose()
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_client_that_never_reads_cannot_make_the_broker_buffer(tmp_path):
    """Many fetches of 1 MB responses, never read: the broker stops reading that socket with at most
    MAX_IN_FLIGHT_FETCHES_PER_CONNECTION fetch responses pending, and other clients are still served."""
    value_size, batches = 256 << 10, 8
    async with trio.open_nursery() as nursery:
        running = await _broker(nursery, tmp_path)
        client = await running.client()
        await create_topic(client, "big", 1)
        for _ in range(batches):
            batch = value_batch([b"x" * value_size])
            assert (await produce(client, "big", 0, batch)).error_code == ErrorCode.none

        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window: the broker's sends block early
        await sock.connect(("127.0.0.1", running.port))
        slow = trio.SocketStream(sock)
        b = request_builder(FETCH, 12)
        fetch = b.FetchRequest(
            replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=1, max_bytes=4 << 20, isolation_level=0,
            session_id=0, session_epoch=-1,
            topics=(b.FetchTopic(topic="big", partitions=(
                b.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=4 << 20),)),),
            forgotten_topics_data=(), rack_id="")
        requests = 300
        payload = b"".join(encode_request(i, fetch, "slow") for i in range(requests))

        async def send_everything():
            try:
                await slow.send_all(payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        nursery.start_soon(send_everything)
        await trio.testing.wait_all_tasks_blocked(cushion=0.3)
        connection = next(c for c in running.broker.connections if c.stream.socket.getpeername()[1]
                          == sock.getsockname()[1])
        fetches_done = value(samples(running.broker), "lodestream_requests_total", request="Fetch", version="12") or 0
        assert fetches_done < requests / 10, "the broker kept answering a client that does not read"
        assert connection.in_flight <= MAX_IN_FLIGHT_FETCHES_PER_CONNECTION
        assert connection.fetch_slots.value == 0
        hits = value(samples(running.broker), "lodestream_limit_hits_total", limit="in.flight.per.connection")
        assert hits and hits >= 1

        # Others are served meanwhile: metadata, produce and fetch on new connections.
        with trio.fail_after(DEADLINE_S):
            other = await running.client()
            assert (await produce(other, "big", 0, value_batch([b"y"]))).error_code == ErrorCode.none
            assert await _answered(await trio.open_tcp_stream("127.0.0.1", running.port))
        # The slow client pins at most the one request it has read and cannot dispatch yet.
        assert running.broker.request_pool.used <= len(encode_request(0, fetch, "slow"))
        await slow.aclose()
        nursery.cancel_scope.cancel()
    running.broker.close()
