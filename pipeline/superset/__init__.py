"""Superset, installed in its own virtualenv, provisioned and refreshed by bi-console.

- `install`: the private virtualenv, `superset_config.py`, metadata init, the serve command.
- `client`, `dashboards`, `provision`, `cache`: the REST client, the managed dashboards as data,
  idempotent provisioning, cache invalidation and warming; `api` gathers the names callers use.
"""
