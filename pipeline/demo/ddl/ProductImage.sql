-- dbo.ProductImage as Concord's SQL Server would declare it: a link table between products
-- and images, keyed by both.
CREATE TABLE dbo.ProductImage (
    ProductID   bigint           NOT NULL,
    ImageID     bigint           NOT NULL,
    SortOrder   tinyint          NOT NULL,
    IsMain      bit              NOT NULL,
    ImageUrl    nvarchar(500)    NULL,
    Checksum    binary(16)       NULL,
    Created     datetime         NOT NULL,
    Updated     datetime         NOT NULL,
    Deleted     bit              NOT NULL CONSTRAINT DF_ProductImage_Deleted DEFAULT 0,
    CONSTRAINT PK_ProductImage PRIMARY KEY (ProductID, ImageID)
);
