"""The REST API: a FastAPI app over one Broker, shaped like Confluent REST Proxy v3.

`create_app(broker)` builds it. Every operation calls the broker's services
(Broker.create_topic / delete_topic / create_partitions / alter_topic_configs /
alter_broker_configs, broker.append for records, the group coordinator for
groups) or reads the metadata image: the same code paths as the Kafka handlers,
never storage. Handlers are `async def` and run on the broker's trio loop (no
thread pool), like the Kafka handlers.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi_offline import FastAPIOffline
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse

from lodestream.broker.broker import TopicSpec
from lodestream.broker.config import (
    BROKER_CONFIGS,
    TOPIC_CONFIGS,
    broker_config_synonyms,
    describe_topic_config,
    effective_broker_value,
    listed_broker_config,
)
from lodestream.protocol.errors import ErrorCode, KafkaError

from lodestream.admin import errors, groups, namespaces, offset_snapshots, tiering
from lodestream.admin.auth import Authenticator, authorized_names, require
from lodestream.broker.authorizer import CLUSTER_NAME, Action, Operation, ResourceType
from lodestream.admin.errors import KAFKA_BAD_REQUEST, PARTITION_NOT_FOUND, UNKNOWN_TOPIC_OR_PARTITION, ApiError
from lodestream.admin.links import Links
from lodestream.admin.metrics import render_metrics
from lodestream.admin.models import (
    AlterConfigBatchRequest,
    BrokerConfigData,
    BrokerConfigDataList,
    BrokerData,
    BrokerDataList,
    ClusterConfigData,
    ClusterConfigDataList,
    ClusterData,
    ClusterDataList,
    CreateTopicRequest,
    ErrorData,
    HealthData,
    PartitionData,
    PartitionDataList,
    ProduceRequest,
    ProduceResponse,
    ReadyData,
    ReplicaData,
    ReplicaDataList,
    TopicConfigData,
    TopicConfigDataList,
    TopicData,
    TopicDataList,
    UpdateConfigRequest,
    UpdatePartitionCountRequest,
)
from lodestream.admin.produce import produce
from lodestream.broker.internal_topics import INTERNAL_TOPICS


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorData, "description": "Bad input (400, naming the field), authentication (401), "
                                                "not found (404: error_code 40403 for an unknown topic or partition)"},
    "5XX": {"model": ErrorData, "description": "A fault of the broker"},
}

# Swagger UI's and ReDoc's JavaScript and CSS for /docs and /redoc, open without authentication like those pages.
DOCS_ASSETS = "/docs/assets"

ClusterId = Path(description="The cluster id (GET /v3/clusters lists it)")
TopicName = Path(description="Topic name")
ConfigName = Path(description="Config name")


def create_app(broker, authenticator: Authenticator | None = None) -> FastAPI:
    if authenticator is None:
        authenticator = Authenticator.for_broker(broker)
    app = FastAPIOffline(  # /docs and /redoc with their assets served from the fastapi-offline package, no CDN
        static_url=DOCS_ASSETS,
        title="Lodestream REST API",
        version="3.0.0",
        description="Kafka cluster administration and record production over HTTP, shaped like Confluent "
                    "REST Proxy v3. Errors are `{error_code, message}`.",
        responses=ERROR_RESPONSES,
    )
    app.state.broker = broker
    errors.install(app)
    secured = authenticator.dependencies(broker)  # who, then may they (admin/auth.py)

    # -- health ----------------------------------------------------------------------------------
    @app.get("/health", response_model=HealthData, tags=["Health"], summary="The process is up")
    async def health():
        return {"status": "UP"}

    @app.get("/ready", response_model=ReadyData, tags=["Health"],
             summary="Metadata loaded and Kafka listeners bound (503 otherwise)",
             responses={503: {"model": ErrorData, "description": "Not ready yet"}})
    async def ready():
        problems = []
        quorum = getattr(broker, "quorum", None)
        if quorum is None:
            problems.append("metadata not loaded")
        elif quorum.leader < 0:
            problems.append("no metadata quorum leader")
        if not broker.bound_listeners:
            problems.append("Kafka listeners not bound")
        failure = getattr(broker.replicas, "log_dir_failure", None)
        if failure is not None:
            problems.append(f"log directory {broker.data_dir} failed (appends are refused): {failure}")
        if problems:
            raise ApiError(503, 503, "; ".join(problems))
        return {"status": "READY", "cluster_id": broker.cluster_id, "node_id": broker.node_id,
                "listeners": {b.name: f"{b.advertised_host}:{b.advertised_port}" for b in broker.bound_listeners}}

    # -- Prometheus metrics (admin/metrics.py; names in docs/metrics.md) --------------------------
    @app.get("/metrics", tags=["Metrics"], dependencies=secured, response_class=PlainTextResponse,
             summary="Prometheus metrics (text exposition format)")
    async def metrics():
        body, content_type = render_metrics(broker)  # on the trio thread: scrape-time gauges read broker state
        return Response(content=body, media_type=content_type)

    # -- clusters --------------------------------------------------------------------------------
    top = APIRouter(prefix="/v3", dependencies=secured, tags=["Cluster"])

    @top.get("/clusters", response_model=ClusterDataList, summary="List clusters (this one)")
    async def list_clusters(request: Request):
        links = Links(request, broker)
        return {"kind": "KafkaClusterList", "metadata": {"self": links.url("/v3/clusters"), "next": None},
                "data": [_cluster(links)]}

    async def check_cluster(cluster_id: str = ClusterId) -> None:
        if cluster_id != broker.cluster_id:
            raise ApiError(404, 404, f"Cluster {cluster_id} cannot be found.")

    api = APIRouter(prefix="/v3/clusters/{cluster_id}", dependencies=[*secured, Depends(check_cluster)])

    @api.get("", response_model=ClusterData, tags=["Cluster"], summary="Get the cluster")
    async def get_cluster(request: Request):
        return _cluster(Links(request, broker))

    # -- brokers ---------------------------------------------------------------------------------
    def broker_or_404(broker_id: int) -> None:
        if broker_id != broker.node_id:
            raise ApiError(404, 404, f"Broker {broker_id} cannot be found.")

    def broker_data(links: Links) -> dict:
        listener = broker.bound_listeners[0] if broker.bound_listeners else None
        base = f"/brokers/{broker.node_id}"
        return {"kind": "KafkaBroker", "metadata": links.meta(base, f"broker={broker.node_id}"),
                "cluster_id": broker.cluster_id, "broker_id": broker.node_id,
                "host": listener.advertised_host if listener else None,
                "port": listener.advertised_port if listener else None, "rack": None,
                "configs": links.rel(base + "/configs"), "partition_replicas": links.rel(base + "/partition-replicas")}

    @api.get("/brokers", response_model=BrokerDataList, tags=["Broker"], summary="List brokers")
    async def list_brokers(request: Request):
        links = Links(request, broker)
        return links.collection("KafkaBrokerList", "/brokers", [broker_data(links)])

    @api.get("/brokers/{broker_id}", response_model=BrokerData, tags=["Broker"], summary="Get a broker")
    async def get_broker(request: Request, broker_id: int):
        broker_or_404(broker_id)
        return broker_data(Links(request, broker))

    @api.get("/brokers/{broker_id}/partition-replicas", response_model=ReplicaDataList, tags=["Broker"],
             summary="The partition replicas a broker hosts")
    async def broker_replicas(request: Request, broker_id: int):
        broker_or_404(broker_id)
        links = Links(request, broker)
        data = [replica_data(links, topic.name, partition, broker_id)
                for topic in sorted(broker.image.topics_by_name.values(), key=lambda t: t.name)
                for _, partition in sorted(topic.partitions.items()) if broker_id in partition.replicas]
        return links.collection("KafkaReplicaList", f"/brokers/{broker_id}/partition-replicas", data)

    # -- broker configs --------------------------------------------------------------------------
    def broker_config(links: Links, broker_id: int, key: str) -> dict | None:
        definition = BROKER_CONFIGS[key]
        value, source = effective_broker_value(broker.config, broker.image.broker_configs, broker.node_id, key)
        if not listed_broker_config(key, value, source):
            return None
        synonyms = broker_config_synonyms(key, broker.config, broker.image.broker_configs, broker.node_id, True)
        source = synonyms[0][2] if synonyms else "DEFAULT_CONFIG"
        path = f"/brokers/{broker_id}/configs/{key}"
        return {"kind": "KafkaBrokerConfig", "metadata": links.meta(path, f"broker={broker_id}/config={key}"),
                "cluster_id": broker.cluster_id, "broker_id": broker_id,
                **_config_fields(key, value, source, definition.read_only, definition.sensitive, synonyms)}

    @api.get("/brokers/{broker_id}/configs", response_model=BrokerConfigDataList, tags=["Configs"],
             summary="List a broker's configs")
    async def list_broker_configs(request: Request, broker_id: int):
        broker_or_404(broker_id)
        links = Links(request, broker)
        data = [entry for key in sorted(BROKER_CONFIGS) if (entry := broker_config(links, broker_id, key))]
        return links.collection("KafkaBrokerConfigList", f"/brokers/{broker_id}/configs", data)

    @api.get("/brokers/{broker_id}/configs/{name}", response_model=BrokerConfigData, tags=["Configs"],
             summary="Get a broker config")
    async def get_broker_config(request: Request, broker_id: int, name: str = ConfigName):
        broker_or_404(broker_id)
        entry = broker_config(Links(request, broker), broker_id, name) if name in BROKER_CONFIGS else None
        if entry is None:
            raise ApiError(404, 404, f"Config {name} cannot be found for broker {broker_id}.")
        return entry

    @api.put("/brokers/{broker_id}/configs/{name}", status_code=204, tags=["Configs"],
             summary="Set a dynamic broker config")
    async def update_broker_config(request: Request, broker_id: int, body: UpdateConfigRequest, name: str = ConfigName):
        broker_or_404(broker_id)
        await _alter(broker.alter_broker_configs(str(broker_id), {name: body.value}, False, False,
                                                 session=request.state.session))
        return Response(status_code=204)

    @api.delete("/brokers/{broker_id}/configs/{name}", status_code=204, tags=["Configs"],
                summary="Reset a dynamic broker config to its static or default value")
    async def reset_broker_config(request: Request, broker_id: int, name: str = ConfigName):
        broker_or_404(broker_id)
        await _alter(broker.alter_broker_configs(str(broker_id), {name: None}, False, False,
                                                 session=request.state.session))
        return Response(status_code=204)

    @api.post("/brokers/{broker_id}/configs:alter", status_code=204, tags=["Configs"],
              summary="Set or reset several dynamic broker configs at once")
    async def alter_broker_configs(request: Request, broker_id: int, body: AlterConfigBatchRequest):
        broker_or_404(broker_id)
        await _alter(broker.alter_broker_configs(str(broker_id), _changes(body), False, body.validate_only,
                                                 session=request.state.session))
        return Response(status_code=204)

    def cluster_config(links: Links, key: str) -> dict | None:
        defaults = broker.image.broker_configs.get("", {})
        if key not in defaults or key not in BROKER_CONFIGS:
            return None
        definition = BROKER_CONFIGS[key]
        synonyms = broker_config_synonyms(key, broker.config, broker.image.broker_configs, broker.node_id, False)
        source = synonyms[0][2] if synonyms else "DYNAMIC_DEFAULT_BROKER_CONFIG"
        return {"kind": "KafkaClusterConfig", "metadata": links.meta(f"/broker-configs/{key}", f"broker-config={key}"),
                "cluster_id": broker.cluster_id, "config_type": "BROKER",
                **_config_fields(key, defaults[key], source, definition.read_only, definition.sensitive, synonyms)}

    @api.get("/broker-configs", response_model=ClusterConfigDataList, tags=["Configs"],
             summary="List the cluster-wide dynamic broker configs")
    async def list_cluster_configs(request: Request):
        links = Links(request, broker)
        keys = sorted(broker.image.broker_configs.get("", {}))
        return links.collection("KafkaClusterConfigList", "/broker-configs",
                                [entry for key in keys if (entry := cluster_config(links, key))])

    @api.get("/broker-configs/{name}", response_model=ClusterConfigData, tags=["Configs"],
             summary="Get a cluster-wide dynamic broker config")
    async def get_cluster_config(request: Request, name: str = ConfigName):
        entry = cluster_config(Links(request, broker), name)
        if entry is None:
            raise ApiError(404, 404, f"Config {name} cannot be found for cluster {broker.cluster_id}.")
        return entry

    @api.put("/broker-configs/{name}", status_code=204, tags=["Configs"],
             summary="Set a cluster-wide dynamic broker config")
    async def update_cluster_config(request: Request, body: UpdateConfigRequest, name: str = ConfigName):
        await _alter(broker.alter_broker_configs("", {name: body.value}, False, False, session=request.state.session))
        return Response(status_code=204)

    @api.delete("/broker-configs/{name}", status_code=204, tags=["Configs"],
                summary="Remove a cluster-wide dynamic broker config")
    async def reset_cluster_config(request: Request, name: str = ConfigName):
        await _alter(broker.alter_broker_configs("", {name: None}, False, False, session=request.state.session))
        return Response(status_code=204)

    @api.post("/broker-configs:alter", status_code=204, tags=["Configs"],
              summary="Set or remove several cluster-wide dynamic broker configs at once")
    async def alter_cluster_configs(request: Request, body: AlterConfigBatchRequest):
        await _alter(broker.alter_broker_configs("", _changes(body), False, body.validate_only,
                                                 session=request.state.session))
        return Response(status_code=204)

    # -- topics ----------------------------------------------------------------------------------
    def topic_or_404(name: str):
        topic = broker.image.topic(name)
        if topic is None:
            raise ApiError(404, UNKNOWN_TOPIC_OR_PARTITION,
                           f"This server does not host this topic-partition: topic '{name}' does not exist.")
        return topic

    def topic_data(links: Links, name: str, partitions: int, replication_factor: int) -> dict:
        base = f"/topics/{name}"
        return {"kind": "KafkaTopic", "metadata": links.meta(base, f"topic={name}"),
                "cluster_id": broker.cluster_id, "topic_name": name, "is_internal": name in INTERNAL_TOPICS,
                "replication_factor": replication_factor, "partitions_count": partitions,
                "partitions": links.rel(base + "/partitions"), "configs": links.rel(base + "/configs")}

    def existing_topic_data(links: Links, topic) -> dict:
        factor = max((len(p.replicas) for p in topic.partitions.values()), default=0)
        return topic_data(links, topic.name, len(topic.partitions), factor)

    @api.get("/topics", response_model=TopicDataList, tags=["Topic"], summary="List topics")
    async def list_topics(request: Request):
        links = Links(request, broker)
        visible = authorized_names(request, broker, Operation.DESCRIBE, ResourceType.TOPIC, broker.image.topics_by_name)
        topics = sorted((t for t in broker.image.topics_by_name.values() if t.name in visible), key=lambda t: t.name)
        return links.collection("KafkaTopicList", "/topics", [existing_topic_data(links, t) for t in topics])

    @api.post("/topics", response_model=TopicData, status_code=201, tags=["Topic"], summary="Create a topic")
    async def create_topic(request: Request, body: CreateTopicRequest):
        require(request, broker, Action(Operation.CREATE, ResourceType.CLUSTER, CLUSTER_NAME),
                Action(Operation.CREATE, ResourceType.TOPIC, body.topic_name))  # as CreateTopics asks
        spec = TopicSpec(
            name=body.topic_name,
            num_partitions=-1 if body.partitions_count is None else body.partitions_count,
            replication_factor=-1 if body.replication_factor is None else body.replication_factor,
            assignments={a.partition_id: list(a.broker_ids) for a in body.replicas_assignments},
            configs={c.name: c.value for c in body.configs},
        )
        if len(spec.assignments) != len(body.replicas_assignments):
            raise ApiError(400, KAFKA_BAD_REQUEST, "replicas_assignments: a partition_id appears more than once")
        try:
            created = await broker.create_topic(spec, validate_only=body.validate_only)
        except KafkaError as exc:
            raise _named(exc, _CREATE_FIELDS) from None
        links = Links(request, broker)
        if created is not None:
            return existing_topic_data(links, created)
        partitions = len(spec.assignments) or (
            spec.num_partitions if spec.num_partitions != -1 else int(broker.broker_config_value("num.partitions")))
        return topic_data(links, spec.name, partitions, 1)

    @api.get("/topics/{topic_name}", response_model=TopicData, tags=["Topic"], summary="Get a topic")
    async def get_topic(request: Request, topic_name: str = TopicName):
        return existing_topic_data(Links(request, broker), topic_or_404(topic_name))

    @api.patch("/topics/{topic_name}", response_model=TopicData, tags=["Topic"],
               summary="Increase a topic's partition count")
    async def update_partition_count(request: Request, body: UpdatePartitionCountRequest,
                                     topic_name: str = TopicName):
        topic_or_404(topic_name)
        try:
            await broker.create_partitions(topic_name, body.partitions_count, None, False)
        except KafkaError as exc:
            raise _named(exc, {ErrorCode.invalid_partitions: "partitions_count"}) from None
        return existing_topic_data(Links(request, broker), topic_or_404(topic_name))

    @api.delete("/topics/{topic_name}", status_code=204, tags=["Topic"], summary="Delete a topic")
    async def delete_topic(topic_name: str = TopicName):
        await broker.delete_topic(topic_or_404(topic_name))
        return Response(status_code=204)

    # -- partitions and replicas -----------------------------------------------------------------
    def partition_or_404(topic, partition_id: int):
        partition = topic.partitions.get(partition_id)
        if partition is None:
            raise ApiError(404, PARTITION_NOT_FOUND,
                           f"This server does not host this topic-partition: {topic.name}-{partition_id}")
        return partition

    def partition_data(links: Links, topic, partition) -> dict:
        base = f"/topics/{topic.name}/partitions/{partition.partition}"
        hosted = broker.replicas.get(topic.topic_id, partition.partition) if broker.replicas else None
        leader = partition.leader if partition.leader >= 0 else None
        return {"kind": "KafkaPartition", "metadata": links.meta(base, f"topic={topic.name}/partition={partition.partition}"),
                "cluster_id": broker.cluster_id, "topic_name": topic.name, "partition_id": partition.partition,
                "leader": links.rel(f"{base}/replicas/{leader}") if leader is not None else None,
                "replicas": links.rel(base + "/replicas"), "leader_id": leader,
                "replica_ids": list(partition.replicas), "isr_ids": list(_isr(partition)),
                "earliest_offset": hosted.log_start_offset if hosted else None,
                "latest_offset": hosted.high_watermark if hosted else None,
                "size_bytes": hosted.size_bytes if hosted else None,
                "segment_count": hosted.segment_count if hosted else None}

    def replica_data(links: Links, topic_name: str, partition, broker_id: int) -> dict:
        path = f"/topics/{topic_name}/partitions/{partition.partition}/replicas/{broker_id}"
        return {"kind": "KafkaReplica",
                "metadata": links.meta(path, f"topic={topic_name}/partition={partition.partition}/replica={broker_id}"),
                "cluster_id": broker.cluster_id, "topic_name": topic_name, "partition_id": partition.partition,
                "broker_id": broker_id, "is_leader": partition.leader == broker_id,
                "is_in_sync": broker_id in _isr(partition), "broker": links.rel(f"/brokers/{broker_id}")}

    @api.get("/topics/{topic_name}/partitions", response_model=PartitionDataList, tags=["Partition"],
             summary="List a topic's partitions with leader, replicas, ISR and offsets")
    async def list_partitions(request: Request, topic_name: str = TopicName):
        topic = topic_or_404(topic_name)
        links = Links(request, broker)
        return links.collection("KafkaPartitionList", f"/topics/{topic_name}/partitions",
                                [partition_data(links, topic, p) for _, p in sorted(topic.partitions.items())])

    @api.get("/topics/{topic_name}/partitions/{partition_id}", response_model=PartitionData, tags=["Partition"],
             summary="Get a partition")
    async def get_partition(request: Request, partition_id: int, topic_name: str = TopicName):
        topic = topic_or_404(topic_name)
        return partition_data(Links(request, broker), topic, partition_or_404(topic, partition_id))

    @api.get("/topics/{topic_name}/partitions/{partition_id}/replicas", response_model=ReplicaDataList,
             tags=["Partition"], summary="List a partition's replicas")
    async def list_replicas(request: Request, partition_id: int, topic_name: str = TopicName):
        topic = topic_or_404(topic_name)
        partition = partition_or_404(topic, partition_id)
        links = Links(request, broker)
        return links.collection("KafkaReplicaList", f"/topics/{topic_name}/partitions/{partition_id}/replicas",
                                [replica_data(links, topic.name, partition, b) for b in partition.replicas])

    @api.get("/topics/{topic_name}/partitions/{partition_id}/replicas/{broker_id}", response_model=ReplicaData,
             tags=["Partition"], summary="Get a partition replica")
    async def get_replica(request: Request, partition_id: int, broker_id: int, topic_name: str = TopicName):
        topic = topic_or_404(topic_name)
        partition = partition_or_404(topic, partition_id)
        if broker_id not in partition.replicas:
            raise ApiError(404, 404, f"Replica {broker_id} of {topic_name}-{partition_id} cannot be found.")
        return replica_data(Links(request, broker), topic.name, partition, broker_id)

    # -- topic configs ---------------------------------------------------------------------------
    def topic_config(links: Links, topic, key: str) -> dict:
        view = describe_topic_config(key, topic.configs, broker.config, broker.image.broker_configs, broker.node_id)
        path = f"/topics/{topic.name}/configs/{key}"
        return {"kind": "KafkaTopicConfig", "metadata": links.meta(path, f"topic={topic.name}/config={key}"),
                "cluster_id": broker.cluster_id, "topic_name": topic.name,
                **_config_fields(key, view.value, view.source, view.read_only, view.sensitive, view.synonyms)}

    @api.get("/topics/{topic_name}/configs", response_model=TopicConfigDataList, tags=["Configs"],
             summary="List a topic's configs")
    async def list_topic_configs(request: Request, topic_name: str = TopicName):
        topic = topic_or_404(topic_name)
        links = Links(request, broker)
        return links.collection("KafkaTopicConfigList", f"/topics/{topic_name}/configs",
                                [topic_config(links, topic, key) for key in sorted(TOPIC_CONFIGS)])

    @api.get("/topics/{topic_name}/configs/{name}", response_model=TopicConfigData, tags=["Configs"],
             summary="Get a topic config")
    async def get_topic_config(request: Request, topic_name: str = TopicName, name: str = ConfigName):
        topic = topic_or_404(topic_name)
        if name not in TOPIC_CONFIGS:
            raise ApiError(404, 404, f"Config {name} cannot be found for topic {topic_name}.")
        return topic_config(Links(request, broker), topic, name)

    @api.put("/topics/{topic_name}/configs/{name}", status_code=204, tags=["Configs"], summary="Set a topic config")
    async def update_topic_config(request: Request, body: UpdateConfigRequest, topic_name: str = TopicName,
                                  name: str = ConfigName):
        topic_or_404(topic_name)
        await _alter(broker.alter_topic_configs(topic_name, {name: body.value}, False, False,
                                                session=request.state.session))
        return Response(status_code=204)

    @api.delete("/topics/{topic_name}/configs/{name}", status_code=204, tags=["Configs"],
                summary="Reset a topic config to its default")
    async def reset_topic_config(request: Request, topic_name: str = TopicName, name: str = ConfigName):
        topic_or_404(topic_name)
        await _alter(broker.alter_topic_configs(topic_name, {name: None}, False, False, session=request.state.session))
        return Response(status_code=204)

    @api.post("/topics/{topic_name}/configs:alter", status_code=204, tags=["Configs"],
              summary="Set or reset several topic configs at once (all or nothing)")
    async def alter_topic_configs(request: Request, body: AlterConfigBatchRequest, topic_name: str = TopicName):
        topic_or_404(topic_name)
        await _alter(broker.alter_topic_configs(topic_name, _changes(body), False, body.validate_only,
                                                session=request.state.session))
        return Response(status_code=204)

    # -- records ---------------------------------------------------------------------------------
    @api.post(
        "/topics/{topic_name}/records", tags=["Records"], summary="Produce records",
        description="One JSON record, or several concatenated (streaming mode: one JSON result per line, "
                    "HTTP 200, errors per record).",
        response_model=ProduceResponse,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ProduceRequest"}}}}},
    )
    async def produce_records(request: Request, topic_name: str = TopicName):
        return await produce(request, broker, broker.cluster_id, topic_name)

    # -- consumer groups -------------------------------------------------------------------------
    groups.add_routes(api, broker)
    tiering.add_routes(api, broker)  # tiered storage (admin/tiering.py)
    namespaces.add_routes(api, broker)  # namespaces (admin/namespaces.py)
    offset_snapshots.add_routes(api, broker)  # offset snapshots and resets (admin/offset_snapshots.py)

    app.include_router(top)
    app.include_router(api)

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        produce_schema = ProduceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in produce_schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components["ProduceRequest"] = produce_schema
        _add_links(schema)
        _json_errors(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# -- helpers -------------------------------------------------------------------------------------

_CREATE_FIELDS = {
    ErrorCode.invalid_partitions: "partitions_count",
    ErrorCode.invalid_replication_factor: "replication_factor",
    ErrorCode.invalid_replica_assignment: "replicas_assignments",
    ErrorCode.invalid_config: "configs",
    ErrorCode.invalid_topic_exception: "topic_name",
    ErrorCode.topic_already_exists: "topic_name",
}


def _named(exc: KafkaError, fields: dict) -> Exception:
    """The KafkaError as an ApiError whose message starts with the request field it is about."""
    status, code = errors.kafka_error_status(exc)
    field = fields.get(exc.code)
    message = errors.kafka_error_message(exc)
    return ApiError(status, code, f"{field}: {message}" if field else message)


async def _alter(call) -> None:
    try:
        await call
    except KafkaError as exc:
        raise _named(exc, {}) from None


def _changes(body: AlterConfigBatchRequest) -> dict[str, str | None]:
    changes: dict[str, str | None] = {}
    for position, entry in enumerate(body.data):
        if entry.name in changes:
            raise ApiError(400, KAFKA_BAD_REQUEST, f"data[{position}].name: {entry.name} appears more than once")
        if entry.operation == "DELETE":
            changes[entry.name] = None
        elif entry.value is None:
            raise ApiError(400, KAFKA_BAD_REQUEST, f"data[{position}].value: required for SET")
        else:
            changes[entry.name] = entry.value
    return changes


def _add_links(schema: dict) -> None:
    """OpenAPI links from a created topic to the operations on it (for clients and stateful fuzzing)."""
    paths = schema["paths"]
    topics = "/v3/clusters/{cluster_id}/topics"
    topic = topics + "/{topic_name}"
    targets = {
        "GetTopic": (topic, "get"), "DeleteTopic": (topic, "delete"), "UpdatePartitionCount": (topic, "patch"),
        "ListPartitions": (topic + "/partitions", "get"), "ListTopicConfigs": (topic + "/configs", "get"),
        "AlterTopicConfigs": (topic + "/configs:alter", "post"), "ProduceRecords": (topic + "/records", "post"),
    }
    parameters = {"cluster_id": "$response.body#/cluster_id", "topic_name": "$response.body#/topic_name"}
    created = paths[topics]["post"]["responses"]["201"]
    created["links"] = {name: {"operationId": paths[path][method]["operationId"], "parameters": parameters}
                        for name, (path, method) in targets.items()}


def _json_errors(schema: dict) -> None:
    """Error responses are JSON {error_code, message} on every route, text ones (/metrics) included."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorData"}}}
    for operations in schema["paths"].values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    response["content"] = error


def _isr(partition) -> tuple[int, ...]:
    return tuple(getattr(partition, "isr", None) or partition.replicas)


def _config_fields(key: str, value, source: str, read_only: bool, sensitive: bool, synonyms) -> dict:
    return {
        "name": key, "value": None if sensitive else value, "is_default": source == "DEFAULT_CONFIG",
        "is_read_only": read_only, "is_sensitive": sensitive, "source": source,
        "synonyms": [{"name": n, "value": None if sensitive else v, "source": s} for n, v, s in synonyms],
    }


def _cluster(links: Links) -> dict:
    broker_id = links.broker_id
    return {"kind": "KafkaCluster", "metadata": links.meta("", ""), "cluster_id": links.cluster_id,
            "controller": links.rel(f"/brokers/{broker_id}"), "brokers": links.rel("/brokers"),
            "broker_configs": links.rel("/broker-configs"), "consumer_groups": links.rel("/consumer-groups"),
            "topics": links.rel("/topics")}
