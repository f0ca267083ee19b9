"""Lodestream's own API keys: requests between Lodestream nodes that Kafka has no API for.

They use Kafka's framing and kio's encoding, with keys from 10000 on (Kafka's own keys are below 100),
and are served only on controller listeners, so Kafka clients never meet them.

UpdateRemoteSegments (10000, v0): a partition leader asks the active controller to commit state changes
of its offloaded segments' manifests (consensus/records.RemoteSegmentRecord, KIP-405's states). The
records travel as the metadata log encodes them (consensus/records.encode_records); the controller checks
each change against the image before committing (broker/cluster_controller.update_remote_segments).

UpdateAdminRecords (10001, v0): a broker asks the active controller to commit changes made through its REST
API that only Lodestream has: namespaces (consensus/records.NamespaceRecord, RemoveNamespaceRecord, and the
namespace's PREFIXED AclRecords; checked by broker/namespaces.check_records) or offset snapshots
(OffsetSnapshotRecord, RemoveOffsetSnapshotRecord; broker/offset_snapshots.check_records), encoded the same
way. One batch is one kind.
"""


import sys
from dataclasses import dataclass, field
from typing import ClassVar

from kio.schema.errors import ErrorCode
from kio.schema.request_header.v2.header import RequestHeader
from kio.schema.response_header.v1.header import ResponseHeader
from kio.schema.types import BrokerId
from kio.static.constants import EntityType
from kio.static.primitive import i16, i64, i32Timedelta

UPDATE_REMOTE_SEGMENTS = 10000
UPDATE_ADMIN_RECORDS = 10001


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateRemoteSegmentsRequest:
    __type__: ClassVar = EntityType.request
    __version__: ClassVar[i16] = i16(0)
    __flexible__: ClassVar[bool] = True
    __api_key__: ClassVar[i16] = i16(UPDATE_REMOTE_SEGMENTS)
    __header_schema__: ClassVar[type[RequestHeader]] = RequestHeader
    broker_id: BrokerId = field(metadata={"kafka_type": "int32"})
    broker_epoch: i64 = field(metadata={"kafka_type": "int64"}, default=i64(-1))
    records: bytes = field(metadata={"kafka_type": "bytes"})
    """RemoteSegmentRecords, as consensus/records.encode_records writes them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateRemoteSegmentsResponse:
    __type__: ClassVar = EntityType.response
    __version__: ClassVar[i16] = i16(0)
    __flexible__: ClassVar[bool] = True
    __api_key__: ClassVar[i16] = i16(UPDATE_REMOTE_SEGMENTS)
    __header_schema__: ClassVar[type[ResponseHeader]] = ResponseHeader
    throttle_time: i32Timedelta = field(metadata={"kafka_type": "timedelta_i32"})
    error_code: ErrorCode = field(metadata={"kafka_type": "error_code"})
    error_message: str | None = field(metadata={"kafka_type": "string"}, default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateAdminRecordsRequest:
    __type__: ClassVar = EntityType.request
    __version__: ClassVar[i16] = i16(0)
    __flexible__: ClassVar[bool] = True
    __api_key__: ClassVar[i16] = i16(UPDATE_ADMIN_RECORDS)
    __header_schema__: ClassVar[type[RequestHeader]] = RequestHeader
    records: bytes = field(metadata={"kafka_type": "bytes"})
    """Namespace or offset snapshot records, as consensus/records.encode_records writes them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateAdminRecordsResponse:
    __type__: ClassVar = EntityType.response
    __version__: ClassVar[i16] = i16(0)
    __flexible__: ClassVar[bool] = True
    __api_key__: ClassVar[i16] = i16(UPDATE_ADMIN_RECORDS)
    __header_schema__: ClassVar[type[ResponseHeader]] = ResponseHeader
    throttle_time: i32Timedelta = field(metadata={"kafka_type": "timedelta_i32"})
    error_code: ErrorCode = field(metadata={"kafka_type": "error_code"})
    error_message: str | None = field(metadata={"kafka_type": "string"}, default=None)


# api key -> {version: (request class, response class)}
SCHEMAS = {UPDATE_REMOTE_SEGMENTS: {0: (UpdateRemoteSegmentsRequest, UpdateRemoteSegmentsResponse)},
           UPDATE_ADMIN_RECORDS: {0: (UpdateAdminRecordsRequest, UpdateAdminRecordsResponse)}}
MODULE = sys.modules[__name__]  # what MessageBuilder looks classes up in, as in a kio schema module
