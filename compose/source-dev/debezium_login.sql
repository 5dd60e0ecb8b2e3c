-- The login the Debezium connector reads ConcordDb with (development source only).
-- $(BI_SOURCE_USER) and $(BI_SOURCE_PASSWORD) come from the environment of the init job.
IF SUSER_ID(N'$(BI_SOURCE_USER)') IS NULL
    CREATE LOGIN [$(BI_SOURCE_USER)] WITH PASSWORD = N'$(BI_SOURCE_PASSWORD)', CHECK_POLICY = OFF, DEFAULT_DATABASE = ConcordDb;
ELSE
    ALTER LOGIN [$(BI_SOURCE_USER)] WITH PASSWORD = N'$(BI_SOURCE_PASSWORD)';
GO
IF USER_ID(N'$(BI_SOURCE_USER)') IS NULL
    CREATE USER [$(BI_SOURCE_USER)] FOR LOGIN [$(BI_SOURCE_USER)];
GO
-- CDC reads need the captured table, the cdc schema and the CDC functions.
ALTER ROLE db_datareader ADD MEMBER [$(BI_SOURCE_USER)];
GRANT SELECT ON SCHEMA::cdc TO [$(BI_SOURCE_USER)];
GRANT VIEW DATABASE STATE TO [$(BI_SOURCE_USER)];
GO
