"""Produce, Fetch, ListOffsets, Metadata, CreateTopics and ApiVersions over the wire.

Each test gets an in-process broker on 127.0.0.1:<port 0> (tests/conftest.py)
and talks to it with tests/wire_client.py. Waits are on conditions with
trio.fail_after deadlines, never on sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import time
import uuid

import pytest
import trio

from lodestream.broker.handlers import REGISTRY
from lodestream.protocol.codec import decode_response, encode_request, response_type
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder

import record_batches as rb

DEADLINE_S = 20  # per test; the broker is local, so anything near this is a hang

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS, CREATE_TOPICS = 0, 1, 2, 3, 18, 19

NONE = ErrorCode.none
OFFSET_OUT_OF_RANGE = ErrorCode.offset_out_of_range  # 1
NOT_LEADER_OR_FOLLOWER = ErrorCode.not_leader_or_follower  # 6
CORRUPT_MESSAGE = ErrorCode.corrupt_message  # 2
UNKNOWN_TOPIC_OR_PARTITION = ErrorCode.unknown_topic_or_partition  # 3
MESSAGE_TOO_LARGE = ErrorCode.message_too_large  # 10
INVALID_TOPIC_EXCEPTION = ErrorCode.invalid_topic_exception  # 17
TOPIC_ALREADY_EXISTS = ErrorCode.topic_already_exists  # 36
INVALID_REPLICATION_FACTOR = ErrorCode.invalid_replication_factor  # 38
INVALID_REPLICA_ASSIGNMENT = ErrorCode.invalid_replica_assignment  # 39
UNKNOWN_TOPIC_ID = ErrorCode.unknown_topic_id  # 100


@pytest.fixture
async def client(running_broker):
    """A WireClient connected to the test's broker, closed at the end of the test."""
    connection = await running_broker.client()
    yield connection
    await connection.aclose()


@contextlib.asynccontextmanager
async def another_client(running_broker):
    connection = await running_broker.client()
    try:
        yield connection
    finally:
        await connection.aclose()


def test_error_code_numbers_match_the_kafka_protocol():
    assert [int(c) for c in (OFFSET_OUT_OF_RANGE, CORRUPT_MESSAGE, UNKNOWN_TOPIC_OR_PARTITION, MESSAGE_TOO_LARGE,
                             INVALID_TOPIC_EXCEPTION, TOPIC_ALREADY_EXISTS, INVALID_REPLICATION_FACTOR,
                             INVALID_REPLICA_ASSIGNMENT, UNKNOWN_TOPIC_ID)] == [1, 2, 3, 10, 17, 36, 38, 39, 100]


# -- request helpers ------------------------------------------------------------------


def create_topics_request(name: str, partitions: int = 1, replication_factor: int = 1,
                          configs: dict[str, str] | None = None, assignments: dict[int, list[int]] | None = None,
                          validate_only: bool = False, version: int = 7):
    build = request_builder(CREATE_TOPICS, version)
    topic = build.CreatableTopic(
        name=name,
        num_partitions=-1 if assignments else partitions,
        replication_factor=-1 if assignments else replication_factor,
        assignments=tuple(build.CreatableReplicaAssignment(partition_index=p, broker_ids=tuple(ids))
                          for p, ids in (assignments or {}).items()),
        configs=tuple(build.CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()),
    )
    return build.CreateTopicsRequest(topics=(topic,), timeout=datetime.timedelta(seconds=10),
                                     validate_only=validate_only)


async def create_topic(client, name: str, partitions: int = 1, **configs: str) -> uuid.UUID:
    response = await client.request(create_topics_request(name, partitions, configs=configs))
    (result,) = response.topics
    assert result.error_code == NONE, result.error_message
    return result.topic_id


def produce_request(topic: str | None, partitions: dict[int, bytes | None], version: int = 9, acks: int = -1,
                    topic_id: uuid.UUID | None = None):
    build = request_builder(PRODUCE, version)
    return build.ProduceRequest(
        transactional_id=None,
        acks=acks,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(build.TopicProduceData(
            name=topic,
            topic_id=topic_id,
            partition_data=tuple(build.PartitionProduceData(index=i, records=r) for i, r in partitions.items()),
        ),),
    )


async def produce_one(client, topic: str, records: bytes, partition: int = 0, version: int = 9, **kwargs):
    response = await client.request(produce_request(topic, {partition: records}, version, **kwargs))
    ((topic_response,),) = [response.responses]
    (partition_response,) = topic_response.partition_responses
    return partition_response


def fetch_request(topic: str | None, offsets: dict[int, int], version: int = 12, max_bytes: int = 50 << 20,
                  partition_max_bytes: int = 10 << 20, min_bytes: int = 0, max_wait_ms: int = 0,
                  topic_id: uuid.UUID | None = None):
    build = request_builder(FETCH, version)
    return build.FetchRequest(
        replica_id=-1,
        max_wait=datetime.timedelta(milliseconds=max_wait_ms),
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=(build.FetchTopic(
            topic=topic,
            topic_id=topic_id,
            partitions=tuple(build.FetchPartition(partition=p, fetch_offset=o, partition_max_bytes=partition_max_bytes)
                             for p, o in offsets.items()),
        ),),
        forgotten_topics_data=(),
        rack_id="",
    )


async def fetch_one(client, topic: str | None, offset: int, partition: int = 0, version: int = 12, **kwargs):
    response = await client.request(fetch_request(topic, {partition: offset}, version, **kwargs))
    if hasattr(response, "error_code"):  # v7+
        assert response.error_code == NONE
    (topic_response,) = response.responses
    (partition_data,) = topic_response.partitions
    assert partition_data.partition_index == partition
    return partition_data


def metadata_request(names: list[str] | None, allow_auto_topic_creation: bool = True, version: int = 12):
    build = request_builder(METADATA, version)
    topics = None if names is None else tuple(build.MetadataRequestTopic(name=n, topic_id=None) for n in names)
    return build.MetadataRequest(topics=topics, allow_auto_topic_creation=allow_auto_topic_creation,
                                 include_cluster_authorized_operations=False,
                                 include_topic_authorized_operations=False)


def list_offsets_request(topic: str, timestamps: dict[int, int], version: int = 8):
    build = request_builder(LIST_OFFSETS, version)
    return build.ListOffsetsRequest(
        replica_id=-1, isolation_level=0,
        topics=(build.ListOffsetsTopic(name=topic, partitions=tuple(
            build.ListOffsetsPartition(partition_index=p, timestamp=t, current_leader_epoch=-1)
            for p, t in timestamps.items())),),
    )


def stored_form(raw: bytes, base_offset: int, leader_epoch: int = 0) -> bytes:
    """What the broker stores for a produced batch: base offset and leader epoch patched, nothing else."""
    return rb.patch(rb.patch(raw, 0, ">q", base_offset), 12, ">i", leader_epoch)


# -- ApiVersions -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
async def test_api_versions_lists_our_keys(client, version):
    build = request_builder(API_VERSIONS, version)
    with trio.fail_after(DEADLINE_S):
        response = await client.request(build.ApiVersionsRequest(client_software_name="lodestream-tests",
                                                                 client_software_version="1.0"))
    assert response.error_code == NONE
    ranges = {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in response.api_keys}
    assert set(ranges) == {key for key, handler in REGISTRY.items() if handler.served_on(controller=False)}
    assert not {52, 53, 54, 59} & set(ranges)  # the quorum peers' APIs: on the controller listener only
    assert ranges[PRODUCE] == (0, 13)
    assert ranges[FETCH] == (4, 17)
    assert ranges[API_VERSIONS] == (0, 4)
    assert ranges[METADATA][0] == 0 and ranges[LIST_OFFSETS][0] <= 1 and CREATE_TOPICS in ranges


# -- produce then fetch ------------------------------------------------------------------


async def test_produce_v3_v12_v13_then_fetch_v4_v12_v13_returns_exact_stored_bytes(client):
    with trio.fail_after(DEADLINE_S):
        topic_id = await create_topic(client, "exact")
        first = rb.build_batch([rb.Record(b"one", key=b"k1", headers=(("h", b"1"),), timestamp=int(time.time() * 1000)),
                                rb.Record(b"two"), rb.Record(None, key=b"tombstone")])
        second = rb.build_batch([rb.Record(b"x" * 500, timestamp=int(time.time() * 1000)) for _ in range(2)],
                                compression=rb.GZIP)
        third = rb.build_batch([rb.Record(b"three", timestamp=int(time.time() * 1000))], compression=rb.ZSTD)

        r1 = await produce_one(client, "exact", first, version=3)
        r2 = await produce_one(client, "exact", second, version=12)
        response = await client.request(produce_request(None, {0: third}, version=13, topic_id=topic_id))
        (topic_response,) = response.responses
        assert topic_response.topic_id == topic_id
        (r3,) = topic_response.partition_responses
        assert [(r.error_code, r.base_offset) for r in (r1, r2, r3)] == [(NONE, 0), (NONE, 3), (NONE, 5)]
        assert r2.log_append_time is None and r2.log_start_offset == 0

        expected = stored_form(first, 0) + stored_form(second, 3) + stored_form(third, 5)
        for version in (4, 12):
            data = await fetch_one(client, "exact", 0, version=version)
            assert data.error_code == NONE
            assert data.high_watermark == 6
            assert bytes(data.records) == expected
        for version in (13, 15, 17):
            response = await client.request(fetch_request(None, {0: 0}, version=version, topic_id=topic_id))
            (topic_response,) = response.responses
            assert topic_response.topic_id == topic_id
            (data,) = topic_response.partitions
            assert (data.error_code, data.high_watermark, data.log_start_offset) == (NONE, 6, 0)
            assert bytes(data.records) == expected

        records = rb.decode_records(expected)
        assert [r.offset for r in records] == list(range(6))
        assert [r.value for r in records][:3] == [b"one", b"two", None]
        assert records[0].headers == (("h", b"1"),)


async def test_fetch_v13_with_unknown_topic_id(client):
    with trio.fail_after(DEADLINE_S):
        response = await client.request(fetch_request(None, {0: 0}, version=13, topic_id=uuid.uuid4()))
        (data,) = response.responses[0].partitions
        assert data.error_code == UNKNOWN_TOPIC_ID
        response = await client.request(produce_request(None, {0: rb.simple_batch(1)}, version=13,
                                                        topic_id=uuid.uuid4()))
        assert response.responses[0].partition_responses[0].error_code == UNKNOWN_TOPIC_ID


async def test_acks_zero_gets_no_response(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "fire-and-forget")
        raw = rb.simple_batch(3)
        client._correlation += 1
        silent = client._correlation
        await client.send_raw(encode_request(silent, produce_request("fire-and-forget", {0: raw}, acks=0)))
        # The next response on the connection must be the next request's (WireClient checks the correlation id).
        response = await client.request(metadata_request(["fire-and-forget"]))
        assert client._correlation == silent + 1
        assert response.topics[0].error_code == NONE
        # Appends are queued in arrival order, so once an acknowledged produce is answered the silent one is in.
        acked = rb.simple_batch(1)
        assert (await produce_one(client, "fire-and-forget", acked)).base_offset == 3
        data = await fetch_one(client, "fire-and-forget", 0)
        assert bytes(data.records) == stored_form(raw, 0) + stored_form(acked, 3)


async def test_crc_mismatch_fails_only_its_partition(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "crc", partitions=2)
        good = rb.simple_batch(2)
        bad = rb.corrupt_crc(rb.simple_batch(2))
        response = await client.request(produce_request("crc", {0: good, 1: bad}))
        results = {int(p.index): p for p in response.responses[0].partition_responses}
        assert (results[0].error_code, results[0].base_offset) == (NONE, 0)
        assert results[1].error_code == CORRUPT_MESSAGE
        assert results[1].base_offset == -1
        assert bytes((await fetch_one(client, "crc", 0, partition=0)).records) == stored_form(good, 0)
        nothing = await fetch_one(client, "crc", 0, partition=1)
        assert nothing.high_watermark == 0 and bytes(nothing.records or b"") == b""


async def test_batch_larger_than_max_message_bytes_is_refused(client):
    with trio.fail_after(DEADLINE_S):
        exact = rb.simple_batch(1, value_size=200)
        large = rb.simple_batch(1, value_size=201)
        # The limit counts the whole batch, including the 12-byte offset/length prefix.
        await create_topic(client, "small", **{"max.message.bytes": str(len(exact))})
        assert (await produce_one(client, "small", large)).error_code == MESSAGE_TOO_LARGE
        # Only the offending partition's data is refused; nothing was stored.
        assert (await fetch_one(client, "small", 0)).high_watermark == 0
        ok = await produce_one(client, "small", exact)
        assert (ok.error_code, ok.base_offset) == (NONE, 0)


async def test_produce_to_unknown_topic(client):
    with trio.fail_after(DEADLINE_S):
        assert (await produce_one(client, "no-such-topic", rb.simple_batch(1))).error_code == \
            UNKNOWN_TOPIC_OR_PARTITION
        await create_topic(client, "one-partition")
        assert (await produce_one(client, "one-partition", rb.simple_batch(1), partition=5)).error_code == \
            UNKNOWN_TOPIC_OR_PARTITION
        # Produce does not auto-create.
        response = await client.request(metadata_request(["no-such-topic"], allow_auto_topic_creation=False))
        assert response.topics[0].error_code == UNKNOWN_TOPIC_OR_PARTITION


def test_clients_cannot_append_to_internal_topics():
    """Only the coordinators write __consumer_offsets and __transaction_state: a client's records there (Kafka
    protocol or REST) would be replayed as group or transaction state. Kafka refuses them the same way."""
    import uuid

    from lodestream.broker.append import validate_batches
    from lodestream.consensus.image import TopicImage
    from lodestream.protocol.errors import ErrorCode, KafkaError

    with pytest.raises(KafkaError) as refused:
        validate_batches(None, TopicImage("__consumer_offsets", uuid.uuid4()), 0, rb.simple_batch(1), 0)
    assert refused.value.code == ErrorCode.invalid_topic_exception


async def test_log_append_time_topic(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "lat", **{"message.timestamp.type": "LogAppendTime"})
        raw = rb.build_batch([rb.Record(b"a", timestamp=1000), rb.Record(b"b", timestamp=2000)], compression=rb.LZ4)
        before = datetime.datetime.now(datetime.UTC)
        result = await produce_one(client, "lat", raw, version=12)
        after = datetime.datetime.now(datetime.UTC)
        assert result.error_code == NONE
        assert result.log_append_time is not None
        slack = datetime.timedelta(seconds=1)
        assert before - slack <= result.log_append_time <= after + slack
        append_ms = round(result.log_append_time.timestamp() * 1000)

        (stored,) = rb.decode_batches((await fetch_one(client, "lat", 0)).records)
        assert stored.log_append_time and stored.crc_ok
        assert stored.max_timestamp == append_ms
        assert stored.compression == rb.LZ4
        assert [(r.offset, r.timestamp, r.value) for r in stored.records] == [(0, append_ms, b"a"), (1, append_ms, b"b")]

        response = await client.request(list_offsets_request("lat", {0: -3}))
        (partition,) = response.topics[0].partitions
        assert (partition.timestamp, partition.offset) == (append_ms, 0)


# -- fetch semantics -------------------------------------------------------------------------


async def test_fetch_long_poll_returns_when_a_produce_lands(running_broker, client):
    # A fetch occupies its connection until it answers, so the produce goes over another one.
    consumer = client
    with trio.fail_after(DEADLINE_S):
        async with another_client(running_broker) as producer:
            topic_id = await create_topic(producer, "poll")
            partition = running_broker.broker.replicas.get(topic_id, 0)
            raw = rb.simple_batch(2)
            result: dict = {}

            async def long_poll():
                started = trio.current_time()
                result["data"] = await fetch_one(consumer, "poll", 0, min_bytes=1, max_wait_ms=5000)
                result["elapsed"] = trio.current_time() - started

            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                while not partition.waiters:  # the fetch is parked on the partition
                    await trio.sleep(0.001)
                produced = await produce_one(producer, "poll", raw)
                assert produced.error_code == NONE
    # Returned on the produce, well before its 5 s deadline (a generous bound, not a benchmark).
    assert result["elapsed"] < 4.0
    assert bytes(result["data"].records) == stored_form(raw, 0)
    assert not partition.waiters


async def test_empty_fetch_waits_for_max_wait(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "quiet")
        started = trio.current_time()
        data = await fetch_one(client, "quiet", 0, min_bytes=1, max_wait_ms=200)
        elapsed = trio.current_time() - started
    assert elapsed >= 0.2
    assert data.error_code == NONE and data.high_watermark == 0
    assert bytes(data.records or b"") == b""


@pytest.mark.parametrize("limit", ["max_bytes", "partition_max_bytes"])
async def test_first_batch_is_returned_even_if_larger_than_the_limit(client, limit):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "big")
        first = rb.simple_batch(2, value_size=600)
        second = rb.simple_batch(1, value_size=600)
        await produce_one(client, "big", first)
        await produce_one(client, "big", second)
        data = await fetch_one(client, "big", 0, **{limit: 100})
        assert bytes(data.records) == stored_form(first, 0)
        assert data.high_watermark == 3
        both = await fetch_one(client, "big", 0, **{limit: len(first) + len(second)})
        assert bytes(both.records) == stored_form(first, 0) + stored_form(second, 2)


async def test_max_bytes_is_shared_across_partitions(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "shared", partitions=2)
        batch = rb.simple_batch(1, value_size=600)
        await client.request(produce_request("shared", {0: batch, 1: batch}))
        response = await client.request(fetch_request("shared", {0: 0, 1: 0}, max_bytes=100))
        records = {int(p.partition_index): bytes(p.records or b"") for p in response.responses[0].partitions}
        # Only the first non-empty partition may exceed the limit.
        assert records == {0: stored_form(batch, 0), 1: b""}


async def test_fetch_from_inside_a_batch_returns_the_whole_batch(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "inside")
        first, second = rb.simple_batch(3), rb.simple_batch(2)
        await produce_one(client, "inside", first)
        await produce_one(client, "inside", second)
        assert bytes((await fetch_one(client, "inside", 1)).records) == stored_form(first, 0) + stored_form(second, 3)
        assert bytes((await fetch_one(client, "inside", 4)).records) == stored_form(second, 3)
        at_end = await fetch_one(client, "inside", 5)
        assert (at_end.error_code, bytes(at_end.records or b"")) == (NONE, b"")


async def test_fetch_beyond_the_high_watermark_is_out_of_range(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "range")
        await produce_one(client, "range", rb.simple_batch(2))
        for version in (4, 12):
            data = await fetch_one(client, "range", 3, version=version)
            assert data.error_code == OFFSET_OUT_OF_RANGE
            assert bytes(data.records or b"") == b""
        # Out of range fails at once, even when asked to wait.
        started = trio.current_time()
        data = await fetch_one(client, "range", 3, min_bytes=1, max_wait_ms=5000)
        assert data.error_code == OFFSET_OUT_OF_RANGE
        assert trio.current_time() - started < 4.0
        assert (await fetch_one(client, "range", -1)).error_code == OFFSET_OUT_OF_RANGE


async def test_fetch_of_a_partition_led_elsewhere_answers_not_leader_in_every_version(running_broker, client):
    """Fetch v12+ names the leader (KIP-951's current_leader); older versions have no such field and still
    get NOT_LEADER_OR_FOLLOWER on an open connection (this broker losing leadership, e.g. while it is shut
    down, once closed kcat's v11 connections)."""
    with trio.fail_after(DEADLINE_S):
        topic_id = await create_topic(client, "elsewhere")
        partition = running_broker.broker.replicas.get(topic_id, 0)
        partition.leader_id = 99  # as if the image said broker 99 leads it
        for version in (4, 11, 12, 13):
            data = await fetch_one(client, "elsewhere" if version < 13 else None, 0, version=version,
                                   topic_id=topic_id if version >= 13 else None)
            assert data.error_code == NOT_LEADER_OR_FOLLOWER
        partition.leader_id = running_broker.broker.node_id


async def test_a_follower_ahead_of_its_leader_gets_the_diverging_epoch_not_out_of_range(client):
    """A follower that kept an uncommitted suffix of an older epoch fetches past the new leader's end: it
    must learn where its log left the leader's (KIP-101/KIP-320), not get OFFSET_OUT_OF_RANGE, whose reset
    to the leader's high watermark (which may trail what is committed) cut committed records."""
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "ahead")
        await produce_one(client, "ahead", rb.simple_batch(2))
        build = request_builder(FETCH, 12)
        request = dataclasses.replace(fetch_request("ahead", {0: 5}), replica_id=2, topics=(build.FetchTopic(
            topic="ahead", partitions=(build.FetchPartition(partition=0, current_leader_epoch=-1, fetch_offset=5,
                                                            last_fetched_epoch=0, partition_max_bytes=1 << 20),)),))
        data = (await client.request(request)).responses[0].partitions[0]
        assert data.error_code == NONE
        assert (data.diverging_epoch.epoch, data.diverging_epoch.end_offset) == (0, 2)


# -- ListOffsets -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 7, 8])
async def test_list_offsets(client, version):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "times")
        now = int(time.time() * 1000) - 60_000
        first = [now + d for d in (1000, 3000, 2000, 4000, 500)]  # offsets 0-4, distinct, out of order
        second = [now + d for d in (2500, 6000, 5000)]  # offsets 5-7
        for stamps, codec in ((first, rb.SNAPPY), (second, rb.ZSTD)):
            raw = rb.build_batch([rb.Record(b"%d" % ts, timestamp=ts) for ts in stamps], compression=codec)
            assert (await produce_one(client, "times", raw)).error_code == NONE

        async def lookup(timestamp: int) -> tuple[int, int, int]:
            response = await client.request(list_offsets_request("times", {0: timestamp}, version=version))
            (partition,) = response.topics[0].partitions
            return int(partition.error_code), int(partition.timestamp), int(partition.offset)

        assert (await lookup(-2))[::2] == (0, 0)  # earliest
        assert (await lookup(-1))[::2] == (0, 8)  # latest = high watermark
        assert await lookup(now) == (0, now + 1000, 0)
        assert await lookup(now + 1000) == (0, now + 1000, 0)
        assert await lookup(now + 1001) == (0, now + 3000, 1)  # the earliest offset with ts >= target
        assert await lookup(now + 2200) == (0, now + 3000, 1)
        assert await lookup(now + 3500) == (0, now + 4000, 3)
        assert await lookup(now + 4001) == (0, now + 6000, 6)  # skips the first batch by its max timestamp
        assert await lookup(now + 6000) == (0, now + 6000, 6)
        assert await lookup(now + 6001) == (0, -1, -1)
        if version >= 7:  # KIP-734 max timestamp
            assert await lookup(-3) == (0, now + 6000, 6)

        response = await client.request(list_offsets_request("nope", {0: -1}, version=version))
        assert response.topics[0].partitions[0].error_code == UNKNOWN_TOPIC_OR_PARTITION


# -- Metadata / CreateTopics ----------------------------------------------------------------------


async def test_metadata_auto_creates_only_when_allowed(running_broker, client):
    with trio.fail_after(DEADLINE_S):
        refused = await client.request(metadata_request(["not-yet"], allow_auto_topic_creation=False))
        (topic,) = refused.topics
        assert (topic.name, topic.error_code, topic.partitions) == ("not-yet", UNKNOWN_TOPIC_OR_PARTITION, ())
        assert running_broker.broker.image.topic("not-yet") is None

        created = await client.request(metadata_request(["not-yet"], allow_auto_topic_creation=True))
        (topic,) = created.topics
        assert (topic.name, topic.error_code) == ("not-yet", NONE)
        assert topic.topic_id == running_broker.broker.image.topic("not-yet").topic_id
        (partition,) = topic.partitions
        node = running_broker.broker.node_id
        assert (partition.partition_index, partition.leader_id, partition.replica_nodes) == (0, node, (node,))
        (broker,) = created.brokers
        assert (broker.node_id, broker.port) == (node, running_broker.port)

        # Asking again returns the same topic, and "all topics" lists it.
        again = await client.request(metadata_request(["not-yet"], allow_auto_topic_creation=False))
        assert again.topics[0].topic_id == topic.topic_id
        everything = await client.request(metadata_request(None))
        assert [t.name for t in everything.topics] == ["not-yet"]


@pytest.mark.parametrize("name", ["bad name", "slash/y", "a" * 250, "..", "ünïcode"])
async def test_metadata_with_an_invalid_topic_name(running_broker, client, name):
    with trio.fail_after(DEADLINE_S):
        response = await client.request(metadata_request([name], allow_auto_topic_creation=True))
        (topic,) = response.topics
        assert topic.error_code == INVALID_TOPIC_EXCEPTION
        assert running_broker.broker.image.topics_by_name == {}


async def test_create_topics_validate_only_creates_nothing(running_broker, client):
    with trio.fail_after(DEADLINE_S):
        response = await client.request(create_topics_request("dry-run", partitions=3, validate_only=True))
        (result,) = response.topics
        assert (result.error_code, result.num_partitions) == (NONE, 3)
        assert running_broker.broker.image.topic("dry-run") is None
        check = await client.request(metadata_request(["dry-run"], allow_auto_topic_creation=False))
        assert check.topics[0].error_code == UNKNOWN_TOPIC_OR_PARTITION
        # Validation still applies in a dry run.
        response = await client.request(create_topics_request("dry-run", replication_factor=3, validate_only=True))
        assert response.topics[0].error_code == INVALID_REPLICATION_FACTOR


async def test_create_topics_errors(running_broker, client):
    node = running_broker.broker.node_id
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "dup", partitions=2)
        response = await client.request(create_topics_request("dup"))
        assert response.topics[0].error_code == TOPIC_ALREADY_EXISTS

        response = await client.request(create_topics_request("rf3", replication_factor=3))
        assert response.topics[0].error_code == INVALID_REPLICATION_FACTOR

        response = await client.request(create_topics_request("on-broker-7", assignments={0: [7]}))
        assert response.topics[0].error_code == INVALID_REPLICA_ASSIGNMENT
        response = await client.request(create_topics_request("on-me-and-7", assignments={0: [node], 1: [node, 7]}))
        assert response.topics[0].error_code == INVALID_REPLICA_ASSIGNMENT

        for name in ("rf3", "on-broker-7", "on-me-and-7"):
            assert running_broker.broker.image.topic(name) is None
        assert len(running_broker.broker.image.topic("dup").partitions) == 2

        response = await client.request(create_topics_request("on-me", assignments={0: [node], 1: [node]}))
        assert (response.topics[0].error_code, response.topics[0].num_partitions) == (NONE, 2)


async def test_create_topics_returns_configs_and_they_apply(client):
    with trio.fail_after(DEADLINE_S):
        response = await client.request(create_topics_request("cfg", configs={"retention.ms": "1234"}))
        (result,) = response.topics
        assert result.error_code == NONE
        configs = {c.name: (c.value, int(c.config_source)) for c in result.configs}
        assert configs["retention.ms"] == ("1234", 1)  # DYNAMIC_TOPIC_CONFIG
        assert configs["max.message.bytes"] == ("1048588", 5)  # DEFAULT_CONFIG
        response = await client.request(create_topics_request("cfg-bad", configs={"retention.ms": "soon"}))
        assert response.topics[0].error_code == ErrorCode.invalid_config


# -- more produce / fetch edges ---------------------------------------------------------------------


async def test_several_batches_in_one_record_set_get_contiguous_offsets(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "multi")
        # Whatever base offset and epoch the client put in the header, the broker assigns its own.
        first = rb.build_batch([rb.Record(b"a"), rb.Record(b"b")], base_offset=42, partition_leader_epoch=9)
        second = rb.build_batch([rb.Record(b"c")], compression=rb.SNAPPY, base_offset=7)
        result = await produce_one(client, "multi", first + second)
        assert (result.error_code, result.base_offset) == (NONE, 0)
        data = await fetch_one(client, "multi", 0)
        assert bytes(data.records) == stored_form(first, 0) + stored_form(second, 2)
        assert [(r.offset, r.value) for r in rb.decode_records(data.records)] == [(0, b"a"), (1, b"b"), (2, b"c")]
        assert (await produce_one(client, "multi", rb.simple_batch(1))).base_offset == 3


async def test_pipelined_produces_are_answered_in_order_with_increasing_offsets(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "pipeline", partitions=2)
        sent = []
        for i in range(30):
            client._correlation += 1
            sent.append(client._correlation)
            batch = rb.simple_batch(1 + i % 3, prefix=b"m%d" % i)
            await client.send_raw(encode_request(client._correlation, produce_request("pipeline", {i % 2: batch})))
        received = []
        next_offset = {0: 0, 1: 0}
        for i in range(30):
            correlation, response = decode_response(await client.read_frame(), response_type(PRODUCE, 9))
            received.append(correlation)
            (result,) = response.responses[0].partition_responses
            assert (result.error_code, result.index) == (NONE, i % 2)
            assert result.base_offset == next_offset[i % 2]
            next_offset[i % 2] += 1 + i % 3
        assert received == sent
        values = [r.value[:3] for r in rb.decode_records((await fetch_one(client, "pipeline", 0, partition=0)).records)]
        assert values[:3] == [b"m0-", b"m2-", b"m2-"]


async def test_invalid_acks_and_timestamps_too_far_in_the_future(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "checks")
        assert (await produce_one(client, "checks", rb.simple_batch(1), acks=2)).error_code == \
            ErrorCode.invalid_required_acks
        future = int(time.time() * 1000) + 2 * 3600 * 1000  # message.timestamp.after.max.ms is 1 h
        result = await produce_one(client, "checks", rb.simple_batch(1, timestamp=future))
        assert result.error_code == ErrorCode.invalid_timestamp
        nothing_stored = await fetch_one(client, "checks", 0)
        assert nothing_stored.high_watermark == 0


async def test_fetch_waits_for_min_bytes_to_accumulate(running_broker, client):
    consumer = client
    with trio.fail_after(DEADLINE_S):
        async with another_client(running_broker) as producer:
            topic_id = await create_topic(producer, "accumulate")
            partition = running_broker.broker.replicas.get(topic_id, 0)
            small = rb.simple_batch(1)
            result: dict = {}

            async def long_poll():
                started = trio.current_time()
                result["data"] = await fetch_one(consumer, "accumulate", 0, min_bytes=10_000, max_wait_ms=300)
                result["elapsed"] = trio.current_time() - started

            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                while not partition.waiters:
                    await trio.sleep(0.001)
                await produce_one(producer, "accumulate", small)
    # Less than min_bytes arrived, so the fetch ran to max_wait and returned what there was.
    assert result["elapsed"] >= 0.3
    assert bytes(result["data"].records) == stored_form(small, 0)


async def test_fetch_of_a_missing_partition_or_topic(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "one")
        assert (await fetch_one(client, "one", 0, partition=3)).error_code == UNKNOWN_TOPIC_OR_PARTITION
        # An error answers at once even with a long max_wait.
        started = trio.current_time()
        missing = await fetch_one(client, "missing", 0, min_bytes=1, max_wait_ms=5000)
        assert missing.error_code == UNKNOWN_TOPIC_OR_PARTITION
        assert trio.current_time() - started < 4.0


async def test_list_offsets_max_timestamp_picks_the_first_record_with_it(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "ties")
        now = int(time.time() * 1000) - 60_000
        for stamps in ([now, now + 9, now + 9], [now + 9, now + 1]):
            raw = rb.build_batch([rb.Record(b"v", timestamp=ts) for ts in stamps])
            assert (await produce_one(client, "ties", raw)).error_code == NONE
        response = await client.request(list_offsets_request("ties", {0: -3}))
        (partition,) = response.topics[0].partitions
        assert (partition.timestamp, partition.offset) == (now + 9, 1)
        empty = await create_topic(client, "no-records")
        assert empty
        response = await client.request(list_offsets_request("no-records", {0: -3}))
        (partition,) = response.topics[0].partitions
        assert (partition.error_code, partition.offset) == (NONE, -1)
        response = await client.request(list_offsets_request("no-records", {0: -1}))
        assert response.topics[0].partitions[0].offset == 0


async def test_metadata_empty_topic_list_means_all_in_v0_and_none_later(client):
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "listed")
        v0 = await client.request(request_builder(METADATA, 0).MetadataRequest(topics=()))
        assert [t.name for t in v0.topics] == ["listed"]
        v12 = await client.request(metadata_request([]))
        assert v12.topics == ()
        v1_all = await client.request(metadata_request(None, version=1))
        assert [t.name for t in v1_all.topics] == ["listed"]


async def test_all_topics_metadata_follows_a_topic_that_changed(client):
    """Metadata's topic entries are reused while their topic is unchanged (broker/handlers/metadata.py):
    a topic that grew must be answered as it is now, in every version."""
    with trio.fail_after(DEADLINE_S):
        await create_topic(client, "steady")
        await create_topic(client, "grown")
        for version in (1, 12):
            everything = await client.request(metadata_request(None, version=version))
            assert {t.name: len(t.partitions) for t in everything.topics} == {"steady": 1, "grown": 1}
        build = request_builder(37, 3)  # CreatePartitions
        response = await client.request(build.CreatePartitionsRequest(
            topics=(build.CreatePartitionsTopic(name="grown", count=3, assignments=None),),
            timeout=datetime.timedelta(seconds=10), validate_only=False))
        assert response.results[0].error_code == NONE
        for version in (1, 12):
            everything = await client.request(metadata_request(None, version=version))
            assert {t.name: len(t.partitions) for t in everything.topics} == {"steady": 1, "grown": 3}


# -- edge cases where Kafka's behaviour is easy to get wrong --------------------------------------------------


async def test_create_topics_with_a_duplicated_name_creates_nothing(running_broker, client):
    with trio.fail_after(DEADLINE_S):
        build = request_builder(CREATE_TOPICS, 7)
        entry = build.CreatableTopic(name="twice", num_partitions=1, replication_factor=1, assignments=(), configs=())
        response = await client.request(build.CreateTopicsRequest(
            topics=(entry, entry), timeout=datetime.timedelta(seconds=10), validate_only=False))
        assert {int(t.error_code) for t in response.topics} == {int(ErrorCode.invalid_request)}
        assert running_broker.broker.image.topic("twice") is None


async def test_metadata_invalid_name_without_auto_create(client):
    with trio.fail_after(DEADLINE_S):
        response = await client.request(metadata_request(["bad name"], allow_auto_topic_creation=False))
        assert response.topics[0].error_code == INVALID_TOPIC_EXCEPTION


async def test_acks_all_answers_when_the_high_watermark_passes_acks_one_when_durable(running_broker, client,
                                                                                  monkeypatch):
    """'Durable here' and 'committed' are separate events of an append: hold the high watermark (as a
    lagging follower will) and acks=1 is answered while acks=all waits, with no handler involved."""
    from lodestream.broker.partition import Partition

    await create_topic(client, "hw")
    partition = running_broker.broker.replicas.get(running_broker.broker.image.topic("hw").topic_id, 0)
    held = {"offset": 0}
    monkeypatch.setattr(Partition, "high_watermark", property(lambda self: held["offset"]))
    first = await produce_one(client, "hw", rb.simple_batch(1), acks=1)
    assert (first.error_code, first.base_offset) == (NONE, 0)

    answered = []

    async def produce_all():
        other = await running_broker.client()
        try:
            answered.append(await produce_one(other, "hw", rb.simple_batch(1), acks=-1))
        finally:
            await other.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce_all)
        with trio.fail_after(DEADLINE_S):
            while partition.local_end_offset < 2:  # durable here ...
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert answered == []  # ... and not committed
        held["offset"] = partition.local_end_offset  # the ISR caught up
        running_broker.broker.replicas.advance_high_watermark(partition)
    assert (answered[0].error_code, answered[0].base_offset) == (NONE, 1)


async def test_keyless_records_on_a_compacted_topic_are_refused_naming_each_record(client):
    """As Kafka: INVALID_RECORD, and KIP-467's record_errors give the position of every keyless record."""
    await create_topic(client, "compacted", **{"cleanup.policy": "compact"})
    records = [rb.Record(value=b"a", key=b"k1"), rb.Record(value=b"b"), rb.Record(value=b"c", key=b"k2"),
               rb.Record(value=b"d")]
    refused = await produce_one(client, "compacted", rb.build_batch(records, compression=2))  # snappy: decompressed
    assert refused.error_code == ErrorCode.invalid_record
    assert [e.batch_index for e in refused.record_errors] == [1, 3]
    assert "without key" in refused.error_message
    keyed = await produce_one(client, "compacted", rb.build_batch([rb.Record(value=b"a", key=b"k1")]))
    assert (keyed.error_code, keyed.base_offset) == (NONE, 0)  # nothing of the refused batch was written
    await create_topic(client, "deleted")
    assert (await produce_one(client, "deleted", rb.build_batch([rb.Record(value=b"x")]))).error_code == NONE
