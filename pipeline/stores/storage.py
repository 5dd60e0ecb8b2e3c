"""The raw zone on S3 (MinIO in production, moto in the embedded stack).

Every call that fails because of the endpoint, the credentials or the bucket raises
ServiceUnreachable naming the setting to fix; anything else (a missing object) is
raised as botocore raised it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as S3ConnectionError

from pipeline.config import ConfigError, Settings
from pipeline.stores.db import ServiceUnreachable

_TRANSPORT_ERRORS = (S3ConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError)
_KEY_CODES = {"InvalidAccessKeyId": "BI_S3_ACCESS_KEY", "SignatureDoesNotMatch": "BI_S3_SECRET_KEY"}
_DENIED_CODES = {"AccessDenied", "403", "InvalidToken", "ExpiredToken"}


class S3Refused(ServiceUnreachable):
    """S3 answered and refused us (unknown key, wrong secret, access denied, no such bucket):
    a setting is wrong, so retrying cannot help."""


def _no_bucket(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    # head_bucket's answer has no body: a bare 404 (from head_object it would mean a missing key)
    return code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket")


def _transport_reason(exc: BotoCoreError) -> str:
    """'Connection refused', 'Name or service not known', 'timed out' or the error's type:
    botocore's own text repeats the URL and an object's address."""
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        return f"timed out: {type(exc).__name__}"
    text = str(getattr(exc, "kwargs", {}).get("error") or exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    return errno.group(1).strip() if errno else type(exc).__name__


class RawStore:
    def __init__(self, settings: Settings, timeout: float = 10.0, retries: int = 3, read_timeout: float | None = None):
        """read_timeout defaults to at least 30 s (a 20 MB object on a busy server); a probe
        passes its own timeout, so that a server that accepts but never answers is reported
        in seconds."""
        self.settings = settings
        self.bucket = settings.s3_bucket
        try:
            self.client = boto3.client(
                "s3",
                endpoint_url=settings.s3_endpoint,
                aws_access_key_id=settings.s3_access_key,
                aws_secret_access_key=settings.s3_secret_key,
                region_name=settings.s3_region,
                # No CRC32 of every object on each put and get (botocore's default since 1.36): it
                # cost ingest and load a pass over ~20 MB per object. What is written stays
                # protected: over plain HTTP the server checks the signed SHA-256 of the payload,
                # over HTTPS TLS protects both ways; an object put without a checksum has none
                # for a get to validate.
                config=Config(
                    connect_timeout=timeout,
                    read_timeout=max(timeout, 30) if read_timeout is None else read_timeout,
                    retries={"max_attempts": retries, "mode": "standard"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        except ValueError as exc:  # botocore: "Invalid endpoint: ..."
            raise ConfigError(f"BI_S3_ENDPOINT={settings.s3_endpoint}: {exc}") from None

    def explain(self, exc: BotoCoreError | ClientError) -> ServiceUnreachable | None:
        """The failure as one line naming the setting to fix, or None when no setting is at
        fault (a missing object, a malformed request)."""
        endpoint = self.settings.s3_endpoint
        if isinstance(exc, _TRANSPORT_ERRORS):
            return ServiceUnreachable(f"BI_S3_ENDPOINT={endpoint}: cannot connect to S3 ({_transport_reason(exc)})")
        if not isinstance(exc, ClientError):
            return None
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in _KEY_CODES:
            return S3Refused(f"{_KEY_CODES[code]}: S3 at {endpoint} refused the credentials ({code})")
        if code in _DENIED_CODES:
            return S3Refused(
                f"BI_S3_ACCESS_KEY/BI_S3_SECRET_KEY: S3 at {endpoint} denied access to bucket {self.bucket} ({code})"
            )
        if _no_bucket(exc):
            return S3Refused(f"BI_S3_BUCKET={self.bucket}: no such bucket at {endpoint}")
        if status >= 500:
            return ServiceUnreachable(f"BI_S3_ENDPOINT={endpoint}: S3 answered HTTP {status} ({code or 'no code'})")
        return None

    @contextmanager
    def _named_failures(self) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            unreachable = self.explain(exc)
            if unreachable is None:
                raise
            raise unreachable from exc

    def ensure_bucket(self) -> None:
        with self._named_failures():
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if not _no_bucket(exc):
                    raise
                self.client.create_bucket(Bucket=self.bucket)

    def probe(self) -> tuple[bool, str]:
        try:
            with self._named_failures():
                # Not head_bucket: its errors have no body, so a wrong key, a wrong secret and a
                # denied bucket all read "403"; a one-key listing says which setting is wrong.
                self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except ServiceUnreachable as exc:
            return False, str(exc)
        except (BotoCoreError, ClientError) as exc:
            return False, f"BI_S3_BUCKET={self.bucket} at BI_S3_ENDPOINT={self.settings.s3_endpoint}: {exc}"
        return True, f"bucket {self.bucket} at {self.settings.s3_endpoint}"

    def put(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> str:
        with self._named_failures():
            response = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=metadata or {})
        return str(response.get("ETag", "")).strip('"')

    def get(self, key: str) -> bytes:
        with self._named_failures():
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body

    def lines(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object's lines (JSONL: split on \n only) as they arrive, without holding the
        whole object. botocore's own iter_lines copies every line twice; load reads a million."""
        with self._named_failures():
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                pending = b""
                for chunk in body.iter_chunks(chunk_size):
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    yield from lines
                if pending:
                    yield pending
            finally:
                body.close()

    def list(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Objects under prefix in key order, each {'Key', 'ETag', 'Size'}."""
        with self._named_failures():
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield {"Key": obj["Key"], "ETag": obj["ETag"].strip('"'), "Size": obj["Size"]}

    def delete_prefix(self, prefix: str) -> int:
        keys = [o["Key"] for o in self.list(prefix)]
        with self._named_failures():
            for i in range(0, len(keys), 1000):
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
                )
        return len(keys)
