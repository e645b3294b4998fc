"""MariaDB benchmarks: catch-up of the foundation's workload (MariaDB variant of the table:
DATETIME(6), TIMESTAMP(6), BOOLEAN, JSON) into the Parquet raw zone, next to a raw binlog dump
of the same backlog in the same run (`mariadb-binlog --read-from-remote-server --raw`: the rate
the server hands the binlog out, the ceiling for any client); and the initial snapshot of a
1M-row table.

Workload: 100,000 inserts (100 transactions of one 1,000-row INSERT), 50,000 updates of 5
columns (ids 1..50000, 50 transactions), 10,000 deletes (10 transactions): 160,000 events.

Run through bench/run.sh (--source mariadb), which starts MariaDB and builds sluice in release
mode. usage: mariadb.py SLUICE_BINARY [--runs N] [--workload catchup|snapshot|all]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import pymysql

from harness import ADDR, metric, run_until_committed

DB = "sluice_bench"
EVENTS = 160_000
SNAPSHOT_ROWS = 1_000_000
# The clock stops at the commit that holds the last row, so the rotation interval bounds how
# soon that is; catch-up is measured with a short one (a user catching up sees the same rate).
ROTATE_INTERVAL = os.environ.get("BENCH_ROTATE_INTERVAL", "100ms")

TABLE = """CREATE TABLE bench (
    id BIGINT PRIMARY KEY, i32 INT NOT NULL, i64 BIGINT, name VARCHAR(64) NOT NULL, descr VARCHAR(255),
    price DECIMAL(12,2), ratio DOUBLE, created_at DATETIME(6) NOT NULL, updated_at TIMESTAMP(6) NULL,
    flag BOOLEAN, payload JSON)"""

ROWS = """SELECT seq, seq % 30000, seq * 1000003, CONCAT('name-', seq),
    CONCAT('description for row ', seq, ' ', REPEAT('x', 40)), seq / 100, seq / 3,
    TIMESTAMPADD(MICROSECOND, seq * 1000001, '2024-01-01 00:00:00'), {updated}, {flag},
    JSON_OBJECT('k', seq, 'tags', JSON_ARRAY('a', 'b'), 'nested', JSON_OBJECT('x', 1))
    FROM seq_{lo}_to_{hi}"""


def connect(db=None):
    return pymysql.connect(host="127.0.0.1", port=3306, user="sluice", password="sluice",
                           database=db, autocommit=True)


def fresh_database():
    with connect() as c, c.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
    with connect(DB) as c, c.cursor() as cur:
        cur.execute(TABLE)


def binlog_end():
    with connect() as c, c.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
        return file, int(pos)


def write_backlog():
    with connect(DB) as c, c.cursor() as cur:
        for t in range(100):
            lo, hi = t * 1000 + 1, (t + 1) * 1000
            cur.execute("INSERT INTO bench " + ROWS.format(updated="NULL", flag="FALSE", lo=lo, hi=hi))
        for t in range(50):
            lo, hi = t * 1000 + 1, (t + 1) * 1000
            cur.execute(f"""UPDATE bench SET i32 = i32 + 1, descr = CONCAT('updated ', id), price = price + 1.5,
                updated_at = '2024-06-01 12:00:00.123456', flag = TRUE WHERE id BETWEEN {lo} AND {hi}""")
        for t in range(10):
            lo = 90_001 + t * 1000
            cur.execute(f"DELETE FROM bench WHERE id BETWEEN {lo} AND {lo + 999}")


def write_config(workdir):
    lake = os.path.join(workdir, "lake")
    shutil.rmtree(lake, ignore_errors=True)
    os.makedirs(os.path.join(workdir, "sources"), exist_ok=True)
    os.makedirs(os.path.join(workdir, "transforms"), exist_ok=True)
    with open(os.path.join(workdir, "sluice.yaml"), "w") as f:
        f.write(f"pipeline: bench\nsink:\n  path: file://{lake}\n  zones: [raw]\n"
                f"  rotate: {{ rows: 1000000, bytes: 256MiB, interval: {ROTATE_INTERVAL} }}\n"
                f"metrics: {{ listen: {ADDR} }}\n" + os.environ.get("BENCH_EXTRA_CONFIG", ""))
    with open(os.path.join(workdir, "sources", "bench.yaml"), "w") as f:
        f.write(f"name: bench\nkind: mysql\nurl: mysql://sluice:sluice@127.0.0.1:3306/{DB}\n"
                f"tables: [{DB}.bench]\n")
    return os.path.join(workdir, "sluice.yaml")


def raw_dump(start_file, start_pos, workdir):
    """Seconds for mariadb-binlog to fetch the binlog from `start_file:start_pos` to its end."""
    out = os.path.join(workdir, "rawdump")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    t0 = time.monotonic()
    subprocess.run(["mariadb-binlog", "--read-from-remote-server", "--raw", "--host=127.0.0.1",
                    "--user=sluice", "--password=sluice", f"--start-position={start_pos}", "--to-last-log",
                    f"--result-file={out}/", start_file], check=True)
    secs = time.monotonic() - t0
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    return secs, size


def catchup_run(sluice, workdir):
    fresh_database()
    config = write_config(workdir)
    log = open(os.path.join(workdir, "sluice.log"), "a")
    # sluice records its starting position (empty snapshot) and stops.
    p = subprocess.Popen([sluice, "run", "--config", config], stderr=log)
    while metric(ADDR, "sluice_sink_commits_total") in (None, 0.0):
        time.sleep(0.1)
    p.terminate()
    p.wait()
    start_file, start_pos = binlog_end()
    write_backlog()
    # The reference before sluice (cold) and after it (warm); the faster is the ceiling.
    dump_cold, dump_bytes = raw_dump(start_file, start_pos, workdir)
    secs, rss_kb, cpu = run_until_committed(sluice, config, log, EVENTS, workdir)
    dump_warm, _ = raw_dump(start_file, start_pos, workdir)
    return {
        "sluice_events_per_s": EVENTS / secs,
        "raw_dump_events_per_s": EVENTS / min(dump_cold, dump_warm),
        "raw_dump_mb": dump_bytes / 1e6,
        "sluice_seconds": secs,
        "peak_rss_mb": rss_kb / 1024,
        "cpu_s_per_million": cpu / EVENTS * 1e6,
    }


def snapshot_run(sluice, workdir):
    fresh_database()
    with connect(DB) as c, c.cursor() as cur:
        for lo in range(1, SNAPSHOT_ROWS + 1, 100_000):
            cur.execute("INSERT INTO bench " + ROWS.format(
                updated="'2024-06-01 12:00:00'", flag="seq % 2 = 0", lo=lo, hi=lo + 99_999))
        cur.execute("ANALYZE TABLE bench")
    config = write_config(workdir)
    log = open(os.path.join(workdir, "sluice.log"), "a")
    secs, rss_kb, cpu = run_until_committed(sluice, config, log, SNAPSHOT_ROWS, workdir)
    return {"snapshot_rows_per_s": SNAPSHOT_ROWS / secs, "seconds": secs, "peak_rss_mb": rss_kb / 1024,
            "cpu_s_per_million": cpu / SNAPSHOT_ROWS * 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sluice")
    ap.add_argument("--runs", type=int, default=1)
    # The Postgres workloads latency and transform have no MariaDB variant: they run nothing here.
    ap.add_argument("--workload", choices=["catchup", "snapshot", "latency", "transform", "all"], default="all")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="sluice-bench-mariadb-")
    if args.workload in ("catchup", "all"):
        runs = [catchup_run(args.sluice, workdir) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        ratio = med["sluice_events_per_s"] / med["raw_dump_events_per_s"]
        print()
        print(f"{'workload':<32} {'sluice ev/s':>12} {'raw dump ev/s':>14} {'ratio':>6} {'peak RSS MB':>12} {'CPU s/M ev':>11}")
        print(f"{'mariadb catch-up 160k, raw zone':<32} {med['sluice_events_per_s']:>12,.0f} "
              f"{med['raw_dump_events_per_s']:>14,.0f} {ratio:>6.2f} {med['peak_rss_mb']:>12.1f} "
              f"{med['cpu_s_per_million']:>11.2f}")
        print(f"(median of {args.runs} run(s); sluice time includes process start and the final commit)")
        print(json.dumps({"mariadb_catchup_runs": runs}))
    if args.workload in ("snapshot", "all"):
        snaps = [snapshot_run(args.sluice, workdir) for _ in range(args.runs)]
        sm = {k: statistics.median(r[k] for r in snaps) for k in snaps[0]}
        print()
        print(f"{'workload':<32} {'rows/s':>12} {'seconds':>8} {'peak RSS MB':>12} {'CPU s/M rows':>13}")
        print(f"{'mariadb snapshot 1M rows':<32} {sm['snapshot_rows_per_s']:>12,.0f} {sm['seconds']:>8.1f} "
              f"{sm['peak_rss_mb']:>12.1f} {sm['cpu_s_per_million']:>13.2f}")
        print(json.dumps({"mariadb_snapshot_runs": snaps}))


if __name__ == "__main__":
    main()
