-- Orders for analytics: test orders filtered out, status normalised, the amount cast to a
-- fixed-scale decimal. Columns not selected (none here) are dropped; AS renames.
CREATE STREAM clean.orders WITH (dlq = 'dlq.orders') AS
SELECT id,
       customer_id,
       CAST(amount AS DECIMAL(12, 2)) AS amount,
       lower(trim(status)) AS status,
       placed_at AS placed_at_utc
FROM shop.public.orders
WHERE status <> 'test';
