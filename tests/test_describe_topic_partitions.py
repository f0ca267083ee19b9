"""DescribeTopicPartitions (key 75): every topic or the named ones, in name order, paginated by
response_partition_limit with a cursor, errors for unknown topics and a cursor outside the named topics."""

from __future__ import annotations

from lodestream.protocol.errors import ErrorCode
from lodestream.protocol.messages import request_builder
from test_group_handlers import create_topic


async def describe(client, names=(), limit=2000, cursor=None):
    b = request_builder(75, 0)
    return await client.request(b.DescribeTopicPartitionsRequest(
        topics=tuple(b.TopicRequest(name=name) for name in names), response_partition_limit=limit,
        cursor=None if cursor is None else b.Cursor(topic_name=cursor[0], partition_index=cursor[1])))


def shape(response) -> list[tuple[str, int, list[int]]]:
    return [(t.name, t.error_code, [p.partition_index for p in t.partitions]) for t in response.topics]


async def test_all_topics_paginated_by_a_cursor(running_broker):
    client = await running_broker.client()
    for name, partitions in (("b-topic", 3), ("a-topic", 2), ("c-topic", 1)):
        await create_topic(client, name, partitions)
    whole = await describe(client)
    assert shape(whole) == [("a-topic", 0, [0, 1]), ("b-topic", 0, [0, 1, 2]), ("c-topic", 0, [0])]
    assert whole.next_cursor is None
    assert whole.topics[0].partitions[0].leader_id == running_broker.broker.node_id
    assert whole.topics[0].topic_id is not None and not whole.topics[0].is_internal

    pages, cursor = [], None
    while True:
        page = await describe(client, limit=2, cursor=cursor)
        pages.append(shape(page))
        if page.next_cursor is None:
            break
        cursor = (page.next_cursor.topic_name, page.next_cursor.partition_index)
    assert pages == [[("a-topic", 0, [0, 1])],
                     [("b-topic", 0, [0, 1])],
                     [("b-topic", 0, [2]), ("c-topic", 0, [0])]]


async def test_named_topics_errors_and_a_cursor_outside_them(running_broker):
    client = await running_broker.client()
    await create_topic(client, "known", 2)
    named = await describe(client, ["missing", "known"])
    assert shape(named) == [("known", 0, [0, 1]), ("missing", ErrorCode.unknown_topic_or_partition, [])]
    invalid = await describe(client, ["known"], cursor=("elsewhere", 0))
    assert shape(invalid) == [("known", ErrorCode.invalid_request, [])]
