"""Tiered-storage endpoints (docs/tiered-storage.md): offloaded segments with their fragments' health, and
starting a scrub or a repair, whose progress is then read back. `lodestream tiering` is their client.

The segments listed are the whole cluster's (the metadata image's manifests); health is what this
broker's last scrub saw, and a scrub or repair covers the partitions this broker leads (their leader is
the one that updates their manifests). A one-node cluster is all of them.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from lodestream.admin.errors import ApiError

TIERING_DISABLED = 40002


class TieredSegmentData(BaseModel):
    topic: str
    topic_id: str
    partition: int
    segment_id: str
    state: str
    base_offset: int
    end_offset: int
    size: int
    scheme: str
    stores: list[str]
    checked: bool  # by this broker's last scrub
    bad_fragments: dict[str, list[int]]  # fragment index -> stripes missing or failing their checksum


class TieredSegmentDataList(BaseModel):
    kind: str
    enabled: bool
    data: list[TieredSegmentData]


class ScrubJobData(BaseModel):
    kind: str  # scrub (check only) or repair
    segments_total: int
    segments_done: int
    fragments_checked: int
    bad_fragments: int
    repaired: int
    errors: list[str]
    done: bool


def add_routes(api: APIRouter, broker) -> None:
    def manager():
        remote_log = getattr(broker, "remote_log", None)
        if remote_log is None:
            raise ApiError(400, TIERING_DISABLED, "tiered storage is off (remote.log.storage.system.enable=false)")
        return remote_log

    def job_data(job) -> dict:
        return {"kind": job.kind, "segments_total": job.segments_total, "segments_done": job.segments_done,
                "fragments_checked": job.fragments_checked, "bad_fragments": job.bad_fragments,
                "repaired": job.repaired, "errors": list(job.errors), "done": job.done}

    @api.get("/tiering/segments", response_model=TieredSegmentDataList, tags=["Tiered storage"],
             summary="Offloaded segments and their fragments' health")
    async def list_segments():
        remote_log = getattr(broker, "remote_log", None)
        return {"kind": "LodestreamTieredSegmentList", "enabled": remote_log is not None,
                "data": remote_log.status() if remote_log is not None else []}

    @api.get("/tiering/job", response_model=ScrubJobData, tags=["Tiered storage"],
             summary="The last scrub or repair and its progress")
    async def get_job():
        job = manager().job
        if job is None:
            raise ApiError(404, 404, "no scrub or repair has run yet")
        return job_data(job)

    @api.post("/tiering/scrub", response_model=ScrubJobData, status_code=202, tags=["Tiered storage"],
              summary="Check every fragment now (the running job if one is)")
    async def start_scrub():
        return job_data(manager().start_job(repair=False))

    @api.post("/tiering/repair", response_model=ScrubJobData, status_code=202, tags=["Tiered storage"],
              summary="Check every fragment and rebuild the bad ones (the running job if one is)")
    async def start_repair():
        return job_data(manager().start_job(repair=True))
