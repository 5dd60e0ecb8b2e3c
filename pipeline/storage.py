"""The raw zone on S3 (MinIO in production, moto in the embedded stack)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.config import Settings


class RawStore:
    def __init__(self, settings: Settings, timeout: float = 10.0, retries: int = 3):
        self.settings = settings
        self.bucket = settings.s3_bucket
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
            config=Config(connect_timeout=timeout, read_timeout=max(timeout, 30),
                          retries={"max_attempts": retries, "mode": "standard"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def probe(self) -> tuple[bool, str]:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            return False, f"bucket {self.bucket}: {exc.response.get('Error', {}).get('Code')}"
        except BotoCoreError as exc:
            return False, f"S3 {self.settings.s3_endpoint} unreachable: {exc}"
        return True, f"bucket {self.bucket} at {self.settings.s3_endpoint}"

    def put(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> str:
        response = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=metadata or {})
        return response.get("ETag", "").strip('"')

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def lines(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object's lines (JSONL: split on \n only) as they arrive, without holding the
        whole object. botocore's own iter_lines copies every line twice; load reads a million."""
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

    def list(self, prefix: str) -> Iterator[dict]:
        """Objects under prefix in key order, each {'Key', 'ETag', 'Size'}."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield {"Key": obj["Key"], "ETag": obj["ETag"].strip('"'), "Size": obj["Size"]}

    def delete_prefix(self, prefix: str) -> int:
        keys = [o["Key"] for o in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket,
                                       Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        return len(keys)
