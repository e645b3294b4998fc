"""Kafka-mode catch-up: the Postgres benchmark backlog (160,000 changes, see catchup.py) through
Kafka, next to the embedded pipeline on the same backlog in the same run.

Three rates per run, each from a fresh backlog:
- embedded: sluice in one process, database to the Parquet raw zone (catchup.py's run);
- producer alone: `sluice run --only sources`, database to the raw topic, timed until
  sluice_kafka_produced_records_total reaches the backlog (every record committed in a
  transaction with its source position);
- end to end: every role in one process, database to raw topic to the Parquet raw zone.

The broker is noida-db (the Kafka-protocol stand-in of ../shared/test-services.md) on the same
two cores, so the figures are a floor for a real Kafka cluster on its own machines.

Run through bench/run.sh --source kafka.
usage: kafka.py SLUICE_BINARY [--runs N]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import catchup
from catchup import EVENTS, TABLE, URL, fresh_database, sql, write_backlog, write_config
from harness import ADDR, cpu_seconds, metric, peak_rss_kb, steady_inserts

BROKERS = os.environ.get("SLUICE_KAFKA_BROKERS", "127.0.0.1:9092")


def restart_broker():
    """A fresh broker, with no topics. noida-db keeps every topic in memory and rewrites them
    all into one JSON file every few seconds: after a few runs of 160,000 records that takes a
    whole core of the two, all the time (measured: 100 CPU ticks a second while idle, 2 GB
    file), which the next run would pay for. A real broker does not, so each Kafka run gets a
    broker of its own."""
    broker("down")
    broker("up")


def broker(action):
    """scripts/services.sh up|down kafka."""
    services = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "services.sh")
    subprocess.run([services, action, "kafka"], check=True)


def kafka_config(workdir, extra=""):
    """catchup.py's configuration with `log.kind: kafka` and topics of this run's own; `extra`
    adds log.kafka settings (", key: value")."""
    config = write_config(workdir)
    prefix = f"bench{int(time.time() * 1000)}."
    with open(config) as f:
        text = f.read()
    text = text.replace("pipeline: bench\n", f"pipeline: bench{int(time.time())}\nlog:\n  kind: kafka\n"
                        f"  kafka: {{ brokers: \"{BROKERS}\", topic_prefix: \"{prefix}\", partitions: 3{extra} }}\n")
    with open(config, "w") as f:
        f.write(text)
    return config, prefix


def _receive(topic, ready, stop, out):
    """In a process of its own: read `topic` (read_committed) from its end and put, for every
    record, its arrival time minus its database commit time (the envelope's source.ts_ms)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": f"latency-{time.time()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  # Fetch again at once: a fetch the broker holds open would be counted as latency.
                  "fetch.wait.max.ms": 5})
    meta = c.list_topics(topic, timeout=10).topics[topic]
    parts = []
    for p in meta.partitions:
        _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        parts.append(TopicPartition(topic, p, high))
    c.assign(parts)
    ready.set()
    latencies = []
    while not stop.is_set():
        # One record at a time: `consume(n, timeout)` returns when it has n records or the
        # timeout passed, so a batch of them would have waited in the client up to that long
        # (up to 100 ms with consume(1000, 0.1), which the earlier tables counted as latency).
        msg = c.poll(0.01)
        if msg is None or msg.error() or msg.value() is None:
            continue
        now_ms = time.time() * 1000
        latencies.append(now_ms - json.loads(msg.value())["source"]["ts_ms"])
    c.close()
    out.put(latencies)


def latency_run(workdir, rate=10_000, seconds=15, interval=None):
    """Steady `rate` changes/s into `sluice run --only sources`: commit-to-raw-topic latency per
    record, from the database commit to a read_committed consumer receiving it. `interval`:
    the transaction_interval setting (None: sluice's default)."""
    import multiprocessing
    fresh_database()
    sql(URL, "CREATE TABLE bench (id bigint PRIMARY KEY, v int, note text)")
    setting = f", transaction_interval: {interval}" if interval else ""
    config, prefix = kafka_config(workdir, f", schemas: false{setting}")
    log = open(os.path.join(workdir, "sluice.log"), "a")
    p = subprocess.Popen([sluice_binary, "run", "--config", config, "--instance", "bench", "--only", "sources"],
                         stderr=log)
    sql(URL, "INSERT INTO bench VALUES (-1, 0, 'warm-up')")
    while (metric(ADDR, 'sluice_kafka_produced_records_total{stage="sources"') or 0) < 1:
        if p.poll() is not None:
            sys.exit(f"sluice exited early; see {workdir}/sluice.log")
        time.sleep(0.1)
    time.sleep(1)
    ready, stop, out = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Queue()
    receiver = multiprocessing.Process(target=_receive, args=(f"{prefix}bench.public.bench", ready, stop, out))
    receiver.start()
    ready.wait(30)
    achieved = steady_inserts(URL, rate, seconds)
    time.sleep(3)
    stop.set()
    latencies = sorted(out.get(timeout=60))
    receiver.join()
    rss_kb = peak_rss_kb(p.pid)
    commit = lambda part: metric(ADDR, f'sluice_kafka_transaction_commit_duration_seconds_{part}{{stage="sources"') or 0
    commits, commit_s = commit("count"), commit("sum")
    p.terminate()
    p.wait()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    return {"rate": achieved, "records": len(latencies), "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "transaction_interval": interval or "default", "commits": commits,
            "mean_commit_ms": commit_s / commits * 1000 if commits else None, "peak_rss_mb": rss_kb / 1024}


def fresh_backlog(workdir, only, extra=""):
    """A new database and backlog, sluice's slot created first (as catchup.py does); `extra` as
    in kafka_config."""
    fresh_database()
    sql(URL, TABLE)
    config, prefix = kafka_config(workdir, extra)
    log = open(os.path.join(workdir, "sluice.log"), "a")
    p = subprocess.Popen([sluice_binary, "run", "--config", config, "--instance", "bench"] + only, stderr=log)
    while metric(ADDR, "sluice_kafka_transactions_total") in (None, 0.0):
        if p.poll() is not None:
            sys.exit(f"sluice exited early; see {workdir}/sluice.log")
        time.sleep(0.1)
    p.terminate()
    p.wait()
    write_backlog()
    return config, log, f"{prefix}bench.public.bench"


def broker_alone(raw_topic, workdir):
    """The broker's own ingest rate, the reference for the Kafka catch-up: kcat (librdkafka, the
    client sluice uses, with sluice's idempotence, linger and compression settings) produces the
    records sluice wrote to `raw_topic` into a new topic of as many partitions. kcat has no
    transactions; it is a reference for what the broker takes in on these cores, not a bound
    (a confluent-kafka transactional producer was seen faster, 239k against 164k records/s)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    dump = os.path.join(workdir, "raw-topic.tsv")
    with open(dump, "w") as out:
        subprocess.run(["kcat", "-C", "-b", BROKERS, "-t", raw_topic, "-e", "-q",
                        "-X", "isolation.level=read_committed", "-f", "%k\t%s\n"],
                       stdout=out, check=True, timeout=300)
    with open(dump) as f:
        records = sum(1 for _ in f)
    copy = f"{raw_topic}.kcat"
    admin = AdminClient({"bootstrap.servers": BROKERS})
    for future in admin.create_topics([NewTopic(copy, 3, 1)]).values():
        future.result(30)
    broker = BrokerCpu()
    t0 = time.monotonic()
    subprocess.run(["kcat", "-P", "-b", BROKERS, "-t", copy, "-K", "\t", "-Z", "-z", "lz4",
                    "-X", "linger.ms=5", "-X", "enable.idempotence=true", "-l", dump],
                   check=True, timeout=300)
    secs = time.monotonic() - t0
    return {"records": records, "seconds": secs, "records_per_s": records / secs, "broker_cpu_s": broker.spent()}


def timed(config, log, only, counter, workdir):
    """Seconds until `counter` reaches the backlog, peak RSS (kB) and CPU seconds."""
    broker = BrokerCpu()
    t0 = time.monotonic()
    p = subprocess.Popen([sluice_binary, "run", "--config", config, "--instance", "bench"] + only, stderr=log)
    done = 0.0
    while done < EVENTS:
        if p.poll() is not None:
            sys.exit(f"sluice exited early; see {workdir}/sluice.log")
        done = metric(ADDR, counter) or 0.0
        time.sleep(0.02)
    secs = time.monotonic() - t0
    rss, cpu, broker_cpu = peak_rss_kb(p.pid), cpu_seconds(p.pid), broker.spent()
    p.terminate()
    p.wait()
    return {"events_per_s": EVENTS / secs, "seconds": secs, "peak_rss_mb": rss / 1024,
            "cpu_s_per_million": cpu / EVENTS * 1e6, "sluice_cpu_s": cpu, "broker_cpu_s": broker_cpu}


class BrokerCpu:
    """The CPU seconds noida-db's process spends from now to `spent()` (None if not found)."""

    def __init__(self):
        found = subprocess.run(["pgrep", "-f", "noida-db start"], capture_output=True, text=True).stdout.split()
        self.pid = int(found[0]) if found else None
        self.start = cpu_seconds(self.pid) if self.pid else None

    def spent(self):
        return cpu_seconds(self.pid) - self.start if self.pid else None


def main():
    global sluice_binary
    ap = argparse.ArgumentParser()
    ap.add_argument("sluice")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    sluice_binary = args.sluice
    workdir = tempfile.mkdtemp(prefix="sluice-bench-kafka-")
    embedded, producer, end_to_end = [], [], []
    for _ in range(args.runs):
        embedded.append(catchup.one_run(args.sluice, workdir))
        restart_broker()
        config, log, raw_topic = fresh_backlog(workdir, ["--only", "sources"])
        producer.append(timed(config, log, ["--only", "sources"],
                              'sluice_kafka_produced_records_total{stage="sources"', workdir))
        producer[-1]["broker_alone"] = broker_alone(raw_topic, workdir)
        restart_broker()
        config, log, _ = fresh_backlog(workdir, [])
        end_to_end.append(timed(config, log, [], 'sluice_sink_rows_total{zone="raw"', workdir))
    med = lambda runs, k: statistics.median(r[k] for r in runs)
    e = med(embedded, "sluice_events_per_s")
    print()
    print(f"{'workload (pg catch-up, 160k changes)':<44} {'ev/s':>10} {'vs embedded':>12} {'peak RSS MB':>12} {'CPU s/M':>8}")
    print(f"{'embedded: database to Parquet':<44} {e:>10,.0f} {'1.00':>12} {med(embedded, 'peak_rss_mb'):>12.1f} "
          f"{med(embedded, 'cpu_s_per_million'):>8.2f}")
    for name, runs in [("Kafka, producer alone: database to raw topic", producer),
                       ("Kafka, end to end: database to topic to Parquet", end_to_end)]:
        r = med(runs, "events_per_s")
        print(f"{name:<44} {r:>10,.0f} {r / e:>12.2f} {med(runs, 'peak_rss_mb'):>12.1f} {med(runs, 'cpu_s_per_million'):>8.2f}")
    print(f"(pg_recvlogical in the same runs: {med(embedded, 'pg_recvlogical_events_per_s'):,.0f} ev/s; "
          f"kcat producing the raw topic's records again: "
          f"{statistics.median(r['broker_alone']['records_per_s'] for r in producer):,.0f} records/s)")
    print(json.dumps({"embedded": embedded, "producer": producer, "end_to_end": end_to_end}))


if __name__ == "__main__":
    main()
