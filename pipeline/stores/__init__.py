"""The stores: PostgreSQL, Kafka, the S3 raw zone, the bronze schema and its queries."""
