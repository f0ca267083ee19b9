"""Consumer-group endpoints: groups, members with assignments, lag summary, per-partition lags.

Read from the group coordinator (broker.groups, broker/groups/coordinator.py):
`coordinator.groups` (group objects of both protocols: classic JoinGroup/SyncGroup
groups and KIP-848 consumer groups) and `coordinator.committed(group_id)`.
Lag = the partition's high watermark - the committed offset, as Kafka's
kafka-consumer-groups.sh and REST Proxy compute it; partitions without a
committed offset have no lag entry.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Path, Request

from lodestream.admin.auth import authorized_names
from lodestream.admin.errors import PARTITION_NOT_FOUND, ApiError
from lodestream.broker.authorizer import Operation, ResourceType
from lodestream.admin.links import Links
from lodestream.admin.models import (
    ConsumerAssignmentData,
    ConsumerAssignmentDataList,
    ConsumerData,
    ConsumerDataList,
    ConsumerGroupData,
    ConsumerGroupDataList,
    ConsumerGroupLagSummaryData,
    ConsumerLagData,
    ConsumerLagDataList,
)
from lodestream.protocol.consumer_protocol import assignment_partitions

GroupId = Path(description="Consumer group id")
ConsumerId = Path(description="Member id")
TopicName = Path(description="Topic name")


def _value(obj, name: str, default=None):
    value = getattr(obj, name, default)
    return value() if callable(value) else value


def rest_state(state: str | None) -> str:
    """Kafka's state name ("PreparingRebalance") as REST Proxy's enum ("PREPARING_REBALANCE")."""
    if not state:
        return "UNKNOWN"
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", state).upper()


class MemberView:
    def __init__(self, member_id: str, instance_id: str | None, client_id: str, assignments: list[tuple[str, int]]):
        self.member_id = member_id
        self.instance_id = instance_id
        self.client_id = client_id
        self.assignments = assignments


def members(group, image) -> list[MemberView]:
    result = []
    topic_names = {topic_id: topic.name for topic_id, topic in image.topics_by_id.items()}
    for member_id, member in sorted(dict(getattr(group, "members", {}) or {}).items()):
        assigned = getattr(member, "assigned", None)
        if assigned is not None:  # KIP-848 consumer group member: {topic id: partitions}
            pairs = sorted((topic_names[topic_id], p) for topic_id, parts in assigned.items()
                           if topic_id in topic_names for p in parts)
            instance_id = getattr(member, "instance_id", None)
        else:  # classic member: the assignment bytes the leader sent in SyncGroup
            pairs = sorted(assignment_partitions(getattr(member, "assignment", None))) \
                if _value(group, "protocol_type", "") == "consumer" else []
            instance_id = getattr(member, "group_instance_id", None)
        result.append(MemberView(member_id, instance_id, getattr(member, "client_id", "") or "", pairs))
    return result


def add_routes(api: APIRouter, broker) -> None:
    def coordinator():
        return getattr(broker, "groups", None)

    def live_groups() -> list:
        groups = coordinator()
        if groups is None:
            return []
        return [g for _, g in sorted(groups.groups.items()) if _value(g, "state_name") != "Dead"]

    def group_or_404(group_id: str):
        groups = coordinator()
        group = groups.groups.get(group_id) if groups is not None else None
        if group is None or _value(group, "state_name") == "Dead":
            raise ApiError(404, 404, f"Consumer group {group_id} cannot be found.")
        return group

    def group_data(links: Links, group) -> dict:
        group_id = group.group_id
        base = f"/consumer-groups/{group_id}"
        group_type = str(_value(group, "group_type", "classic") or "classic")
        assignor = _value(group, "protocol_name") if group_type == "classic" else None
        if group_type == "consumer":
            assignor = next((m.server_assignor for m in group.members.values()
                             if getattr(m, "server_assignor", None)), None)
        is_simple = bool(_value(group, "is_simple", False)) if group_type == "classic" else False
        return {"kind": "KafkaConsumerGroup", "metadata": links.meta(base, f"consumer-group={group_id}"),
                "cluster_id": broker.cluster_id, "consumer_group_id": group_id, "is_simple": is_simple,
                "partition_assignor": assignor or "", "state": rest_state(_value(group, "state_name")),
                "type": group_type.upper(), "protocol_type": _value(group, "protocol_type", "") or "",
                "coordinator": links.rel(f"/brokers/{broker.node_id}"), "consumers": links.rel(base + "/consumers"),
                "lag_summary": links.rel(base + "/lag-summary")}

    def consumer_data(links: Links, group_id: str, member: MemberView) -> dict:
        path = f"/consumer-groups/{group_id}/consumers/{member.member_id}"
        return {"kind": "KafkaConsumer",
                "metadata": links.meta(path, f"consumer-group={group_id}/consumer={member.member_id}"),
                "cluster_id": broker.cluster_id, "consumer_group_id": group_id, "consumer_id": member.member_id,
                "instance_id": member.instance_id, "client_id": member.client_id,
                "assignments": links.rel(path + "/assignments")}

    def assignment_data(links: Links, group_id: str, member: MemberView, topic: str, partition: int) -> dict:
        path = f"/consumer-groups/{group_id}/consumers/{member.member_id}/assignments/{topic}/partitions/{partition}"
        return {"kind": "KafkaConsumerAssignment",
                "metadata": links.meta(path, f"consumer-group={group_id}/consumer={member.member_id}"
                                             f"/assignment={topic}/partition={partition}"),
                "cluster_id": broker.cluster_id, "consumer_group_id": group_id, "consumer_id": member.member_id,
                "topic_name": topic, "partition_id": partition,
                "partition": links.rel(f"/topics/{topic}/partitions/{partition}"),
                "lag": links.rel(f"/consumer-groups/{group_id}/lags/{topic}/partitions/{partition}")}

    def member_or_404(group, consumer_id: str) -> MemberView:
        for member in members(group, broker.image):
            if member.member_id == consumer_id:
                return member
        raise ApiError(404, 404, f"Consumer {consumer_id} cannot be found in group {group.group_id}.")

    def lags(links: Links, group) -> list[dict]:
        image = broker.image
        owners = {pair: m for m in members(group, image) for pair in m.assignments}
        result = []
        committed: dict[tuple[str, int], Any] = coordinator().committed(group.group_id)
        for (topic_name, partition), offset in sorted(committed.items()):
            current = int(getattr(offset, "offset", offset))
            topic = image.topic(topic_name)
            if topic is None or current < 0:
                continue
            hosted = broker.replicas.get(topic.topic_id, partition)
            if hosted is None:
                continue
            end = hosted.high_watermark
            owner = owners.get((topic_name, partition))
            path = f"/consumer-groups/{group.group_id}/lags/{topic_name}/partitions/{partition}"
            result.append({
                "kind": "KafkaConsumerLag",
                "metadata": links.meta(path, f"consumer-group={group.group_id}/lag={topic_name}/partition={partition}"),
                "cluster_id": broker.cluster_id, "consumer_group_id": group.group_id, "topic_name": topic_name,
                "partition_id": partition, "current_offset": current, "log_end_offset": end,
                "lag": max(end - current, 0), "consumer_id": owner.member_id if owner else "",
                "instance_id": owner.instance_id if owner else None, "client_id": owner.client_id if owner else ""})
        return result

    @api.get("/consumer-groups", response_model=ConsumerGroupDataList, tags=["Consumer Group"],
             summary="List consumer groups")
    async def list_groups(request: Request):
        links = Links(request, broker)
        groups = live_groups()
        visible = authorized_names(request, broker, Operation.DESCRIBE, ResourceType.GROUP,
                                   [g.group_id for g in groups])
        return links.collection("KafkaConsumerGroupList", "/consumer-groups",
                                [group_data(links, g) for g in groups if g.group_id in visible])

    @api.get("/consumer-groups/{consumer_group_id}", response_model=ConsumerGroupData, tags=["Consumer Group"],
             summary="Get a consumer group")
    async def get_group(request: Request, consumer_group_id: str = GroupId):
        return group_data(Links(request, broker), group_or_404(consumer_group_id))

    @api.get("/consumer-groups/{consumer_group_id}/consumers", response_model=ConsumerDataList,
             tags=["Consumer Group"], summary="List a group's members")
    async def list_consumers(request: Request, consumer_group_id: str = GroupId):
        group = group_or_404(consumer_group_id)
        links = Links(request, broker)
        return links.collection("KafkaConsumerList", f"/consumer-groups/{consumer_group_id}/consumers",
                                [consumer_data(links, consumer_group_id, m) for m in members(group, broker.image)])

    @api.get("/consumer-groups/{consumer_group_id}/consumers/{consumer_id}", response_model=ConsumerData,
             tags=["Consumer Group"], summary="Get a group member")
    async def get_consumer(request: Request, consumer_group_id: str = GroupId, consumer_id: str = ConsumerId):
        member = member_or_404(group_or_404(consumer_group_id), consumer_id)
        return consumer_data(Links(request, broker), consumer_group_id, member)

    @api.get("/consumer-groups/{consumer_group_id}/consumers/{consumer_id}/assignments",
             response_model=ConsumerAssignmentDataList, tags=["Consumer Group"],
             summary="List a member's assigned partitions")
    async def list_assignments(request: Request, consumer_group_id: str = GroupId, consumer_id: str = ConsumerId):
        member = member_or_404(group_or_404(consumer_group_id), consumer_id)
        links = Links(request, broker)
        return links.collection(
            "KafkaConsumerAssignmentList", f"/consumer-groups/{consumer_group_id}/consumers/{consumer_id}/assignments",
            [assignment_data(links, consumer_group_id, member, t, p) for t, p in member.assignments])

    @api.get("/consumer-groups/{consumer_group_id}/consumers/{consumer_id}/assignments/{topic_name}"
             "/partitions/{partition_id}", response_model=ConsumerAssignmentData, tags=["Consumer Group"],
             summary="Get one assigned partition of a member")
    async def get_assignment(request: Request, partition_id: int, consumer_group_id: str = GroupId,
                             consumer_id: str = ConsumerId, topic_name: str = TopicName):
        member = member_or_404(group_or_404(consumer_group_id), consumer_id)
        if (topic_name, partition_id) not in member.assignments:
            raise ApiError(404, PARTITION_NOT_FOUND,
                           f"{topic_name}-{partition_id} is not assigned to {consumer_id}.")
        return assignment_data(Links(request, broker), consumer_group_id, member, topic_name, partition_id)

    @api.get("/consumer-groups/{consumer_group_id}/lag-summary", response_model=ConsumerGroupLagSummaryData,
             tags=["Consumer Group"], summary="Max and total lag of a group")
    async def lag_summary(request: Request, consumer_group_id: str = GroupId):
        group = group_or_404(consumer_group_id)
        links = Links(request, broker)
        entries = lags(links, group)
        worst = max(entries, key=lambda e: e["lag"], default=None)
        path = f"/consumer-groups/{consumer_group_id}/lag-summary"
        body = {"kind": "KafkaConsumerGroupLagSummary",
                "metadata": links.meta(path, f"consumer-group={consumer_group_id}/lag-summary"),
                "cluster_id": broker.cluster_id, "consumer_group_id": consumer_group_id,
                "total_lag": sum(e["lag"] for e in entries), "max_lag": worst["lag"] if worst else 0,
                "max_lag_consumer_id": worst["consumer_id"] if worst else "",
                "max_lag_instance_id": worst["instance_id"] if worst else None,
                "max_lag_client_id": worst["client_id"] if worst else "",
                "max_lag_topic_name": worst["topic_name"] if worst else "",
                "max_lag_partition_id": worst["partition_id"] if worst else -1,
                "max_lag_consumer": None, "max_lag_partition": None}
        if worst:
            if worst["consumer_id"]:
                body["max_lag_consumer"] = links.rel(f"/consumer-groups/{consumer_group_id}/consumers/"
                                                     f"{worst['consumer_id']}")
            body["max_lag_partition"] = links.rel(f"/topics/{worst['topic_name']}/partitions/{worst['partition_id']}")
        return body

    @api.get("/consumer-groups/{consumer_group_id}/lags", response_model=ConsumerLagDataList,
             tags=["Consumer Group"], summary="Lag of every partition the group has committed offsets for")
    async def list_lags(request: Request, consumer_group_id: str = GroupId):
        group = group_or_404(consumer_group_id)
        links = Links(request, broker)
        return links.collection("KafkaConsumerLagList", f"/consumer-groups/{consumer_group_id}/lags",
                                lags(links, group))

    @api.get("/consumer-groups/{consumer_group_id}/lags/{topic_name}/partitions/{partition_id}",
             response_model=ConsumerLagData, tags=["Consumer Group"], summary="Lag of one partition")
    async def get_lag(request: Request, partition_id: int, consumer_group_id: str = GroupId,
                      topic_name: str = TopicName):
        group = group_or_404(consumer_group_id)
        for entry in lags(Links(request, broker), group):
            if entry["topic_name"] == topic_name and entry["partition_id"] == partition_id:
                return entry
        raise ApiError(404, 404, f"Consumer group {consumer_group_id} has no committed offset for "
                                 f"{topic_name}-{partition_id}.")
