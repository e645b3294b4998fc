"""Catch-up benchmark: how fast sluice drains a backlog of changes into the Parquet raw zone,
next to pg_recvlogical draining the same backlog to /dev/null in the same run (the rate the
server can hand out changes: the ceiling for any client).

Workload (the foundation issue's): table `bench` of 11 columns; 100,000 inserts in 100
transactions of one 1,000-row INSERT, 50,000 updates of 5 columns (ids 1..50000) in 50
transactions, 10,000 deletes in 10 transactions: 160,000 change events.

Run through bench/run.sh, which starts Postgres and builds sluice in release mode.
usage: catchup.py SLUICE_BINARY [--runs N]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

from harness import ADDR, cpu_seconds, metric, peak_rss_kb, run_until_committed, steady_inserts

ADMIN = os.environ.get("SLUICE_PG_URL", "postgres://sluice:sluice@127.0.0.1:5432/sluice")
DB = "sluice_bench"
URL = ADMIN.rsplit("/", 1)[0] + "/" + DB
EVENTS = 160_000

TABLE = """CREATE TABLE bench (
    id bigint PRIMARY KEY, i32 int NOT NULL, i64 bigint, name varchar(64) NOT NULL, descr varchar(255),
    price numeric(12,2), ratio double precision, created_at timestamp(6) NOT NULL, updated_at timestamptz,
    flag boolean, payload jsonb)"""


def sql(url, *statements, autocommit=True):
    with psycopg.connect(url, autocommit=autocommit) as conn:
        for s in statements:
            conn.execute(s)


def fresh_database():
    """Drop sluice's slots on the benchmark database and create it anew. An autovacuum worker
    (the superuser's, which the sluice role may not terminate) can be on the old database
    right after a run: wait for it rather than fail the benchmark."""
    sql(ADMIN, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'sluice_bench'")
    for attempt in range(50):
        try:
            sql(ADMIN, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
            break
        except psycopg.errors.InsufficientPrivilege:
            if attempt == 49:
                raise
            time.sleep(0.2)
    sql(ADMIN, f"CREATE DATABASE {DB} OWNER sluice")


def write_backlog():
    with psycopg.connect(URL) as conn:
        for t in range(100):
            lo, hi = t * 1000 + 1, (t + 1) * 1000
            conn.execute(f"""INSERT INTO bench SELECT g, (g % 30000)::int, g * 1000003, 'name-' || g,
                'description for row ' || g || ' ' || repeat('x', 40), g / 100.0, g / 3.0,
                timestamp '2024-01-01' + g * interval '1.000001 second', NULL, false,
                jsonb_build_object('k', g, 'tags', jsonb_build_array('a', 'b'), 'nested', jsonb_build_object('x', 1))
                FROM generate_series({lo}::bigint, {hi}::bigint) g""")
            conn.commit()
        for t in range(50):
            lo, hi = t * 1000 + 1, (t + 1) * 1000
            conn.execute(f"""UPDATE bench SET i32 = i32 + 1, descr = 'updated ' || id, price = price + 1.5,
                updated_at = timestamptz '2024-06-01 12:00:00.123456+00', flag = true
                WHERE id BETWEEN {lo} AND {hi}""")
            conn.commit()
        for t in range(10):
            lo = 90_001 + t * 1000
            conn.execute(f"DELETE FROM bench WHERE id BETWEEN {lo} AND {lo + 999}")
            conn.commit()
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]




# The "typical" cleansing transform: a 6-column projection with a filter and a sha256.
TRANSFORM = """CREATE STREAM clean.bench AS
SELECT id, i32, upper(name) AS name, encode(sha256(descr), 'hex') AS descr_sha256,
       CAST(price AS DECIMAL(12, 2)) AS price, created_at
FROM bench.public.bench
WHERE i32 % 10 <> 0;
"""


# Catch-ups and snapshots take about a second, and their clock stops at the commit that holds
# the last row: a 1 s rotation interval would round their time up to whole seconds (runs were
# seen at 1.07 s and 2.15 s for the same work). The live-latency workload keeps 1 s.
ROTATE_INTERVAL = os.environ.get("BENCH_ROTATE_INTERVAL", "100ms")


def write_config(workdir, transform=False, interval=ROTATE_INTERVAL):
    """A fresh lake and the daemon's files; returns the path of sluice.yaml."""
    lake = os.path.join(workdir, "lake")
    shutil.rmtree(lake, ignore_errors=True)
    os.makedirs(os.path.join(workdir, "sources"), exist_ok=True)
    transforms = os.path.join(workdir, "transforms")
    shutil.rmtree(transforms, ignore_errors=True)
    os.makedirs(transforms)
    zones = "[raw]"
    if transform:
        zones = "[raw, cleansed]"
        with open(os.path.join(transforms, "clean.bench.sql"), "w") as f:
            f.write(TRANSFORM)
    with open(os.path.join(workdir, "sluice.yaml"), "w") as f:
        f.write(f"pipeline: bench\nsink:\n  path: file://{lake}\n  zones: {zones}\n"
                f"  rotate: {{ rows: 1000000, bytes: 256MiB, interval: {interval} }}\n"
                f"metrics: {{ listen: {ADDR} }}\n")
    with open(os.path.join(workdir, "sources", "bench.yaml"), "w") as f:
        f.write(f"name: bench\nkind: postgres\nurl: {URL}\ntables: [public.bench]\n")
    return os.path.join(workdir, "sluice.yaml")


def pg_recvlogical(slot, end_lsn):
    """Seconds for pg_recvlogical to drain `slot` up to `end_lsn` into /dev/null."""
    env = dict(os.environ, PGPASSWORD="sluice")
    t0 = time.monotonic()
    subprocess.run(["pg_recvlogical", "-h", "127.0.0.1", "-U", "sluice", "-d", DB, "--slot", slot, "--start",
                    "-o", "proto_version=1", "-o", "publication_names=sluice_bench", "-f", "/dev/null",
                    "-E", end_lsn, "--no-loop"], check=True, env=env)
    return time.monotonic() - t0


def one_run(sluice, workdir, transform=False):
    fresh_database()
    sql(URL, TABLE)
    config = write_config(workdir, transform)
    log = open(os.path.join(workdir, "sluice.log"), "a")

    # sluice creates its slot (empty snapshot) and stops; pg_recvlogical gets a slot of its own.
    p = subprocess.Popen([sluice, "run", "--config", config], stderr=log)
    while metric(ADDR, "sluice_sink_commits_total") in (None, 0.0):
        time.sleep(0.1)
    p.terminate()
    p.wait()
    sql(URL, "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')",
        "SELECT pg_create_logical_replication_slot('bench_recv2', 'pgoutput')")

    end_lsn = write_backlog()

    # The reference runs before sluice (cold) and again after it from a second slot (warm); the
    # faster of the two is the ceiling we compare against.
    recv_cold = pg_recvlogical("bench_recv", end_lsn)

    sluice_secs, rss_kb, cpu = run_until_committed(sluice, config, log, EVENTS, workdir)
    recv_warm = pg_recvlogical("bench_recv2", end_lsn)
    sql(ADMIN, "SELECT pg_drop_replication_slot('bench_recv')", "SELECT pg_drop_replication_slot('bench_recv2')")
    return {
        "sluice_events_per_s": EVENTS / sluice_secs,
        "pg_recvlogical_events_per_s": EVENTS / min(recv_cold, recv_warm),
        "sluice_seconds": sluice_secs,
        "peak_rss_mb": rss_kb / 1024,
        "cpu_s_per_million": cpu / EVENTS * 1e6,
    }


SNAPSHOT_ROWS = 1_000_000


def snapshot_run(sluice, workdir):
    """1M rows of the benchmark shape exist before sluice first starts: time the initial snapshot
    until every row is committed to Parquet."""
    fresh_database()
    sql(URL, TABLE)
    with psycopg.connect(URL) as conn:
        for lo in range(1, SNAPSHOT_ROWS + 1, 100_000):
            conn.execute(f"""INSERT INTO bench SELECT g, (g % 30000)::int, g * 1000003, 'name-' || g,
                'description for row ' || g || ' ' || repeat('x', 40), g / 100.0, g / 3.0,
                timestamp '2024-01-01' + g * interval '1.000001 second', timestamptz '2024-06-01 12:00:00+00', g % 2 = 0,
                jsonb_build_object('k', g, 'tags', jsonb_build_array('a', 'b'), 'nested', jsonb_build_object('x', 1))
                FROM generate_series({lo}::bigint, {lo + 99_999}::bigint) g""")
            conn.commit()
    sql(URL, "VACUUM ANALYZE bench")
    config = write_config(workdir)
    log = open(os.path.join(workdir, "sluice.log"), "a")
    secs, rss_kb, cpu = run_until_committed(sluice, config, log, SNAPSHOT_ROWS, workdir)
    return {"snapshot_rows_per_s": SNAPSHOT_ROWS / secs, "seconds": secs, "peak_rss_mb": rss_kb / 1024,
            "cpu_s_per_million": cpu / SNAPSHOT_ROWS * 1e6}


def latency_run(sluice, workdir, rate=10_000, seconds=15):
    """Steady `rate` changes/s for `seconds` into a running sluice (rotation interval 1 s):
    commit-to-lake latency per row = the lake commit's time minus the row's database commit time
    (`_ts_ms`), from the commit records and the files they list."""
    import glob
    import json as _json
    import pyarrow.parquet as pq
    fresh_database()
    sql(URL, "CREATE TABLE bench (id bigint PRIMARY KEY, v int, note text)")
    config = write_config(workdir, interval="1s")
    log = open(os.path.join(workdir, "sluice.log"), "a")
    p = subprocess.Popen([sluice, "run", "--config", config], stderr=log)
    while metric(ADDR, "sluice_sink_commits_total") in (None, 0.0):
        if p.poll() is not None:
            sys.exit(f"sluice exited early; see {workdir}/sluice.log")
        time.sleep(0.1)
    total = rate * seconds
    achieved = steady_inserts(URL, rate, seconds)
    while (metric(ADDR, "sluice_sink_rows_total") or 0) < total:
        if p.poll() is not None:
            sys.exit(f"sluice exited early; see {workdir}/sluice.log")
        time.sleep(0.05)
    rss_kb = peak_rss_kb(p.pid)
    p.terminate()
    p.wait()
    lake = os.path.join(workdir, "lake")
    latencies = []
    for path in glob.glob(os.path.join(lake, "_sluice", "commits", "*.json")):
        commit = _json.load(open(path))
        for f in commit.get("files", []):
            ts = pq.read_table(os.path.join(lake, f["path"]), columns=["_ts_ms"]).column("_ts_ms").to_pylist()
            latencies.extend(commit["committed_at_ms"] - t for t in ts)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    return {"rate": achieved, "rows": len(latencies), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "peak_rss_mb": rss_kb / 1024}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sluice")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--workload", choices=["catchup", "snapshot", "latency", "transform", "all"], default="all")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="sluice-bench-")
    if args.workload in ("transform", "all"):
        # Catch-up with and without the typical transform, alternating, in the same run.
        plain, cleansed = [], []
        for _ in range(args.runs):
            plain.append(one_run(args.sluice, workdir))
            cleansed.append(one_run(args.sluice, workdir, transform=True))
        p = statistics.median(r["sluice_events_per_s"] for r in plain)
        c = statistics.median(r["sluice_events_per_s"] for r in cleansed)
        rss = statistics.median(r["peak_rss_mb"] for r in cleansed)
        print()
        print(f"{'workload':<36} {'sluice ev/s':>12} {'overhead':>9} {'peak RSS MB':>12}")
        print(f"{'pg catch-up 160k, raw only':<36} {p:>12,.0f} {'':>9} {statistics.median(r['peak_rss_mb'] for r in plain):>12.1f}")
        print(f"{'pg catch-up 160k, raw + transform':<36} {c:>12,.0f} {(p / c - 1) * 100:>8.1f}% {rss:>12.1f}")
        print(json.dumps({"transform_runs": cleansed, "plain_runs": plain}))
        if args.workload == "transform":
            return
    if args.workload in ("latency", "all"):
        lat = latency_run(args.sluice, workdir)
        print()
        print(f"{'workload':<28} {'changes/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'target p99 ms':>14} {'peak RSS MB':>12}")
        print(f"{'pg live, commit-to-lake':<28} {lat['rate']:>10,.0f} {lat['p50_ms']:>8.0f} {lat['p99_ms']:>8.0f} "
              f"{'<= 1000 + 200':>14} {lat['peak_rss_mb']:>12.1f}")
        print(json.dumps({"latency": lat}))
        if args.workload == "latency":
            return
    if args.workload in ("snapshot", "all"):
        snaps = [snapshot_run(args.sluice, workdir) for _ in range(args.runs)]
        sm = {k: statistics.median(r[k] for r in snaps) for k in snaps[0]}
        print()
        print(f"{'workload':<28} {'rows/s':>12} {'seconds':>8} {'peak RSS MB':>12} {'CPU s/M rows':>13}")
        print(f"{'pg snapshot 1M rows':<28} {sm['snapshot_rows_per_s']:>12,.0f} {sm['seconds']:>8.1f} "
              f"{sm['peak_rss_mb']:>12.1f} {sm['cpu_s_per_million']:>13.2f}")
        print(json.dumps({"snapshot_runs": snaps}))
    if args.workload == "snapshot":
        return
    results = [one_run(args.sluice, workdir) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    ratio = med["sluice_events_per_s"] / med["pg_recvlogical_events_per_s"]
    print()
    print(f"{'workload':<28} {'sluice ev/s':>12} {'pg_recvlogical ev/s':>20} {'ratio':>6} {'peak RSS MB':>12} {'CPU s/M ev':>11}")
    print(f"{'pg catch-up 160k, raw zone':<28} {med['sluice_events_per_s']:>12,.0f} {med['pg_recvlogical_events_per_s']:>20,.0f} "
          f"{ratio:>6.2f} {med['peak_rss_mb']:>12.1f} {med['cpu_s_per_million']:>11.2f}")
    print(f"(median of {args.runs} run(s); sluice time includes process start, slot attach and the final commit)")
    print(json.dumps({"runs": results}, indent=None))


if __name__ == "__main__":
    main()
