"""A small load generator for the shop database: inserts orders, pays some, cancels a few, at
LOADGEN_RATE changes per second, forever. Used by docker-compose.yaml; runnable by hand:
    LOADGEN_URL=postgresql://sluice:sluice@127.0.0.1:5432/shop python scripts/loadgen.py
"""
import os
import random
import time

import psycopg

url = os.environ.get("LOADGEN_URL", "postgresql://sluice:sluice@127.0.0.1:5432/shop")
rate = float(os.environ.get("LOADGEN_RATE", "50"))
limit = int(os.environ.get("LOADGEN_CHANGES", "0"))  # 0: forever

with psycopg.connect(url, autocommit=True) as conn:
    next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM orders").fetchone()[0]
    done = 0
    while limit == 0 or done < limit:
        roll = random.random()
        if roll < 0.6:
            conn.execute("INSERT INTO orders VALUES (%s, %s, %s, 'new')",
                         (next_id, random.randint(1, 100), round(random.uniform(1, 500), 2)))
            next_id += 1
        elif roll < 0.95:
            conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (random.randint(1, next_id - 1),))
        else:
            conn.execute("DELETE FROM orders WHERE id = %s", (random.randint(1, next_id - 1),))
        done += 1
        time.sleep(1.0 / rate)
