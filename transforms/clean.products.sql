-- Products from the MySQL/MariaDB inventory: discontinued ones filtered out, the name trimmed
-- and upper-cased (it is latin1 in the source; the lake has UTF-8), JSON attributes flattened
-- into typed columns. A weight that is not a number fails the CAST: that row is a dead letter.
CREATE STREAM clean.products WITH (dlq = 'dlq.products') AS
SELECT id,
       sku,
       upper(trim(name)) AS name,
       price,
       stock,
       json_get_str(attrs, 'color') AS color,
       CAST(json_get_str(attrs, 'weight_g') AS INT) AS weight_g,
       updated_at
FROM store.inventory.products
WHERE discontinued = 0;
