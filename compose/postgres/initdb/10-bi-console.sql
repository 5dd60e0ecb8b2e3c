-- Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d).
-- The entrypoint runs this file with psql as the superuser (POSTGRES_USER), connected
-- to POSTGRES_DB; the reader's name and password come from the container's environment.
\set ON_ERROR_STOP on
\getenv reader_user BI_PG_READER_USER
\getenv reader_password BI_PG_READER_PASSWORD

-- Bronze: every CDC event as it came from Kafka (the base DDL of pipeline/stores/bronze.py; the
-- loader adds the generated change columns and their index when it first runs).
CREATE SCHEMA IF NOT EXISTS bronze;
CREATE TABLE IF NOT EXISTS bronze.product_cdc (
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    kafka_epoch      integer     NOT NULL DEFAULT 0,
    kafka_timestamp  bigint,
    kafka_key        jsonb,
    cdc_payload      jsonb,
    batch_file       text,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT product_cdc_kafka_position_key UNIQUE (kafka_topic, kafka_epoch, kafka_partition, kafka_offset)
);

-- dbt's schemas, owned by the analytics user that dbt runs as.
CREATE SCHEMA IF NOT EXISTS staging_staging;
CREATE SCHEMA IF NOT EXISTS marts;
CREATE SCHEMA IF NOT EXISTS bi_console;

-- Nobody but the owner sees bronze, bi_console or public.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA bronze FROM PUBLIC;
REVOKE ALL ON SCHEMA bi_console FROM PUBLIC;

-- The read-only BI role: SELECT on staging_staging and marts, now and for every
-- relation dbt creates later (default privileges of the analytics user); nothing else.
CREATE ROLE :"reader_user" LOGIN PASSWORD :'reader_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER ROLE :"reader_user" SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE :"DBNAME" TO :"reader_user";
GRANT USAGE ON SCHEMA staging_staging, marts TO :"reader_user";
GRANT SELECT ON ALL TABLES IN SCHEMA staging_staging, marts TO :"reader_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"USER" IN SCHEMA staging_staging, marts
    GRANT SELECT ON TABLES TO :"reader_user";

-- Superset's own metadata database, owned by the analytics user.
CREATE DATABASE superset OWNER :"USER";
REVOKE ALL ON DATABASE superset FROM PUBLIC;
