-- Routing: one raw stream of mixed events, one cleansed stream per event kind (see also
-- clean.page_views.sql). Fields are extracted from the JSON payload; a price that is not a
-- number fails the cast, and that event goes to dlq.purchases with the error.
CREATE STREAM clean.purchases WITH (dlq = 'dlq.purchases') AS
SELECT id,
       json_get_str(payload, 'sku') AS sku,
       CAST(json_get_str(payload, 'price') AS DECIMAL(10, 2)) AS price,
       json_get_int(payload, 'customer', 'id') AS customer_id,
       at
FROM shop.public.events
WHERE kind = 'purchase';
