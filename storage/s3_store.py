"""The `s3://bucket?endpoint=http://host:port` fragment store: plain S3 over HTTP, so any S3-compatible
server is a storage node (SeaweedFS in the tests; MinIO, Ceph RGW or a cloud bucket in production).

Path-style requests (`<endpoint>/<bucket>/<key>`): PUT, GET with a Range, DELETE and ListObjectsV2. With
credentials (the URL's `access_key`/`secret_key`, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) every
request is signed with AWS Signature Version 4; without, requests are anonymous (a store that allows
them). `region` (default us-east-1, or AWS_REGION) goes into the signature. The bucket is created on
first use if it is missing.

Synchronous (an httpx.Client): callers run it on a worker thread behind a CapacityLimiter.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import re
from typing import Iterator
from urllib.parse import parse_qs, quote, urlparse
from xml.etree import ElementTree

import httpx

from lodestream.storage.fragment_store import FragmentStoreError, MissingFragment

TIMEOUT_S = 30.0
_S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class S3FragmentStore:
    network = True

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        query = {name: values[-1] for name, values in parse_qs(parsed.query).items()}
        self.url = f"s3://{parsed.netloc}?endpoint={query.get('endpoint', '')}"  # no secrets in logs
        self.bucket = parsed.netloc
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise FragmentStoreError(f"{self.url}: {self.bucket!r} is not a valid bucket name")
        endpoint = query.get("endpoint")
        if not endpoint or urlparse(endpoint).scheme not in ("http", "https"):
            raise FragmentStoreError(f"{self.url}: needs ?endpoint=http(s)://host:port")
        self.endpoint = endpoint.rstrip("/")
        self.host = urlparse(self.endpoint).netloc
        self.region = query.get("region") or os.environ.get("AWS_REGION") or "us-east-1"
        access = query.get("access_key") or os.environ.get("AWS_ACCESS_KEY_ID")
        secret = query.get("secret_key") or os.environ.get("AWS_SECRET_ACCESS_KEY")
        self.credentials = (access, secret) if access and secret else None
        self._client = httpx.Client(timeout=TIMEOUT_S)
        self._bucket_checked = False

    # -- the store ------------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        self._ensure_bucket()
        self._expect(self._request("PUT", key, body=data), (200,), f"writing {key}")

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        headers = {}
        if offset or length is not None:
            last = "" if length is None else str(offset + length - 1)
            headers["range"] = f"bytes={offset}-{last}"
        response = self._request("GET", key, headers=headers)
        if response.status_code == 404:
            raise MissingFragment(f"{self.url}: no object {key}")
        if response.status_code == 416:  # a range past the end: nothing there
            return b""
        self._expect(response, (200, 206), f"reading {key}")
        return response.content

    def size(self, key: str) -> int:
        response = self._request("HEAD", key)
        if response.status_code == 404:
            raise MissingFragment(f"{self.url}: no object {key}")
        self._expect(response, (200,), f"asking the size of {key}")
        return int(response.headers.get("content-length", "-1"))

    def delete(self, key: str) -> None:
        self._expect(self._request("DELETE", key), (200, 204, 404), f"deleting {key}")

    def keys(self, prefix: str = "") -> Iterator[str]:
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            response = self._request("GET", None, query=query)
            if response.status_code == 404:
                return
            self._expect(response, (200,), "listing")
            root = ElementTree.fromstring(response.content)
            for entry in root.iter(f"{_S3_NAMESPACE}Contents"):
                yield entry.findtext(f"{_S3_NAMESPACE}Key") or ""
            if root.findtext(f"{_S3_NAMESPACE}IsTruncated") != "true":
                return
            token = root.findtext(f"{_S3_NAMESPACE}NextContinuationToken")

    def close(self) -> None:
        self._client.close()

    # -- HTTP -----------------------------------------------------------------------------------------
    def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        response = self._request("PUT", None)
        if response.status_code not in (200, 409):  # 409: BucketAlreadyOwnedByYou / BucketAlreadyExists
            self._expect(response, (200,), "creating the bucket")
        self._bucket_checked = True

    def _request(self, method: str, key: str | None, *, body: bytes = b"", headers: dict[str, str] | None = None,
                 query: dict[str, str] | None = None) -> httpx.Response:
        path = f"/{self.bucket}" + ("" if key is None else "/" + quote(key, safe="/-_.~"))  # None: the bucket
        headers = dict(headers or {})
        headers["host"] = self.host
        headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
        if self.credentials is not None:
            now = datetime.datetime.now(datetime.timezone.utc)
            headers.update(sign_v4(method, self.host, path, query or {}, headers, self.region,
                                   *self.credentials, now))
        try:
            return self._client.request(method, self.endpoint + path, params=query, content=body or None,
                                        headers=headers)
        except httpx.HTTPError as exc:
            raise FragmentStoreError(f"{self.url}: {method} {path}: {exc}") from None

    def _expect(self, response: httpx.Response, ok: tuple[int, ...], what: str) -> None:
        if response.status_code not in ok:
            code = re.search(rb"<Code>([^<]*)</Code>", response.content or b"")
            raise FragmentStoreError(f"{self.url}: {what}: HTTP {response.status_code}"
                                     + (f" {code.group(1).decode()}" if code else ""))


def sign_v4(method: str, host: str, path: str, query: dict[str, str], headers: dict[str, str], region: str,
            access_key: str, secret_key: str, now: datetime.datetime, service: str = "s3") -> dict[str, str]:
    """The headers AWS Signature Version 4 adds (x-amz-date, authorization) to a request whose headers
    already hold host and x-amz-content-sha256 (every header given is signed)."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    signed = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = stamp
    names = sorted(signed)
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
    canonical = "\n".join([
        method, quote(path, safe="/-_.~%"), canonical_query,
        "".join(f"{name}:{signed[name]}\n" for name in names), ";".join(names), signed["x-amz-content-sha256"]])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {"x-amz-date": stamp,
            "authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, "
                             f"Signature={signature}"}
