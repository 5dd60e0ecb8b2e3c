"""Superset, installed in its own virtualenv, provisioned and refreshed by bi-console.

- `install`: the private virtualenv, `superset_config.py`, metadata init, the serve command.
- `api`: the REST client, idempotent provisioning, cache invalidation and warming.
"""
