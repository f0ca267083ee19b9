"""Client quotas: token-bucket math under MockClock, Kafka's precedence, the metadata
records, DescribeClientQuotas / AlterClientQuotas over the wire, and KIP-219 throttling
(throttle_time in the response, then the connection pauses reading)."""

from __future__ import annotations

import datetime

import pytest
import trio
import trio.testing

from lodestream.broker.quotas import (
    ANONYMOUS,
    CLIENT_ID,
    CONSUMER_BYTE_RATE,
    CONSUMER_GROUP,
    MAX_THROTTLE_SECONDS,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    USER,
    BusyTime,
    QuotaError,
    QuotaManager,
    TokenBucket,
    Usage,
    make_entity,
    precedence,
    resolve,
    validate,
)
from lodestream.consensus.image import MetadataImage, replay_all
from lodestream.consensus.records import QuotaRecord, decode_records, encode_records
from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder
from record_batches import value_batch

TIMEOUT = datetime.timedelta(seconds=30)


# -- the bucket --------------------------------------------------------------------------------

def test_bucket_starts_full_and_debt_gives_throttle():
    bucket = TokenBucket(rate=1000, now=0.0)
    assert bucket.burst == 1000  # one second of rate by default
    assert bucket.record(1000, 0.0) == 0.0  # the whole burst, no throttle
    assert bucket.record(500, 0.0) == pytest.approx(0.5)  # 500 bytes of debt at 1000/s
    assert bucket.throttle(0.25) == pytest.approx(0.25)
    assert bucket.throttle(0.5) == 0.0


def test_bucket_rate_is_enforced_over_time():
    bucket = TokenBucket(rate=100, now=0.0, burst=10)
    now, sent = 0.0, 0
    while now < 100.0:  # a client that always waits out its throttle, sending 7 bytes at a time
        sent += 7
        now += bucket.record(7, now)
    assert sent / now == pytest.approx(100, rel=0.01)


def test_idle_refill_is_capped_at_burst():
    bucket = TokenBucket(rate=100, now=0.0)
    bucket.record(300, 0.0)  # 200 of debt
    assert bucket.throttle(1.0) == pytest.approx(1.0)
    assert bucket.full(1000.0)
    assert bucket.tokens == 100  # not 100 * 1000
    assert bucket.record(150, 1000.0) == pytest.approx(0.5)


def test_throttle_is_capped_but_the_debt_remains():
    bucket = TokenBucket(rate=1, now=0.0)
    assert bucket.record(100, 0.0) == MAX_THROTTLE_SECONDS
    assert bucket.throttle(MAX_THROTTLE_SECONDS) == MAX_THROTTLE_SECONDS  # still 88 s of debt


def test_rate_change_keeps_the_debt():
    bucket = TokenBucket(rate=100, now=0.0)
    bucket.record(300, 0.0)
    bucket.set_rate(200, 0.0)
    assert bucket.burst == 200
    assert bucket.throttle(0.0) == pytest.approx(1.0)  # 200 debt at 200/s


# -- precedence ----------------------------------------------------------------------------------

ALL_LEVELS = {
    make_entity([(USER, "u"), (CLIENT_ID, "c")]): {PRODUCER_BYTE_RATE: 1.0},
    make_entity([(USER, "u"), (CLIENT_ID, None)]): {PRODUCER_BYTE_RATE: 2.0},
    make_entity([(USER, "u")]): {PRODUCER_BYTE_RATE: 3.0},
    make_entity([(USER, None), (CLIENT_ID, "c")]): {PRODUCER_BYTE_RATE: 4.0},
    make_entity([(USER, None), (CLIENT_ID, None)]): {PRODUCER_BYTE_RATE: 5.0},
    make_entity([(USER, None)]): {PRODUCER_BYTE_RATE: 6.0},
    make_entity([(CLIENT_ID, "c")]): {PRODUCER_BYTE_RATE: 7.0},
    make_entity([(CLIENT_ID, None)]): {PRODUCER_BYTE_RATE: 8.0},
}


def test_precedence_follows_kafka_order():
    quotas = dict(ALL_LEVELS)
    order = precedence("u", "c")
    for expected in range(1, 9):
        entity, value = resolve(quotas, "u", "c", PRODUCER_BYTE_RATE)
        assert value == expected and entity == order[expected - 1]
        del quotas[entity]
    assert resolve(quotas, "u", "c", PRODUCER_BYTE_RATE) is None


def test_precedence_is_per_key_and_per_name():
    quotas = {
        make_entity([(CLIENT_ID, "c")]): {PRODUCER_BYTE_RATE: 7.0},
        make_entity([(USER, None)]): {CONSUMER_BYTE_RATE: 6.0},
    }
    assert resolve(quotas, ANONYMOUS, "c", PRODUCER_BYTE_RATE)[1] == 7.0
    assert resolve(quotas, ANONYMOUS, "other", PRODUCER_BYTE_RATE) is None
    assert resolve(quotas, ANONYMOUS, "c", CONSUMER_BYTE_RATE)[1] == 6.0  # the user default


def test_validation():
    validate(make_entity([(CONSUMER_GROUP, "g")]), "commit_request_rate", 5.0)
    validate(make_entity([(USER, "u"), (CLIENT_ID, None)]), "request_percentage", None)
    for entity, key, value in [
        (make_entity([(CONSUMER_GROUP, "g"), (USER, "u")]), CONSUMER_BYTE_RATE, 1.0),
        (make_entity([(CONSUMER_GROUP, "g")]), PRODUCER_BYTE_RATE, 1.0),
        (make_entity([(CLIENT_ID, "c")]), "nonsense", 1.0),
        (make_entity([(CLIENT_ID, "c")]), PRODUCER_BYTE_RATE, 0.0),
        (make_entity([("martian", "c")]), PRODUCER_BYTE_RATE, 1.0),
    ]:
        with pytest.raises(QuotaError):
            validate(entity, key, value)


# -- the manager under MockClock ------------------------------------------------------------

def _image(records) -> MetadataImage:
    return replay_all(MetadataImage(), records)


async def test_manager_buckets_under_mock_clock(autojump_clock):
    image = _image([
        QuotaRecord(make_entity([(CLIENT_ID, "slow")]), PRODUCER_BYTE_RATE, 1000.0),
        QuotaRecord(make_entity([(CLIENT_ID, None)]), CONSUMER_BYTE_RATE, 100.0),
        QuotaRecord(make_entity([(CONSUMER_GROUP, "g")]), CONSUMER_BYTE_RATE, 500.0),
    ])
    quotas = QuotaManager(lambda: image.client_quotas)
    slow, fast = Usage("slow", "h"), Usage("fast", "h")
    assert quotas.record_produce(slow, 1000) == 0
    assert quotas.record_produce(slow, 500) == 500
    assert quotas.record_produce(fast, 10**9) == 0  # no quota for it
    await trio.sleep(0.499)
    assert quotas.record_produce(slow, 0) == 1
    await trio.sleep(0.001)
    assert quotas.record_produce(slow, 0) == 0  # the debt is paid
    # /clients/<default>: one bucket per client id
    assert quotas.record_fetch(Usage("a", "h"), 200) == 1000
    assert quotas.record_fetch(Usage("b", "h"), 100) == 0
    # a consumer group: its members share one bucket; the larger of client and group throttle wins
    for member in ("m1", "m2"):
        quotas.note_group_member("h", member, "g")
    assert quotas.record_fetch(Usage("m1", "h"), 100) == 0  # client bucket: 0 debt; group: 400 left
    assert quotas.record_fetch(Usage("m2", "h"), 100) == 0
    assert quotas.record_fetch(Usage("m1", "h"), 300) == 3000  # client m1: 300 over at 100/s; group: exactly 0
    assert quotas.record_fetch(Usage("m2", "h"), 50) == 500  # client m2: 50 over at 100/s; group: 50 over at 500/s
    # a client that is not (yet) a member: its client quota only
    assert quotas.record_fetch(Usage("m3", "h"), 100) == 0


async def test_group_quota_shared_by_members(autojump_clock):
    image = _image([QuotaRecord(make_entity([(CONSUMER_GROUP, "g")]), CONSUMER_BYTE_RATE, 500.0),
                    QuotaRecord(make_entity([(CONSUMER_GROUP, "g")]), "commit_request_rate", 2.0)])
    quotas = QuotaManager(lambda: image.client_quotas)
    for member in ("m1", "m2", "m3"):
        quotas.note_group_member("h", member, "g")
    assert quotas.record_fetch(Usage("m1", "h"), 300) == 0
    assert quotas.record_fetch(Usage("m2", "h"), 200) == 0
    assert quotas.record_fetch(Usage("m3", "h"), 250) == 500  # 250 over at 500/s
    assert quotas.record_fetch(Usage("x", "h"), 10**6) == 0  # not in the group
    await trio.sleep(0.5)
    assert quotas.record_fetch(Usage("m1", "h"), 0) == 0
    assert [quotas.record_commit("g") for _ in range(3)] == [0, 0, 500]
    assert quotas.record_commit("other") == 0


async def test_request_percentage_charges_thread_time_under_mock_clock(autojump_clock):
    """request_percentage 10 = 0.1 s of request-thread time per second, burst 1 s of it; Kafka's precedence."""
    image = _image([QuotaRecord(make_entity([(CLIENT_ID, None)]), REQUEST_PERCENTAGE, 10.0),
                    QuotaRecord(make_entity([(USER, ANONYMOUS), (CLIENT_ID, "admin")]), REQUEST_PERCENTAGE, 200.0)])
    quotas = QuotaManager(lambda: image.client_quotas)
    assert quotas.request_time_quotas()
    busy = Usage("busy", "h")
    assert quotas.record_request_time(busy, 0.1) == 0  # the burst: 0.1 s
    assert quotas.record_request_time(busy, 0.05) == 500  # 0.05 s over at 0.1 s/s
    await trio.sleep(0.25)
    assert quotas.record_request_time(busy, 0.0) == 250
    await trio.sleep(0.25)
    assert quotas.record_request_time(busy, 0.0) == 0  # paid back
    assert quotas.record_request_time(Usage("other", "h"), 0.1) == 0  # /clients/<default>: a bucket per client
    admin = Usage("admin", "h")  # /users/ANONYMOUS/clients/admin (more specific) allows two threads' time
    assert quotas.record_request_time(admin, 2.0) == 0
    assert quotas.record_request_time(admin, 1.0) == 500
    assert quotas.record_request_time(busy, 100.0) == MAX_THROTTLE_SECONDS * 1000  # capped; the debt stays
    none = QuotaManager(lambda: _image([QuotaRecord(make_entity([(CLIENT_ID, None)]), PRODUCER_BYTE_RATE, 1.0)]
                                       ).client_quotas)
    assert not none.request_time_quotas()  # then the server does not even measure


async def test_busy_time_counts_running_not_waiting(autojump_clock):
    """BusyTime adds up the steps a coroutine runs, not its suspensions; results, errors and
    cancellation pass through as with a plain await."""
    now = [0.0]

    async def handler(work: list[float], fail: bool = False):
        for step in work:
            now[0] += step  # "runs" for `step` seconds of the fake timer
            await trio.sleep(5)  # then waits (mock clock): not charged
        if fail:
            raise KeyError("boom")
        return "answer"

    timed = BusyTime(handler([0.25, 0.5, 0.125]), timer=lambda: now[0])
    assert await timed == "answer"
    assert timed.seconds == 0.875
    failing = BusyTime(handler([0.5], fail=True), timer=lambda: now[0])
    with pytest.raises(KeyError):
        await failing
    assert failing.seconds == 0.5
    cancelled = BusyTime(handler([0.25, 1.0]), timer=lambda: now[0])
    with trio.move_on_after(1):
        await cancelled
    assert cancelled.seconds == 0.25


def test_records_codec_and_replay():
    entity = make_entity([(USER, None), (CLIENT_ID, "c")])
    records = [QuotaRecord(entity, PRODUCER_BYTE_RATE, 10.0), QuotaRecord(entity, CONSUMER_BYTE_RATE, 20.0),
               QuotaRecord(entity, PRODUCER_BYTE_RATE, None)]
    assert decode_records(encode_records(records)) == records
    assert _image(records).client_quotas == {entity: {CONSUMER_BYTE_RATE: 20.0}}
    assert _image(records + [QuotaRecord(entity, CONSUMER_BYTE_RATE, None)]).client_quotas == {}


# -- over the wire -----------------------------------------------------------------------------

def req(api_key: int, version: int):
    return request_builder(api_key, version)


async def alter(client, entity: list[tuple[str, str | None]], ops: dict[str, float | None],
                version: int = 1, validate_only: bool = False):
    b = req(49, version)
    response = await client.request(b.AlterClientQuotasRequest(
        entries=(b.EntryData(
            entity=tuple(b.EntityData(entity_type=t, entity_name=n) for t, n in entity),
            ops=tuple(b.OpData(key=k, value=0.0 if v is None else v, remove=v is None) for k, v in ops.items())),),
        validate_only=validate_only))
    (entry,) = response.entries
    return entry


async def describe(client, components, strict=False, version: int = 1):
    b = req(48, version)
    response = await client.request(b.DescribeClientQuotasRequest(
        components=tuple(b.ComponentData(entity_type=t, match_type=m, match=n) for t, m, n in components),
        strict=strict))
    assert response.error_code == ErrorCode.none, response
    return {tuple((e.entity_type, e.entity_name) for e in entry.entity): {v.key: v.value for v in entry.values}
            for entry in response.entries}


@pytest.mark.parametrize("version", [0, 1])
async def test_alter_and_describe_client_quotas(running_broker, version):
    client = await running_broker.client()
    entry = await alter(client, [(CLIENT_ID, "app")], {PRODUCER_BYTE_RATE: 1024.0}, version=version)
    assert entry.error_code == ErrorCode.none
    assert (await alter(client, [(CLIENT_ID, "dry")], {PRODUCER_BYTE_RATE: 1.0}, version, validate_only=True)
            ).error_code == ErrorCode.none
    await alter(client, [(USER, None), (CLIENT_ID, None)], {CONSUMER_BYTE_RATE: 2048.0}, version)
    await alter(client, [(CONSUMER_GROUP, "g")], {CONSUMER_BYTE_RATE: 4096.0, "commit_request_rate": 10.0}, version)
    bad = await alter(client, [(CONSUMER_GROUP, "g")], {PRODUCER_BYTE_RATE: 1.0}, version)
    assert bad.error_code == ErrorCode.invalid_request and bad.error_message

    assert await describe(client, [(CLIENT_ID, 0, "app")], version=version) == {
        ((CLIENT_ID, "app"),): {PRODUCER_BYTE_RATE: 1024.0}}
    assert await describe(client, [(CLIENT_ID, 1, None)], version=version) == {
        ((CLIENT_ID, None), (USER, None)): {CONSUMER_BYTE_RATE: 2048.0}}
    assert await describe(client, [(CLIENT_ID, 2, None)], strict=True, version=version) == {
        ((CLIENT_ID, "app"),): {PRODUCER_BYTE_RATE: 1024.0}}
    assert await describe(client, [(CONSUMER_GROUP, 0, "g")], version=version) == {
        ((CONSUMER_GROUP, "g"),): {CONSUMER_BYTE_RATE: 4096.0, "commit_request_rate": 10.0}}
    assert len(await describe(client, [], version=version)) == 3

    await alter(client, [(CLIENT_ID, "app")], {PRODUCER_BYTE_RATE: None}, version)
    assert await describe(client, [(CLIENT_ID, 0, "app")], version=version) == {}
    await client.aclose()


async def _produce(client, client_id: str, size: int):
    b = req(0, 9)
    response = await client.request(b.ProduceRequest(
        transactional_id=None, acks=1, timeout=TIMEOUT,
        topic_data=(b.TopicProduceData(name="q", partition_data=(
            b.PartitionProduceData(index=0, records=value_batch([b"x" * size])),)),)), client_id=client_id)
    assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
    return response


async def test_produce_over_quota_is_throttled_and_the_connection_paused(running_broker):
    client = await running_broker.client()
    await alter(client, [(CLIENT_ID, "slow")], {PRODUCER_BYTE_RATE: 100_000.0})
    b = req(19, 7)
    created = await client.request(b.CreateTopicsRequest(topics=(b.CreatableTopic(
        name="q", num_partitions=1, replication_factor=1, assignments=(), configs=()),),
        timeout=TIMEOUT, validate_only=False))
    assert created.topics[0].error_code == ErrorCode.none
    first = await _produce(client, "slow", 100_000)  # the burst is spent: ~0 debt
    second = await _produce(client, "slow", 50_000)  # ~0.5 s of debt
    assert first.throttle_time <= datetime.timedelta(milliseconds=10)
    assert datetime.timedelta(milliseconds=250) < second.throttle_time <= datetime.timedelta(milliseconds=510)
    # KIP-219: the broker does not read this connection's next request before the throttle ends,
    # so a client that ignores throttle_time is held to the rate.
    started = trio.current_time()
    third = await _produce(client, "slow", 10)
    assert trio.current_time() - started >= second.throttle_time.total_seconds() * 0.9
    assert third.throttle_time < datetime.timedelta(milliseconds=20)
    # another client id is not throttled
    other = await running_broker.client()
    assert (await _produce(other, "fast", 200_000)).throttle_time == datetime.timedelta(0)
    # the metric is fed
    assert running_broker.broker.metrics._api(0).throttled >= second.throttle_time.total_seconds()
    await client.aclose()
    await other.aclose()


async def test_quotas_survive_a_restart(tmp_path):
    from inprocess_broker import start_broker

    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data")
        client = await running.client()
        await alter(client, [(CONSUMER_GROUP, None)], {CONSUMER_BYTE_RATE: 123.0})
        await client.aclose()
        nursery.cancel_scope.cancel()
    running.broker.close()
    async with trio.open_nursery() as nursery:
        running = await start_broker(nursery, tmp_path / "data")
        client = await running.client()
        assert await describe(client, [(CONSUMER_GROUP, 1, None)]) == {((CONSUMER_GROUP, None),): {CONSUMER_BYTE_RATE: 123.0}}
        await client.aclose()
        nursery.cancel_scope.cancel()
    running.broker.close()


async def test_request_percentage_throttles_over_the_wire(running_broker):
    """A client over its request_percentage gets throttle_time_ms and its connection is paused for it;
    another client id is not affected."""
    client = await running_broker.client()
    await alter(client, [(CLIENT_ID, "chatty")], {REQUEST_PERCENTAGE: 1.0})  # 10 ms of handler time per s
    b = req(3, 12)
    metadata = b.MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                 include_topic_authorized_operations=False)
    throttled = None
    with trio.fail_after(30):
        for _ in range(5000):  # each answer costs ~0.1-1 ms; the 10 ms burst is spent within a few hundred
            response = await client.request(metadata, client_id="chatty")
            if response.throttle_time > datetime.timedelta(0):
                throttled = response.throttle_time
                break
    assert throttled is not None, "never throttled"
    assert throttled <= datetime.timedelta(seconds=MAX_THROTTLE_SECONDS)
    started = trio.current_time()
    await client.request(metadata, client_id="chatty")  # KIP-219: not read before the throttle ends
    assert trio.current_time() - started >= throttled.total_seconds() * 0.9
    other = await running_broker.client()
    for _ in range(50):
        assert (await other.request(metadata, client_id="quiet")).throttle_time == datetime.timedelta(0)
    await client.aclose()
    await other.aclose()


async def test_consumer_group_quotas_as_group_configs(running_broker):
    """Resource type GROUP (32): consumer.byte.rate / commit.request.rate are the consumer-group entity's
    quotas, so IncrementalAlterConfigs and AlterClientQuotas edit, and both Describe APIs show, one value."""
    from test_admin_handlers import by_name, describe_configs, incremental_alter

    group, SET, DELETE, APPEND = 32, 0, 1, 2
    client = await running_broker.client()
    result = await incremental_alter(client, 1, group, "g", [("consumer.byte.rate", SET, "2097152"),
                                                             ("commit.request.rate", SET, "2.5")])
    assert result.error_code == ErrorCode.none, result
    assert await describe(client, [(CONSUMER_GROUP, 0, "g")]) == {
        ((CONSUMER_GROUP, "g"),): {CONSUMER_BYTE_RATE: 2097152.0, "commit_request_rate": 2.5}}
    configs = by_name(await describe_configs(client, 4, group, "g", documentation=True))
    assert (configs["consumer.byte.rate"].value, configs["consumer.byte.rate"].config_source) == ("2097152", 8)
    assert configs["commit.request.rate"].value == "2.5" and configs["commit.request.rate"].documentation
    # the consumer-group=<default> quota entity is the cluster-wide default
    await alter(client, [(CONSUMER_GROUP, None)], {CONSUMER_BYTE_RATE: 1000.0})
    other = by_name(await describe_configs(client, 4, group, "other"))
    assert (other["consumer.byte.rate"].value, other["consumer.byte.rate"].config_source) == ("1000", 3)
    assert (other["commit.request.rate"].value, other["commit.request.rate"].config_source) == (None, 5)
    assert [s.source for s in by_name(await describe_configs(client, 4, group, "g"))["consumer.byte.rate"].synonyms
            ] == [8, 3]
    # errors: unknown key, not a number, not positive, APPEND; nothing is applied; validate_only changes nothing
    for ops in ([("consumer.session.timeout.ms", SET, "45000")], [("consumer.byte.rate", SET, "fast")],
                [("consumer.byte.rate", SET, "0")], [("consumer.byte.rate", APPEND, "1")]):
        bad = await incremental_alter(client, 1, group, "g", ops)
        assert bad.error_code == ErrorCode.invalid_config and bad.error_message, ops
    assert (await incremental_alter(client, 1, group, "g", [("consumer.byte.rate", SET, "5")], validate_only=True)
            ).error_code == ErrorCode.none
    assert by_name(await describe_configs(client, 4, group, "g"))["consumer.byte.rate"].value == "2097152"
    # DELETE falls back to the default; the quota manager sees the same mapping
    assert (await incremental_alter(client, 1, group, "g", [("consumer.byte.rate", DELETE, None)])
            ).error_code == ErrorCode.none
    assert await describe(client, [(CONSUMER_GROUP, 0, "g")]) == {((CONSUMER_GROUP, "g"),): {"commit_request_rate": 2.5}}
    assert by_name(await describe_configs(client, 4, group, "g"))["consumer.byte.rate"].value == "1000"
    await client.aclose()
