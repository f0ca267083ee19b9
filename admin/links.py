"""`metadata.self`, `resource_name` and `{related: url}` links of REST Proxy v3 resources."""

from __future__ import annotations

from starlette.requests import Request


class Links:
    def __init__(self, request: Request, broker) -> None:
        self.cluster_id = broker.cluster_id
        self.broker_id = broker.node_id
        self.root = str(request.base_url).rstrip("/")
        self.base = f"{self.root}/v3/clusters/{self.cluster_id}"

    def url(self, path: str) -> str:
        return self.root + path

    def rel(self, path: str) -> dict:
        """{"related": url} for a path under /v3/clusters/{cluster_id}."""
        return {"related": self.base + path}

    def meta(self, path: str, resource: str) -> dict:
        name = f"crn:///kafka={self.cluster_id}" + (f"/{resource}" if resource else "")
        return {"self": self.base + path, "resource_name": name}

    def collection(self, kind: str, path: str, data: list) -> dict:
        return {"kind": kind, "metadata": {"self": self.base + path, "next": None}, "data": data}
