"""MongoDB benchmarks: catch-up of the foundation's workload (a MongoDB variant of the benchmark
table, one document per row, pre-images on as a production deployment keeps them) into the
Parquet raw zone, next to pymongo reading the same change stream backlog in the same run (the
rate the server hands the events out, the ceiling for any client); and the initial snapshot of
a collection.

The server here is SecantusDB, the MongoDB-wire stand-in of ../shared/test-services.md (a Python
server; no mongod can be had on these machines): its change stream rate bounds what sluice can
show, which is why the reference is measured on the same run.

Workload: 100,000 inserts (100 insert_many of 1,000), 50,000 updates of 5 fields (ids 1..50000,
50 bulk writes of 1,000), 10,000 deletes (10 delete_many): 160,000 events. BENCH_MONGO_SCALE
scales it (0.1: 16,000 events, the same mix), as the stand-in serves change streams slowly.

Run through bench/run.sh (--source mongodb). usage: mongodb.py SLUICE_BINARY [--runs N]
[--workload catchup|snapshot|all]
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import bson
import pymongo

from harness import ADDR, metric, run_until_committed

URL = os.environ.get("SLUICE_MONGO_URL", "mongodb://127.0.0.1:27017/?directConnection=true")
DB = "sluice_bench"
SCALE = float(os.environ.get("BENCH_MONGO_SCALE", "1"))
BATCHES = max(1, round(10 * SCALE))  # of 10,000 inserts, 5,000 updates and 1,000 deletes
EVENTS = 16_000 * BATCHES
SNAPSHOT_DOCS = int(os.environ.get("BENCH_MONGO_SNAPSHOT_DOCS", "200000"))
ROTATE_INTERVAL = os.environ.get("BENCH_ROTATE_INTERVAL", "100ms")
EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def document(i, updated=None, flag=False):
    return {
        "_id": i, "i32": i % 30000, "i64": i * 1000003, "name": f"name-{i}",
        "descr": f"description for row {i} " + "x" * 40,
        "price": bson.Decimal128(f"{i / 100:.2f}"), "ratio": i / 3,
        "created_at": EPOCH + datetime.timedelta(microseconds=i * 1000001),
        "updated_at": updated, "flag": flag,
        "payload": {"k": i, "tags": ["a", "b"], "nested": {"x": 1}},
    }


def fresh_collection(client):
    client.drop_database(DB)
    db = client[DB]
    db.command({"create": "bench", "changeStreamPreAndPostImages": {"enabled": True}})
    return db.bench


def write_backlog(coll):
    for t in range(10 * BATCHES):
        coll.insert_many([document(i) for i in range(t * 1000 + 1, (t + 1) * 1000 + 1)], ordered=True)
    when = datetime.datetime(2024, 6, 1, 12, 0, 0, 123000, tzinfo=datetime.timezone.utc)
    for t in range(5 * BATCHES):
        coll.bulk_write([pymongo.UpdateOne({"_id": i}, {
            "$inc": {"i32": 1}, "$set": {"descr": f"updated {i}", "updated_at": when, "flag": True,
                                         "price": bson.Decimal128(f"{i / 100 + 1.5:.2f}")}})
            for i in range(t * 1000 + 1, (t + 1) * 1000 + 1)], ordered=True)
    for t in range(BATCHES):
        lo = 9_000 * BATCHES + t * 1000 + 1
        coll.delete_many({"_id": {"$gte": lo, "$lte": lo + 999}})


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
        f.write(f"name: bench\nkind: mongodb\nurl: \"{URL}\"\ntables: [{DB}.bench]\n")
    return os.path.join(workdir, "sluice.yaml")


def raw_stream(client, start):
    """Seconds for pymongo to read the backlog's change events from cluster time `start`, with
    the pre-images sluice asks for."""
    t0 = time.monotonic()
    n = 0
    with client[DB].bench.watch(start_at_operation_time=start, full_document_before_change="whenAvailable",
                                full_document="updateLookup", batch_size=1000, max_await_time_ms=500) as s:
        while n < EVENTS:
            if s.try_next() is not None:
                n += 1
    return time.monotonic() - t0


def catchup_run(sluice, workdir):
    client = pymongo.MongoClient(URL)
    coll = fresh_collection(client)
    config = write_config(workdir)
    log = open(os.path.join(workdir, "sluice.log"), "a")
    # sluice records its starting position (empty snapshot) and stops.
    p = subprocess.Popen([sluice, "run", "--config", config], stderr=log)
    while metric(ADDR, "sluice_sink_commits_total") in (None, 0.0):
        time.sleep(0.1)
    p.terminate()
    p.wait()
    start = client.admin.command("ping")["operationTime"]
    t0 = time.monotonic()
    write_backlog(coll)
    write_secs = time.monotonic() - t0
    stream_cold = raw_stream(client, start)
    secs, rss_kb, cpu = run_until_committed(sluice, config, log, EVENTS, workdir)
    stream_warm = raw_stream(client, start)
    return {
        "sluice_events_per_s": EVENTS / secs,
        "raw_stream_events_per_s": EVENTS / min(stream_cold, stream_warm),
        "server_write_events_per_s": EVENTS / write_secs,
        "sluice_seconds": secs,
        "peak_rss_mb": rss_kb / 1024,
        "cpu_s_per_million": cpu / EVENTS * 1e6,
    }


def snapshot_run(sluice, workdir):
    client = pymongo.MongoClient(URL)
    coll = fresh_collection(client)
    when = datetime.datetime(2024, 6, 1, 12, tzinfo=datetime.timezone.utc)
    for lo in range(1, SNAPSHOT_DOCS + 1, 5000):
        coll.insert_many([document(i, when, i % 2 == 0) for i in range(lo, min(lo + 5000, SNAPSHOT_DOCS + 1))])
    config = write_config(workdir)
    log = open(os.path.join(workdir, "sluice.log"), "a")
    t0 = time.monotonic()
    n = sum(1 for _ in coll.find({}, batch_size=5000))
    find_secs = time.monotonic() - t0
    secs, rss_kb, cpu = run_until_committed(sluice, config, log, SNAPSHOT_DOCS, workdir)
    return {"snapshot_docs_per_s": SNAPSHOT_DOCS / secs, "pymongo_find_docs_per_s": n / find_secs,
            "seconds": secs, "peak_rss_mb": rss_kb / 1024, "cpu_s_per_million": cpu / SNAPSHOT_DOCS * 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sluice")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--workload", choices=["catchup", "snapshot", "latency", "transform", "all"], default="all")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="sluice-bench-mongodb-")
    if args.workload in ("catchup", "all"):
        runs = [catchup_run(args.sluice, workdir) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        ratio = med["sluice_events_per_s"] / med["raw_stream_events_per_s"]
        print()
        print(f"{'workload':<32} {'sluice ev/s':>12} {'pymongo ev/s':>13} {'ratio':>6} {'peak RSS MB':>12} {'CPU s/M ev':>11}")
        print(f"{f'mongodb catch-up {EVENTS // 1000}k, raw zone':<32} {med['sluice_events_per_s']:>12,.0f} "
              f"{med['raw_stream_events_per_s']:>13,.0f} {ratio:>6.2f} {med['peak_rss_mb']:>12.1f} "
              f"{med['cpu_s_per_million']:>11.2f}")
        print(f"(median of {args.runs} run(s); the server took the writes at "
              f"{med['server_write_events_per_s']:,.0f} ev/s)")
        print(json.dumps({"mongodb_catchup_runs": runs}))
    if args.workload in ("snapshot", "all"):
        snaps = [snapshot_run(args.sluice, workdir) for _ in range(args.runs)]
        sm = {k: statistics.median(r[k] for r in snaps) for k in snaps[0]}
        print()
        print(f"{'workload':<32} {'docs/s':>12} {'pymongo find':>13} {'seconds':>8} {'peak RSS MB':>12}")
        print(f"{f'mongodb snapshot {SNAPSHOT_DOCS // 1000}k docs':<32} {sm['snapshot_docs_per_s']:>12,.0f} "
              f"{sm['pymongo_find_docs_per_s']:>13,.0f} {sm['seconds']:>8.1f} {sm['peak_rss_mb']:>12.1f}")
        print(json.dumps({"mongodb_snapshot_runs": snaps}))


if __name__ == "__main__":
    main()
