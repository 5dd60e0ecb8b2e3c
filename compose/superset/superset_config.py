"""Superset configuration for bi-console's compose mode. Every secret comes from the
environment (compose interpolates it from .env); a missing one stops Superset."""

import os
from urllib.parse import quote

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
if len(SECRET_KEY) < 32:
    raise RuntimeError("SUPERSET_SECRET_KEY is shorter than 32 characters; run `bi-console init --compose`")

SQLALCHEMY_DATABASE_URI = "postgresql+psycopg2://{user}:{password}@{host}:5432/superset".format(
    user=quote(os.environ["BI_PG_USER"], safe=""),
    password=quote(os.environ["BI_PG_PASSWORD"], safe=""),
    host=os.environ.get("BI_PG_SERVICE_HOST", "postgres"),
)

# The cache model bi-console's bi step relies on, as the embedded Superset has it
# (pipeline/superset/install.py; tests/unit/test_compose_files.py keeps the two the same).
# Chart data on disk in the superset_home volume, so that every gunicorn worker and the
# CLI see the same entries; cache keys recorded in the metadata database so that
# POST /api/v1/cachekey/invalidate can drop them per dataset.
STORE_CACHE_KEYS_IN_METADATA_DB = True
DATA_CACHE_CONFIG = {
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": os.environ.get("BI_SUPERSET_CACHE_DIR", "/app/superset_home/cache/data"),
    "CACHE_DEFAULT_TIMEOUT": int(os.environ.get("BI_SUPERSET_CACHE_TIMEOUT", "300")),
    "CACHE_THRESHOLD": 5000,
    "CACHE_KEY_PREFIX": "bi_console_",
}
# /api/v1/cachekey/invalidate deletes the recorded keys from CACHE_CONFIG, not from
# DATA_CACHE_CONFIG where chart data lives: one store for both makes it evict chart data.
CACHE_CONFIG = dict(DATA_CACHE_CONFIG)

WTF_CSRF_ENABLED = True
WTF_CSRF_TIME_LIMIT = None
TALISMAN_ENABLED = False  # served on 127.0.0.1 only, over plain HTTP
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_HTTPONLY = True

FEATURE_FLAGS = {
    "DASHBOARD_RBAC": False,
    "ALERT_REPORTS": False,
}
ROW_LIMIT = 50000
