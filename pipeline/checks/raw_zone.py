"""The raw zone checked against the load manifest.

Bronze is rebuilt from the raw zone by every full refresh, so an object the manifest says
was loaded but the raw zone no longer holds is history that the next full refresh would
drop. The audit names those objects; the fix re-reads them from the topic while it still
holds their offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg2 import sql
from psycopg2.extensions import connection

from pipeline.config import Settings, TableConfig
from pipeline.stores.db import one_row
from pipeline.stores.storage import RawStore


@dataclass
class RawZoneAudit:
    table: str
    prefix: str
    loaded_objects: int = 0  # in the manifest
    raw_objects: int = 0  # in the raw zone now
    missing: list[str] = field(default_factory=list)  # in the manifest, gone from the raw zone

    @property
    def ok(self) -> bool:
        return not self.missing

    def evidence(self, bucket: str) -> str:
        where = f"s3://{bucket}/{self.prefix}"
        if self.ok:
            return f"{self.loaded_objects} loaded object(s), all present in {where} ({self.raw_objects} there)"
        return (
            f"{len(self.missing)} of {self.loaded_objects} loaded object(s) missing from {where} "
            f"(first: {self.missing[0].rsplit('/', 1)[-1]})"
        )


def manifest_keys(conn: connection, settings: Settings, table: TableConfig) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"{settings.file.meta_schema}.load_manifest",))
        if one_row(cur)[0] is None:
            return set()
        cur.execute(
            sql.SQL("SELECT object_key FROM {}.load_manifest WHERE bronze_table = %s").format(
                sql.Identifier(settings.file.meta_schema)
            ),
            (table.bronze_table,),
        )
        return {key for (key,) in cur.fetchall()}


def audit_raw_zone(
    settings: Settings, table: TableConfig, conn: connection, store: RawStore | None = None
) -> RawZoneAudit:
    """Which objects of the manifest the raw zone lacks. Raises ServiceUnreachable when S3
    cannot be listed: an unreadable raw zone is not an empty one."""
    store = store or RawStore(settings, timeout=2.0, retries=1)
    loaded = manifest_keys(conn, settings, table)
    present = {obj["Key"] for obj in store.list(table.raw_objects_prefix)}
    return RawZoneAudit(table.name, table.raw_objects_prefix, len(loaded), len(present), sorted(loaded - present))
