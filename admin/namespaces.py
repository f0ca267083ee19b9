"""Namespace endpoints (broker/namespaces.py, docs/security.md): list, create, describe (its topics and ACLs),
change the defaults of, and delete namespaces, and grant ACLs for all of a namespace's topics (or groups) at
once. `lodestream namespaces` is their client. Changes go through the active controller (UpdateAdminRecords);
the REST API has authorized the caller first (DESCRIBE on the cluster to read, ALTER to change: admin/auth.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from lodestream.admin.errors import KAFKA_BAD_REQUEST, ApiError, commit_admin_records
from lodestream.broker.authorizer import (Acl, Operation, PatternType, Permission, ResourceType, acl_of, acl_problem,
                                          acl_record)
from lodestream.broker.namespaces import check_definition, namespace_acls, prefix, topics_in
from lodestream.consensus.records import NamespaceRecord, RemoveAclRecord, RemoveNamespaceRecord

NamespaceName = Path(description="Namespace name: its topics are named <name>.*")


class NamespaceAclData(BaseModel):
    resource_type: str = Field(description="TOPIC or GROUP")
    principal: str
    host: str
    operation: str
    permission: str


class NamespaceData(BaseModel):
    kind: str
    name: str
    prefix: str
    defaults: dict[str, str]
    topics: list[str]
    acls: list[NamespaceAclData]


class NamespaceDataList(BaseModel):
    kind: str
    data: list[NamespaceData]


class CreateNamespaceRequest(BaseModel):
    name: str
    defaults: dict[str, str] = Field(default_factory=dict,
                                     description="topic configs (retention.ms, ...) and num.partitions")


class UpdateDefaultsRequest(BaseModel):
    defaults: dict[str, str]


class GrantRequest(BaseModel):
    principal: str = Field(description="e.g. User:alice")
    operations: list[str] = Field(description="READ, WRITE, DESCRIBE, ALL, ...")
    permission: str = "ALLOW"
    host: str = "*"
    resource_types: list[str] = Field(default_factory=lambda: ["TOPIC"], description="TOPIC and/or GROUP")


def add_routes(api: APIRouter, broker) -> None:
    def namespace_data(record: NamespaceRecord) -> dict:
        acls = [acl_of(a) for a in namespace_acls(broker.image.acls, record.name).values()]
        return {"kind": "LodestreamNamespace", "name": record.name, "prefix": prefix(record.name),
                "defaults": dict(record.defaults), "topics": topics_in(broker.image, record.name),
                "acls": [{"resource_type": ResourceType(a.resource_type).name, "principal": a.principal,
                          "host": a.host, "operation": Operation(a.operation).name,
                          "permission": Permission(a.permission).name} for a in sorted(acls)]}

    def existing(name: str) -> NamespaceRecord:
        record = broker.image.namespaces.get(name)
        if record is None:
            raise ApiError(404, 404, f"Namespace {name} cannot be found.")
        return record

    def checked(name: str, defaults: dict[str, str]) -> NamespaceRecord:
        try:
            check_definition(name, defaults)
        except ValueError as exc:
            raise ApiError(400, KAFKA_BAD_REQUEST, str(exc)) from None
        return NamespaceRecord(name, tuple(sorted(defaults.items())))

    @api.get("/namespaces", response_model=NamespaceDataList, tags=["Namespace"], summary="List namespaces")
    async def list_namespaces():
        return {"kind": "LodestreamNamespaceList",
                "data": [namespace_data(r) for _, r in sorted(broker.image.namespaces.items())]}

    @api.post("/namespaces", response_model=NamespaceData, status_code=201, tags=["Namespace"],
              summary="Create a namespace")
    async def create_namespace(body: CreateNamespaceRequest):
        if body.name in broker.image.namespaces:
            raise ApiError(400, KAFKA_BAD_REQUEST, f"Namespace {body.name} already exists.")
        record = checked(body.name, body.defaults)
        await commit_admin_records(broker, [record])
        return namespace_data(record)

    @api.get("/namespaces/{namespace_name}", response_model=NamespaceData, tags=["Namespace"],
             summary="A namespace: its defaults, topics and ACLs")
    async def get_namespace(namespace_name: str = NamespaceName):
        return namespace_data(existing(namespace_name))

    @api.put("/namespaces/{namespace_name}/defaults", response_model=NamespaceData, tags=["Namespace"],
             summary="Replace a namespace's defaults (for topics created from now on)")
    async def update_defaults(body: UpdateDefaultsRequest, namespace_name: str = NamespaceName):
        existing(namespace_name)
        record = checked(namespace_name, body.defaults)
        await commit_admin_records(broker, [record])
        return namespace_data(record)

    @api.delete("/namespaces/{namespace_name}", status_code=204, tags=["Namespace"],
                summary="Delete an empty namespace and its ACLs")
    async def delete_namespace(namespace_name: str = NamespaceName):
        existing(namespace_name)
        own = [RemoveAclRecord(acl_id) for acl_id in namespace_acls(broker.image.acls, namespace_name)]
        await commit_admin_records(broker, [RemoveNamespaceRecord(namespace_name), *own])

    @api.post("/namespaces/{namespace_name}/acls", response_model=NamespaceData, status_code=201,
              tags=["Namespace"], summary="Grant ACLs on every topic (or group) of the namespace")
    async def grant(body: GrantRequest, namespace_name: str = NamespaceName):
        record = existing(namespace_name)
        if not broker.config.get("authorizer.class.name"):
            raise ApiError(400, KAFKA_BAD_REQUEST, "ACLs are off: set authorizer.class.name (docs/security.md)")
        try:
            operations = [Operation[o.upper()] for o in body.operations]
            permission = Permission[body.permission.upper()]
            types = [ResourceType[t.upper()] for t in body.resource_types]
        except KeyError as exc:
            raise ApiError(400, KAFKA_BAD_REQUEST, f"unknown value {exc.args[0]}") from None
        acls = [Acl(resource_type, prefix(namespace_name), PatternType.PREFIXED, body.principal, body.host,
                    operation, permission) for resource_type in types for operation in operations]
        problem = next(filter(None, map(acl_problem, acls)), None)  # what CreateAcls would refuse
        if problem or not acls or not set(types) <= {ResourceType.TOPIC, ResourceType.GROUP}:
            raise ApiError(400, KAFKA_BAD_REQUEST, problem or "operations and resource types (TOPIC, GROUP) "
                                                              "are needed")
        have = {acl_of(a) for a in broker.image.acls.values()}
        records = [acl_record(acl) for acl in dict.fromkeys(acls) if acl not in have]
        if records:
            await commit_admin_records(broker, records)
        return namespace_data(record)
