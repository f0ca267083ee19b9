"""Request and response bodies of the REST API, shaped like Confluent REST Proxy v3.

Every resource carries `kind` and `metadata.self` (plus `resource_name`, a
`crn:///kafka=<cluster>/...` name as REST Proxy gives); related resources are
`{"related": url}` links. Lists are `{kind: "Kafka...List", metadata: {self,
next}, data: [...]}`. Errors are `{error_code, message}`.

Lodestream additions, beyond REST Proxy v3's fields: a partition's
`leader_id`, `replica_ids`, `isr_ids`, `earliest_offset`, `latest_offset`,
`size_bytes` and `segment_count`,
and a consumer group's `type` (CLASSIC or CONSUMER) and `protocol_type`.

Request bodies forbid unknown fields, so a typo ("partitions" for
"partitions_count") is a 400 naming it rather than a silently ignored field;
integers and booleans must be JSON integers and booleans ("3" or 1 for true
are 400s, not guesses).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationInfo, field_validator

# -- common -----------------------------------------------------------------------------------


class ErrorData(BaseModel):
    error_code: int = Field(description="HTTP status, or REST Proxy's five-digit code (40403: unknown topic or partition)")
    message: str | None = None


class Relationship(BaseModel):
    related: str


class ResourceMetadata(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    self_: str = Field(alias="self")
    resource_name: str | None = None


class CollectionMetadata(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    self_: str = Field(alias="self")
    next: str | None = None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- cluster and brokers ------------------------------------------------------------------------


class ClusterData(BaseModel):
    kind: Literal["KafkaCluster"] = "KafkaCluster"
    metadata: ResourceMetadata
    cluster_id: str
    controller: Relationship | None = None
    brokers: Relationship
    broker_configs: Relationship
    consumer_groups: Relationship
    topics: Relationship


class ClusterDataList(BaseModel):
    kind: Literal["KafkaClusterList"] = "KafkaClusterList"
    metadata: CollectionMetadata
    data: list[ClusterData]


class BrokerData(BaseModel):
    kind: Literal["KafkaBroker"] = "KafkaBroker"
    metadata: ResourceMetadata
    cluster_id: str
    broker_id: int
    host: str | None = None
    port: int | None = None
    rack: str | None = None
    configs: Relationship
    partition_replicas: Relationship


class BrokerDataList(BaseModel):
    kind: Literal["KafkaBrokerList"] = "KafkaBrokerList"
    metadata: CollectionMetadata
    data: list[BrokerData]


# -- configs ------------------------------------------------------------------------------------

ConfigSource = Literal[
    "DYNAMIC_TOPIC_CONFIG", "DYNAMIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG", "STATIC_BROKER_CONFIG",
    "DEFAULT_CONFIG", "UNKNOWN",
]


class ConfigSynonymData(BaseModel):
    name: str
    value: str | None = None
    source: ConfigSource


class _ConfigData(BaseModel):
    kind: str
    metadata: ResourceMetadata
    cluster_id: str
    name: str
    value: str | None = Field(None, description="null for sensitive configs")
    is_default: bool
    is_read_only: bool
    is_sensitive: bool
    source: ConfigSource
    synonyms: list[ConfigSynonymData]


class TopicConfigData(_ConfigData):
    kind: Literal["KafkaTopicConfig"] = "KafkaTopicConfig"
    topic_name: str


class TopicConfigDataList(BaseModel):
    kind: Literal["KafkaTopicConfigList"] = "KafkaTopicConfigList"
    metadata: CollectionMetadata
    data: list[TopicConfigData]


class BrokerConfigData(_ConfigData):
    kind: Literal["KafkaBrokerConfig"] = "KafkaBrokerConfig"
    broker_id: int


class BrokerConfigDataList(BaseModel):
    kind: Literal["KafkaBrokerConfigList"] = "KafkaBrokerConfigList"
    metadata: CollectionMetadata
    data: list[BrokerConfigData]


class ClusterConfigData(_ConfigData):
    kind: Literal["KafkaClusterConfig"] = "KafkaClusterConfig"
    config_type: Literal["BROKER"] = "BROKER"


class ClusterConfigDataList(BaseModel):
    kind: Literal["KafkaClusterConfigList"] = "KafkaClusterConfigList"
    metadata: CollectionMetadata
    data: list[ClusterConfigData]


class UpdateConfigRequest(_Request):
    value: str


class AlterConfigEntry(_Request):
    name: str
    value: str | None = None
    operation: Literal["SET", "DELETE"] | None = Field(None, description="SET (the default) or DELETE (reset to default)")


class AlterConfigBatchRequest(_Request):
    data: list[AlterConfigEntry]
    validate_only: StrictBool = False


# -- topics and partitions ---------------------------------------------------------------------


class TopicData(BaseModel):
    kind: Literal["KafkaTopic"] = "KafkaTopic"
    metadata: ResourceMetadata
    cluster_id: str
    topic_name: str
    is_internal: bool
    replication_factor: int
    partitions_count: int
    partitions: Relationship
    configs: Relationship


class TopicDataList(BaseModel):
    kind: Literal["KafkaTopicList"] = "KafkaTopicList"
    metadata: CollectionMetadata
    data: list[TopicData]


class CreateTopicConfig(_Request):
    name: str
    value: str | None = None


class ReplicasAssignment(_Request):
    partition_id: StrictInt = Field(ge=0, le=2**31 - 1)
    broker_ids: list[StrictInt]


class CreateTopicRequest(_Request):
    topic_name: str = Field(min_length=1, max_length=249, pattern=r"^[a-zA-Z0-9._-]+$",
                            description="ASCII alphanumerics, '.', '_' and '-' (Kafka's rule)")
    partitions_count: StrictInt | None = Field(None, ge=1, le=10_000, description="default: num.partitions")
    replication_factor: StrictInt | None = Field(None, ge=1, le=32767,
                                                 description="default: default.replication.factor")
    replicas_assignments: list[ReplicasAssignment] = []
    configs: list[CreateTopicConfig] = []
    validate_only: StrictBool = False


class UpdatePartitionCountRequest(_Request):
    partitions_count: StrictInt = Field(ge=1, le=10_000)


class PartitionData(BaseModel):
    kind: Literal["KafkaPartition"] = "KafkaPartition"
    metadata: ResourceMetadata
    cluster_id: str
    topic_name: str
    partition_id: int
    leader: Relationship | None = None
    replicas: Relationship
    leader_id: int | None = None
    replica_ids: list[int]
    isr_ids: list[int]
    earliest_offset: int | None = Field(None, description="log start offset (null if not hosted here)")
    latest_offset: int | None = Field(None, description="high watermark: the next offset to be written")
    size_bytes: int | None = Field(None, description="bytes of record batches in the log (null if not hosted here)")
    segment_count: int | None = Field(None, description="segments of the log, the last one active")


class PartitionDataList(BaseModel):
    kind: Literal["KafkaPartitionList"] = "KafkaPartitionList"
    metadata: CollectionMetadata
    data: list[PartitionData]


class ReplicaData(BaseModel):
    kind: Literal["KafkaReplica"] = "KafkaReplica"
    metadata: ResourceMetadata
    cluster_id: str
    topic_name: str
    partition_id: int
    broker_id: int
    is_leader: bool
    is_in_sync: bool
    broker: Relationship


class ReplicaDataList(BaseModel):
    kind: Literal["KafkaReplicaList"] = "KafkaReplicaList"
    metadata: CollectionMetadata
    data: list[ReplicaData]


# -- consumer groups ----------------------------------------------------------------------------


class ConsumerGroupData(BaseModel):
    kind: Literal["KafkaConsumerGroup"] = "KafkaConsumerGroup"
    metadata: ResourceMetadata
    cluster_id: str
    consumer_group_id: str
    is_simple: bool
    partition_assignor: str | None = None
    state: str
    type: str | None = Field(None, description="CLASSIC or CONSUMER (KIP-848)")
    protocol_type: str | None = None
    coordinator: Relationship
    consumers: Relationship
    lag_summary: Relationship


class ConsumerGroupDataList(BaseModel):
    kind: Literal["KafkaConsumerGroupList"] = "KafkaConsumerGroupList"
    metadata: CollectionMetadata
    data: list[ConsumerGroupData]


class ConsumerData(BaseModel):
    kind: Literal["KafkaConsumer"] = "KafkaConsumer"
    metadata: ResourceMetadata
    cluster_id: str
    consumer_group_id: str
    consumer_id: str
    instance_id: str | None = None
    client_id: str | None = None
    assignments: Relationship


class ConsumerDataList(BaseModel):
    kind: Literal["KafkaConsumerList"] = "KafkaConsumerList"
    metadata: CollectionMetadata
    data: list[ConsumerData]


class ConsumerAssignmentData(BaseModel):
    kind: Literal["KafkaConsumerAssignment"] = "KafkaConsumerAssignment"
    metadata: ResourceMetadata
    cluster_id: str
    consumer_group_id: str
    consumer_id: str
    topic_name: str
    partition_id: int
    partition: Relationship
    lag: Relationship


class ConsumerAssignmentDataList(BaseModel):
    kind: Literal["KafkaConsumerAssignmentList"] = "KafkaConsumerAssignmentList"
    metadata: CollectionMetadata
    data: list[ConsumerAssignmentData]


class ConsumerGroupLagSummaryData(BaseModel):
    kind: Literal["KafkaConsumerGroupLagSummary"] = "KafkaConsumerGroupLagSummary"
    metadata: ResourceMetadata
    cluster_id: str
    consumer_group_id: str
    max_lag_consumer_id: str
    max_lag_instance_id: str | None = None
    max_lag_client_id: str
    max_lag_topic_name: str
    max_lag_partition_id: int
    max_lag: int
    total_lag: int
    max_lag_consumer: Relationship | None = None
    max_lag_partition: Relationship | None = None


class ConsumerLagData(BaseModel):
    kind: Literal["KafkaConsumerLag"] = "KafkaConsumerLag"
    metadata: ResourceMetadata
    cluster_id: str
    consumer_group_id: str
    topic_name: str
    partition_id: int
    current_offset: int
    log_end_offset: int
    lag: int
    consumer_id: str
    instance_id: str | None = None
    client_id: str


class ConsumerLagDataList(BaseModel):
    kind: Literal["KafkaConsumerLagList"] = "KafkaConsumerLagList"
    metadata: CollectionMetadata
    data: list[ConsumerLagData]


# -- producing records -------------------------------------------------------------------------


class ProduceRequestHeader(_Request):
    name: str
    value: str | None = Field(None, description="base64")

    @field_validator("value")
    @classmethod
    def _base64(cls, value):
        if value is not None:
            decode_base64(value)
        return value


class ProduceRequestData(_Request):
    type: Literal["BINARY", "JSON", "STRING"] | None = Field(
        None, description="BINARY: data is base64; STRING: data is a string; JSON (the default): any JSON value")
    data: Any = None

    @field_validator("data")
    @classmethod
    def _data_fits_type(cls, data, info: ValidationInfo):
        kind = info.data.get("type")
        if data is None:
            return data
        if kind == "BINARY":
            if not isinstance(data, str):
                raise ValueError("BINARY data must be a base64 string")
            decode_base64(data)
        elif kind == "STRING" and not isinstance(data, str):
            raise ValueError("STRING data must be a string")
        return data


class ProduceRequest(_Request):
    partition_id: StrictInt | None = Field(None, ge=0, le=2**31 - 1,
                                     description="default: murmur2(key) like Kafka's producers, round-robin without a key")
    headers: list[ProduceRequestHeader] = []
    key: ProduceRequestData | None = None
    value: ProduceRequestData | None = None
    timestamp: datetime.datetime | None = Field(None, description="ISO 8601; default: now")

    @field_validator("timestamp", mode="before")
    @classmethod
    def _iso_string(cls, value):
        if value is not None and not isinstance(value, str):
            raise ValueError("expected an ISO 8601 date-time string")
        return value


class ProduceResponseData(BaseModel):
    type: Literal["BINARY", "JSON", "STRING"]
    size: int


class ProduceResponse(BaseModel):
    error_code: int = Field(description="200 on success; otherwise the error's code, with a message")
    message: str | None = None
    cluster_id: str | None = None
    topic_name: str | None = None
    partition_id: int | None = None
    offset: int | None = None
    timestamp: datetime.datetime | None = None
    key: ProduceResponseData | None = None
    value: ProduceResponseData | None = None


# -- health --------------------------------------------------------------------------------------


class HealthData(BaseModel):
    status: Literal["UP"] = "UP"


class ReadyData(BaseModel):
    status: Literal["READY"] = "READY"
    cluster_id: str
    node_id: int
    listeners: dict[str, str]


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
