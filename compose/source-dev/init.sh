#!/bin/bash
# One-shot init of the development source: database ConcordDb, the contract table
# dbo.Product with CDC on, and the login Debezium reads with. Idempotent.
# sqlcmd takes the server, user and password from SQLCMDSERVER / SQLCMDUSER /
# SQLCMDPASSWORD, so no secret appears on a command line.
set -euo pipefail
SQLCMD=/opt/mssql-tools18/bin/sqlcmd
[ -x "$SQLCMD" ] || SQLCMD=/opt/mssql-tools/bin/sqlcmd
run() { "$SQLCMD" -C -b "$@"; }

run -Q "IF DB_ID(N'ConcordDb') IS NULL CREATE DATABASE ConcordDb;"
exists=$(run -d ConcordDb -h -1 -W -Q "SET NOCOUNT ON; SELECT COUNT(*) FROM sys.tables WHERE name = N'Product' AND schema_id = SCHEMA_ID(N'dbo');" | tr -d '[:space:]')
if [ "$exists" = "0" ]; then
    echo "creating dbo.Product and enabling CDC"
    run -d ConcordDb -i /source-contract/concord_product.sqlserver.sql
else
    echo "dbo.Product exists"
fi
# $(BI_SOURCE_USER) and $(BI_SOURCE_PASSWORD) are sqlcmd scripting variables read from the environment.
run -d ConcordDb -i /source-dev/debezium_login.sql
echo "source-dev ready"
