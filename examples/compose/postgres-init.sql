-- The sample shop database of the compose stack (the same shape as scripts/demo.sh).
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, created timestamptz DEFAULT now());
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers, amount numeric(12,2),
                     status text, placed_at timestamp(6) DEFAULT now()::timestamp);
INSERT INTO customers SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 100) g;
INSERT INTO orders SELECT g, 1 + g % 100, g * 9.99, 'new' FROM generate_series(1, 1000) g;
CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, payload jsonb, at timestamptz DEFAULT now());
INSERT INTO events SELECT g, CASE WHEN g % 3 = 0 THEN 'purchase' ELSE 'page_view' END,
  CASE WHEN g % 3 = 0 THEN jsonb_build_object('sku', 'SKU-' || g, 'price', (g * 1.5)::text, 'customer', jsonb_build_object('id', 1 + g % 100))
       ELSE jsonb_build_object('page', '/Products/' || g, 'referrer', 'search') END
FROM generate_series(1, 300) g;
ALTER ROLE sluice REPLICATION;
