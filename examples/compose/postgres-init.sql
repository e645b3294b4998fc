-- The sample shop database of the compose stack (the same shape as scripts/demo.sh).
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, created timestamptz DEFAULT now());
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers, amount numeric(12,2),
                     status text, placed_at timestamp(6) DEFAULT now()::timestamp);
INSERT INTO customers SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 100) g;
INSERT INTO orders SELECT g, 1 + g % 100, g * 9.99, 'new' FROM generate_series(1, 1000) g;
ALTER ROLE sluice REPLICATION;
