-- Superset's own metadata database, owned by the analytics user; nobody else connects.
-- Idempotent: the postgres image runs it after 10-bi-console.sql (which creates it there
-- too) on an empty volume, and the stand-in (compose/standin/postgres_standin.py) runs it
-- on every start after its bootstrap, as the superuser, with -v owner=<the analytics user>.
\set ON_ERROR_STOP on
\if :{?owner}
\else
\set owner :USER
\endif
SELECT format('CREATE DATABASE superset OWNER %I', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'superset') \gexec
REVOKE ALL ON DATABASE superset FROM PUBLIC;
