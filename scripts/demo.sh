#!/usr/bin/env bash
# The demo: a local Postgres with a small shop database, a local MariaDB with an inventory
# database and a local MongoDB-wire server (SecantusDB, the stand-in of test-services.md) with a
# catalog database, sluice on the embedded default (sluice.yaml + sources/*.yaml + transforms/),
# a few changes (and a schema change) in each, and what landed in the lake.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
export SLUICE_LAKE=${SLUICE_LAKE:-/tmp/sluice-demo/lake}
export SLUICE_ROTATE_INTERVAL=2s
export SLUICE_ODS_INTERVAL=2s
export SLUICE_METRICS=${SLUICE_METRICS:-127.0.0.1:9187}
export PGPASSWORD=sluice

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting Postgres (logical replication), MariaDB (ROW binlog), MongoDB (replica set) and the Python readers"
scripts/services.sh up python postgres mariadb mongodb
eval "$(scripts/services.sh env)"

say "building sluice (release)"
command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq build-essential; }
cargo build --release --locked
SLUICE=$CARGO_TARGET_DIR/release/sluice

say "creating database shop with tables orders, customers and events"
psql_admin() { su postgres -c "psql -X -q -v ON_ERROR_STOP=1" <<<"$*"; }
# Start clean: a previous demo's slot and lake would resume instead of snapshotting.
psql_admin "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'sluice_shop' AND NOT active;"
psql_admin "DROP DATABASE IF EXISTS shop WITH (FORCE); CREATE DATABASE shop OWNER sluice;"
rm -rf "$SLUICE_LAKE"
shop() { psql -h 127.0.0.1 -U sluice -d shop -X -q -v ON_ERROR_STOP=1 -c "$*"; }
# The sample database, the same as the compose stack's (ALTER ROLE is the compose superuser's job).
grep -v '^ALTER ROLE' examples/compose/postgres-init.sql | psql -h 127.0.0.1 -U sluice -d shop -X -q -v ON_ERROR_STOP=1 -f -

say "creating database inventory in MariaDB with table products"
mariadb -uroot -e "DROP DATABASE IF EXISTS inventory; CREATE DATABASE inventory;
  GRANT ALL ON inventory.* TO 'sluice'@'127.0.0.1';"
inventory() { mariadb -h 127.0.0.1 -u sluice -psluice inventory -e "$*"; }
# The same sample database as the compose stack's MySQL (its GRANT is the compose root's job).
grep -v '^GRANT' examples/compose/mysql-init.sql | mariadb -h 127.0.0.1 -u sluice -psluice inventory

say "creating database catalog in MongoDB with collection reviews"
mongo() { "$SLUICE_PYTHON" -c "import sys, datetime, pymongo; db = pymongo.MongoClient('$SLUICE_MONGO_URL').catalog; exec(sys.argv[1])" "$*"; }
# The same documents as the compose stack's examples/compose/mongo-init.js.
mongo "
db.client.drop_database('catalog')
db.command({'create': 'reviews', 'changeStreamPreAndPostImages': {'enabled': True}})
db.reviews.insert_many([{'_id': i, 'product_id': i % 20 + 1, 'rating': i % 5 + 1, 'text': f'review {i}',
    'author': {'name': f'user{i}', 'country': ['FR', 'DE', 'JP'][(i - 1) % 3]}, 'tags': ['verified'] if i % 2 else [],
    'created_at': datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=i)}
    for i in range(1, 51)])"

say "checking the configuration and the databases"
$SLUICE check --config sluice.yaml

say "running sluice (metrics on http://$SLUICE_METRICS/metrics)"
$SLUICE run --config sluice.yaml 2>/tmp/sluice-demo.log &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
# Every source past its snapshot (the MongoDB-wire stand-in takes a few seconds to open a stream).
for _ in $(seq 1 120); do
  $SLUICE status --addr "$SLUICE_METRICS" 2>/dev/null | grep -qE '^(shop|store|catalog) +streaming' &&
    [ "$($SLUICE status --addr "$SLUICE_METRICS" 2>/dev/null | grep -cE '^(shop|store|catalog) +streaming')" = 3 ] && break
  sleep 1
done

say "changing data while sluice streams"
shop "INSERT INTO orders SELECT g, 1 + g % 100, g * 0.5, 'new' FROM generate_series(1001, 1100) g;
      UPDATE orders SET status = 'paid' WHERE id % 10 = 0;
      DELETE FROM orders WHERE id > 1090;
      UPDATE customers SET email = upper(email) WHERE id <= 5;
      INSERT INTO orders VALUES (2001, 1, 1.00, 'test');
      INSERT INTO events VALUES (301, 'purchase', '{\"sku\": \"SKU-301\", \"price\": \"twelve\"}');"
inventory "UPDATE products SET stock = stock - 1 WHERE id <= 20;
           UPDATE products SET discontinued = TRUE WHERE id IN (3, 4);
           DELETE FROM products WHERE id > 195;
           ALTER TABLE products ADD COLUMN supplier VARCHAR(40) NULL AFTER sku;
           INSERT INTO products (id, sku, supplier, name, price, stock, attrs) VALUES
             (501, 'SKU-501', 'ACME', 'crème brûlée torch', 19.99, 5, '{\"color\": \"red\", \"weight_g\": \"350\"}'),
             (502, 'SKU-502', 'ACME', 'anvil', 99.00, 1, '{\"color\": \"black\", \"weight_g\": \"heavy\"}');"
mongo "
db.reviews.update_many({'rating': 1}, {'\$set': {'rating': 0}})
db.reviews.update_one({'_id': 7}, {'\$set': {'author.country': 'IT'}, '\$push': {'tags': 'edited'}})
db.reviews.delete_many({'_id': {'\$gt': 45}})
db.reviews.insert_one({'_id': 101, 'product_id': 3, 'rating': 5, 'text': 'new', 'author': {'name': 'ana', 'country': 'ES'},
    'created_at': datetime.datetime.now(datetime.timezone.utc), 'helpful': 12})
db.reviews.insert_one({'_id': 102, 'product_id': 4, 'rating': 'great', 'text': 'not a number', 'author': {'name': 'bo', 'country': 'SE'}})"
# Caught up: every source's lag back to 0, then a rotation and an ODS merge later.
sleep 2
for _ in $(seq 1 120); do
  curl -s "http://$SLUICE_METRICS/metrics" | grep -E '^sluice_source_lag_seconds\{source="catalog"' | grep -q ' 0$' && break
  sleep 1
done
sleep 5
$SLUICE status --addr "$SLUICE_METRICS" || true
echo
curl -s "http://$SLUICE_METRICS/metrics" | grep -E '^sluice_(source_events_total|sink_rows_total|sink_commits_total|transform_dead_letters_total)' || true

say "stopping sluice (SIGTERM: drain, commit, exit 0)"
kill -TERM $PID
wait $PID
trap - EXIT

say "what landed in the lake ($SLUICE_LAKE)"
find "$SLUICE_LAKE" -name '*.parquet' | sed "s|$SLUICE_LAKE/||" | sort
"$SLUICE_PYTHON" - "$SLUICE_LAKE" <<'PY'
import sys, duckdb
lake = sys.argv[1]
con = duckdb.connect()
for stream in ["shop.public.orders", "shop.public.customers", "store.inventory.products", "catalog.catalog.reviews"]:
    glob = f"{lake}/raw/{stream}/*/*.parquet"
    print(f"\n{stream}: change events by op")
    print(con.sql(f"SELECT _op, count(*) AS events FROM read_parquet('{glob}', hive_partitioning=true) GROUP BY 1 ORDER BY 1"))
print("current state of shop.public.orders from the change log (last row per key by _seq, deletes removed):")
print(con.sql(f"""
    SELECT count(*) AS live_orders, sum(amount) AS total_amount, count(*) FILTER (WHERE status = 'paid') AS paid
    FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY _seq DESC) AS rn
          FROM read_parquet('{lake}/raw/shop.public.orders/*/*.parquet', hive_partitioning=true))
    WHERE rn = 1 AND _op <> 'd'"""))
print("the same from the ODS zone, which sluice keeps merged:")
print(con.sql(f"""
    SELECT count(*) AS live_orders, sum(amount) AS total_amount, count(*) FILTER (WHERE status = 'paid') AS paid
    FROM read_parquet('{lake}/ods/shop.public.orders/*.parquet')"""))
print("current state of store.inventory.products (MariaDB) from the ODS zone:")
print(con.sql(f"""SELECT count(*) AS products, sum(stock) AS stock, sum(discontinued) AS discontinued
    FROM read_parquet('{lake}/ods/store.inventory.products/*.parquet', union_by_name=true)"""))
print("store.inventory.products after the ALTER TABLE: the new column in the rows that have it")
print(con.sql(f"""SELECT id, sku, supplier, name, stock, _op FROM read_parquet('{lake}/raw/store.inventory.products/*/*.parquet',
    hive_partitioning=true, union_by_name=true) WHERE id > 500 ORDER BY _seq"""))
print("catalog.catalog.reviews (MongoDB) from the ODS zone:")
print(con.sql(f"SELECT count(*) AS reviews FROM read_parquet('{lake}/ods/catalog.catalog.reviews/*.parquet', union_by_name=true)"))
print("three of them: inferred columns, and _doc, the whole document")
print(con.sql(f"""SELECT _id, product_id, rating, author, helpful, _doc FROM read_parquet('{lake}/ods/catalog.catalog.reviews/*.parquet',
    union_by_name=true) WHERE _id IN ('7', '101', '102') ORDER BY _id"""))
print("cleansed streams (transforms/*.sql): current state from the ODS zone")
for stream in ["clean.orders", "clean.customers", "clean.purchases", "clean.page_views", "clean.products", "clean.reviews"]:
    print(stream)
    print(con.sql(f"SELECT * FROM read_parquet('{lake}/ods/{stream}/*.parquet') ORDER BY 1 LIMIT 3"))
print("dead letters (the purchase whose price, the product whose weight and the review whose rating are not numbers):")
print(con.sql(f"SELECT transform, error, raw_stream, raw_position FROM read_parquet('{lake}/dlq/*/*/*.parquet')"))
PY
echo "tables in Postgres and MariaDB for comparison:"
shop "SELECT count(*) AS live_orders, sum(amount) AS total_amount, count(*) FILTER (WHERE status = 'paid') AS paid FROM orders;"
inventory "SELECT count(*) AS products, sum(stock) AS stock, sum(discontinued) AS discontinued FROM products;"
mongo "print('reviews in MongoDB:', db.reviews.count_documents({}))"
echo
echo "Table definitions for Spark/Hive/Presto and DuckDB (sluice ddl --config sluice.yaml), e.g.:"
$SLUICE ddl --config sluice.yaml --dialect duckdb 2>/dev/null | head -4
echo
echo "Log: /tmp/sluice-demo.log   Lake: $SLUICE_LAKE   Metrics (while running): http://$SLUICE_METRICS/metrics"
