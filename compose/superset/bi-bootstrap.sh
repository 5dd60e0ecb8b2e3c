#!/bin/sh
# One-shot bootstrap of Superset: metadata schema, roles, the admin from .env, and the
# analytics database connection "BI Platform Analytics" as the read-only bi_reader.
# Passwords are read from the environment, never passed on a command line.
set -eu
superset db upgrade
superset init
python - <<'PY'
import os
from urllib.parse import quote

from superset.app import create_app

app = create_app()
with app.app_context():
    from superset.utils.database import get_or_create_db

    sm = app.appbuilder.sm
    username = os.environ["BI_SUPERSET_USER"]
    password = os.environ["BI_SUPERSET_PASSWORD"]
    user = sm.find_user(username=username)
    if user is None:
        sm.add_user(username, "BI", "Admin", f"{username}@localhost", sm.find_role("Admin"), password=password)
        print(f"admin {username!r} created")
    else:
        sm.reset_password(user.id, password)
        print(f"admin {username!r} exists; password set from .env")

    uri = "postgresql+psycopg2://{}:{}@{}:5432/{}".format(
        quote(os.environ["BI_PG_READER_USER"], safe=""),
        quote(os.environ["BI_PG_READER_PASSWORD"], safe=""),
        os.environ.get("BI_PG_SERVICE_HOST", "postgres"),
        quote(os.environ["BI_PG_DATABASE"], safe=""),
    )
    get_or_create_db("BI Platform Analytics", uri)
    print("database connection 'BI Platform Analytics' ready (read-only user)")
PY
