"""Every target of the performance issue in one run, printed as one table.

usage: all.py SLUICE [--runs N]

Runs, each from a fresh database, the workloads of catchup.py, mariadb.py and kafka.py: N times
the catch-ups (with their references, pg_recvlogical and the raw binlog dump, in the same run),
once the snapshots and the live-latency runs. Each row is the median over its runs; a ratio is
the median of the per-run ratios (sluice against the reference measured in the same run).
The last line is the JSON of every run, for the record.
"""
import argparse
import json
import statistics
import tempfile

import catchup
import kafka
import mariadb

MB_TARGET = 64


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def latency_row(name, run, p99_target_ms):
    """A table row of a live-latency run; no target (None) for a run shown for comparison."""
    target, met = ("none (latency includes the interval)", None) if p99_target_ms is None else \
        (f"p99 <= {p99_target_ms} ms", run["p99_ms"] <= p99_target_ms)
    return (name, f"{run['rate']:,.0f} ch/s", "", "", target, met,
            f"{run['p50_ms']:.0f} / {run['p99_ms']:.0f}", run["peak_rss_mb"], None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sluice")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    kafka.sluice_binary = args.sluice
    work = lambda name: tempfile.mkdtemp(prefix=f"sluice-bench-{name}-")
    runs = {k: [] for k in ["pg", "pg_transform", "maria", "producer", "producer_no_schemas"]}
    # noida-db keeps every topic in memory and saves it all now and then, which loads the cores
    # the other workloads share (seen: half their rate after some Kafka runs): it is stopped
    # until the Kafka workloads, which run last, each on a fresh one (kafka.restart_broker).
    kafka.broker("down")
    for i in range(args.runs):
        print(f"embedded run {i + 1} of {args.runs}", flush=True)
        runs["pg"].append(catchup.one_run(args.sluice, work("pg")))
        runs["pg_transform"].append(catchup.one_run(args.sluice, work("pgt"), transform=True))
        runs["maria"].append(mariadb.catchup_run(args.sluice, work("maria")))
    pg_snap = catchup.snapshot_run(args.sluice, work("pgsnap"))
    maria_snap = mariadb.snapshot_run(args.sluice, work("mariasnap"))
    live = catchup.latency_run(args.sluice, work("live"))
    for i in range(args.runs):
        print(f"kafka run {i + 1} of {args.runs}", flush=True)
        kafka.restart_broker()
        d = work("kafka")
        config, log, raw_topic = kafka.fresh_backlog(d, ["--only", "sources"])
        runs["producer"].append(kafka.timed(config, log, ["--only", "sources"],
                                            'sluice_kafka_produced_records_total{stage="sources"', d))
        runs["producer"][-1]["broker_alone"] = kafka.broker_alone(raw_topic, d)
        # The same without the Connect schema in every record (JsonConverter's
        # schemas.enable=false): the schema is 82% of each record's 4.4 KB.
        kafka.restart_broker()
        d = work("kafka")
        config, log, _ = kafka.fresh_backlog(d, ["--only", "sources"], ", schemas: false")
        runs["producer_no_schemas"].append(kafka.timed(config, log, ["--only", "sources"],
                                                       'sluice_kafka_produced_records_total{stage="sources"', d))
    kafka_live = []
    # The default interval against the target; 100 ms for the trade-off (its latency includes
    # the interval, so it is not held to the 50 ms).
    for interval in (None, "100ms"):
        kafka.restart_broker()
        kafka_live.append(kafka.latency_run(work("kafkalive"), interval=interval))

    pg, pgt, maria, producer = runs["pg"], runs["pg_transform"], runs["maria"], runs["producer"]
    for r in pg:
        r["ratio"] = r["sluice_events_per_s"] / r["pg_recvlogical_events_per_s"]
    for r in maria:
        r["ratio"] = r["sluice_events_per_s"] / r["raw_dump_events_per_s"]
    # Pairs: transform overhead against the plain run just before it, the producer against the
    # embedded run of the same number.
    overheads = [1 - t["sluice_events_per_s"] / p["sluice_events_per_s"] for p, t in zip(pg, pgt)]
    kafka_ratios = [k["events_per_s"] / p["sluice_events_per_s"] for p, k in zip(pg, producer)]
    bare = runs["producer_no_schemas"]
    bare_ratios = [k["events_per_s"] / p["sluice_events_per_s"] for p, k in zip(pg, bare)]
    rss = max(max(r["peak_rss_mb"] for r in pg), max(r["peak_rss_mb"] for r in maria))
    live_target = 1000 + 200

    rows = [
        ("pg catch-up 160k, raw zone", f"{median(pg, 'sluice_events_per_s'):,.0f} ev/s",
         f"pg_recvlogical {median(pg, 'pg_recvlogical_events_per_s'):,.0f}", f"{median(pg, 'ratio'):.2f}",
         ">= 0.80", median(pg, "ratio") >= 0.8, "", median(pg, "peak_rss_mb"), median(pg, "cpu_s_per_million")),
        ("mariadb catch-up 160k, raw zone", f"{median(maria, 'sluice_events_per_s'):,.0f} ev/s",
         f"raw binlog dump {median(maria, 'raw_dump_events_per_s'):,.0f}", f"{median(maria, 'ratio'):.2f}",
         ">= 300,000 ev/s", median(maria, "sluice_events_per_s") >= 300_000, "",
         median(maria, "peak_rss_mb"), median(maria, "cpu_s_per_million")),
        ("peak RSS, either catch-up (max of runs)", f"{rss:.1f} MB", "", "", f"<= {MB_TARGET} MB",
         rss <= MB_TARGET, "", rss, None),
        latency_row("pg live 10k/s, commit-to-lake (rotation 1 s)", live, live_target),
        latency_row("kafka live 10k/s, commit-to-raw-topic (default transaction_interval, 10 ms)",
                    kafka_live[0], 50),
        latency_row("kafka live 10k/s, commit-to-raw-topic (transaction_interval: 100ms, for comparison)",
                    kafka_live[1], None),
        ("pg snapshot 1M rows", f"{pg_snap['snapshot_rows_per_s']:,.0f} rows/s", "", "", ">= 250,000 rows/s",
         pg_snap["snapshot_rows_per_s"] >= 250_000, "", pg_snap["peak_rss_mb"], pg_snap["cpu_s_per_million"]),
        ("mariadb snapshot 1M rows", f"{maria_snap['snapshot_rows_per_s']:,.0f} rows/s", "", "",
         ">= 250,000 rows/s", maria_snap["snapshot_rows_per_s"] >= 250_000, "", maria_snap["peak_rss_mb"],
         maria_snap["cpu_s_per_million"]),
        ("pg catch-up + cleansing transform", f"{median(pgt, 'sluice_events_per_s'):,.0f} ev/s",
         "the raw-only run before it", f"cost {statistics.median(overheads) * 100:.1f}%", "cost <= 20%",
         statistics.median(overheads) <= 0.2, "", median(pgt, "peak_rss_mb"), median(pgt, "cpu_s_per_million")),
        ("kafka catch-up to the raw topic", f"{median(producer, 'events_per_s'):,.0f} ev/s",
         f"the embedded pg run of its number; kcat into the broker "
         f"{statistics.median(r['broker_alone']['records_per_s'] for r in producer):,.0f}",
         f"{statistics.median(kafka_ratios):.2f}", ">= 0.50",
         statistics.median(kafka_ratios) >= 0.5, "", median(producer, "peak_rss_mb"),
         median(producer, "cpu_s_per_million")),
        ("kafka catch-up to the raw topic, JSON without schemas", f"{median(bare, 'events_per_s'):,.0f} ev/s",
         "the embedded pg run of its number", f"{statistics.median(bare_ratios):.2f}", ">= 0.50",
         statistics.median(bare_ratios) >= 0.5, "", median(bare, "peak_rss_mb"), median(bare, "cpu_s_per_million")),
    ]
    print()
    print(f"| workload | sluice | reference (same run) | ratio | target | met | p50 / p99 ms | peak RSS MB | CPU s / M |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rate, ref, ratio, target, met, lat, mb, cpu in rows:
        cpu = "" if cpu is None else f"{cpu:.2f}"
        met = "" if met is None else ("yes" if met else "NO")
        print(f"| {name} | {rate} | {ref} | {ratio} | {target} | {met} | {lat} | {mb:.1f} | {cpu} |")
    print(f"(catch-ups: median of {args.runs} runs each; snapshots and live latency: one run each)")
    print(json.dumps({**runs, "pg_snapshot": pg_snap, "mariadb_snapshot": maria_snap, "live": live,
                      "kafka_live": kafka_live}))


if __name__ == "__main__":
    main()
