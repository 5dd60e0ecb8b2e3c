-- dbo.ProductPricing as Concord's SQL Server would declare it: one price list entry per
-- product and pricing type (the demo's: retail), in decimal and in money.
CREATE TABLE dbo.ProductPricing (
    ID             bigint IDENTITY(1,1) NOT NULL CONSTRAINT PK_ProductPricing PRIMARY KEY,
    NetUID         uniqueidentifier NOT NULL,
    Created        datetime         NOT NULL,
    Updated        datetime         NOT NULL,
    Deleted        bit              NOT NULL CONSTRAINT DF_ProductPricing_Deleted DEFAULT 0,
    ProductID      bigint           NOT NULL,
    PricingTypeID  int              NOT NULL,
    Price          decimal(18,2)    NOT NULL,
    PriceWithVat   money            NULL,
    Discount       smallmoney       NULL,
    CurrencyCode   char(3)          NOT NULL,
    ValidFrom      date             NOT NULL
);
