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

WTF_CSRF_ENABLED = True
TALISMAN_ENABLED = False  # served on 127.0.0.1 only, over plain HTTP
SESSION_COOKIE_SAMESITE = "Lax"
