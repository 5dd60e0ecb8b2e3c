-- dbo.ProductAvailability as Concord's SQL Server would declare it: stock of a product in
-- one storage, with datetime2 and datetimeoffset times.
CREATE TABLE dbo.ProductAvailability (
    ID                bigint IDENTITY(1,1) NOT NULL CONSTRAINT PK_ProductAvailability PRIMARY KEY,
    NetUID            uniqueidentifier NOT NULL,
    Created           datetime         NOT NULL,
    Updated           datetime         NOT NULL,
    Deleted           bit              NOT NULL CONSTRAINT DF_ProductAvailability_Deleted DEFAULT 0,
    ProductID         bigint           NOT NULL,
    StorageID         int              NOT NULL,
    Amount            int              NOT NULL,
    ReservedAmount    smallint         NULL,
    LastCountedAt     datetime2(7)     NULL,
    ExpectedAt        datetimeoffset(7) NULL
);
