//! Kafka mode end to end: Postgres and MariaDB changes into raw topics, through the transforms
//! into cleansed topics, and into the lake, with each role in its own process.
//!
//! The broker is noida-db, a Kafka-protocol server standing in for Apache Kafka: no Kafka or
//! Redpanda can be installed on these machines (see ../shared/test-services.md; it passed
//! transactions, `send_offsets_to_transaction`, read_committed and consumer groups there). It
//! loses its last seconds of writes on kill -9, so these tests kill sluice, never the broker.
//! Topics are read back as existing consumers read them: with confluent-kafka (tests/py/
//! topic_dump.py) and kcat, both with `isolation.level=read_committed`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::mysql::*;
use crate::common::*;
use serde_json::Value as Json;

fn brokers() -> String {
    std::env::var("SLUICE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The schema registry: tests/py/schema_registry.py, a stand-in for Confluent Schema Registry
/// (none can be installed here; scripts/services.sh starts it).
fn registry() -> String {
    std::env::var("SLUICE_SCHEMA_REGISTRY").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

/// A Kafka-mode pipeline's files, and the sluice processes running it.
struct Pipeline {
    dir: tempfile::TempDir,
    config: PathBuf,
    lake: PathBuf,
    /// Every topic of this run starts with it, so runs never share topics or groups.
    prefix: String,
    brokers: String,
    procs: Vec<RoleProc>,
}

/// One `sluice run` process (all roles, or one with `--only`).
struct RoleProc {
    name: String,
    args: Vec<String>,
    metrics: String,
    child: Option<Child>,
    log: PathBuf,
    /// More environment for the process (a failpoint to arm).
    env: Vec<(String, String)>,
}

impl Pipeline {
    /// `sources`: (name, kind, url, tables, extra lines); `transforms`: (file name, SQL).
    fn new(
        pipeline: &str,
        sources: &[(&str, &str, &str, &[&str], &str)],
        transforms: &[(&str, &str)],
    ) -> Pipeline {
        Self::with_kafka(pipeline, &brokers(), "", sources, transforms)
    }

    /// The same on `brokers`, with more `log.kafka` settings (`kafka`: ", key: value…").
    fn with_kafka(
        pipeline: &str,
        brokers: &str,
        kafka: &str,
        sources: &[(&str, &str, &str, &[&str], &str)],
        transforms: &[(&str, &str)],
    ) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let prefix = format!("it{nonce}.");
        let config = dir.path().join("sluice.yaml");
        std::fs::write(
            &config,
            format!(
                "pipeline: {pipeline}{nonce}\n\
                 log:\n  kind: kafka\n  kafka: {{ brokers: \"{}\", topic_prefix: \"{prefix}\", partitions: 3, transaction_interval: 50ms{kafka} }}\n\
                 sink:\n  path: file://{}\n  zones: [raw, cleansed, ods]\n  rotate: {{ rows: 700, interval: 300ms }}\n  ods_interval: 1s\n\
                 metrics: {{ listen: \"127.0.0.1:${{SLUICE_TEST_METRICS_PORT}}\" }}\n",
                brokers,
                lake.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("sources")).unwrap();
        for (name, kind, url, tables, extra) in sources {
            std::fs::write(
                dir.path().join("sources").join(format!("{name}.yaml")),
                format!(
                    "name: {name}\nkind: {kind}\nurl: {url}\ntables: [{}]\n{extra}",
                    tables.join(", ")
                ),
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("transforms")).unwrap();
        for (file, sql) in transforms {
            std::fs::write(dir.path().join("transforms").join(file), sql).unwrap();
        }
        Pipeline {
            dir,
            config,
            lake,
            prefix,
            brokers: brokers.to_string(),
            procs: Vec::new(),
        }
    }

    /// Add a process: `only` is a role or None for all; `instance` names it in its role.
    fn add(&mut self, only: Option<&str>, instance: &str) -> usize {
        let mut args = vec![
            "run".to_string(),
            "--config".into(),
            self.config.display().to_string(),
            "--instance".into(),
            instance.into(),
        ];
        if let Some(role) = only {
            args.extend(["--only".to_string(), role.to_string()]);
        }
        let name = format!("{}-{instance}", only.unwrap_or("all"));
        self.procs.push(RoleProc {
            log: self.dir.path().join(format!("{name}.log")),
            name,
            args,
            metrics: format!("127.0.0.1:{}", free_port()),
            child: None,
            env: Vec::new(),
        });
        self.procs.len() - 1
    }

    fn start(&mut self, i: usize) {
        let p = &mut self.procs[i];
        assert!(p.child.is_none(), "{} already runs", p.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .unwrap();
        let port = p.metrics.rsplit(':').next().unwrap().to_string();
        p.child = Some(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(&p.args)
                .env("SLUICE_LOG", "info,sluice=debug,librdkafka=warn")
                .env("SLUICE_TEST_METRICS_PORT", port)
                .envs(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn sluice"),
        );
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn terminate(&mut self, i: usize) {
        let Some(mut child) = self.procs[i].child.take() else {
            return;
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{} exited with {status}\n{}",
                    self.procs[i].name,
                    self.log(i)
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not stop within 30 s of SIGTERM", self.procs[i].name);
    }

    /// Every process still runs (none died of an error).
    fn assert_running(&mut self) {
        for i in 0..self.procs.len() {
            if let Some(child) = &mut self.procs[i].child
                && let Some(status) = child.try_wait().unwrap()
            {
                panic!(
                    "{} exited with {status}:\n{}",
                    self.procs[i].name,
                    self.log(i)
                );
            }
        }
    }

    /// Wait until a zone's change log implies `want` (key → [id, version]); on a timeout, fail
    /// with the differences and every process's log tail.
    async fn wait_for_zone(
        &self,
        zone: &str,
        stream: &str,
        want: &BTreeMap<String, Vec<Option<String>>>,
    ) {
        self.wait_for_zone_state(zone, stream, &["id", "version"], want)
            .await
    }

    /// The accounts table of a two-sink test landed: raw and cleansed zones equal to `want`,
    /// every version once, and the ODS (kept by the owner of partition 0) the current state.
    async fn assert_accounts_landed_once(
        &mut self,
        raw_stream: &str,
        want: &BTreeMap<String, Vec<Option<String>>>,
    ) {
        self.wait_for_zone("raw", raw_stream, want).await;
        self.wait_for_zone("cleansed", "clean.accounts", want).await;
        self.assert_running();
        for (zone, stream) in [("raw", raw_stream), ("cleansed", "clean.accounts")] {
            assert_version_chains(&zone_rows(&self.lake, zone, stream), want, "id", "version");
        }
        // 90 s: with the other Kafka tests running at once, 30 s was once not enough in CI.
        wait_for("the ODS to merge", Duration::from_secs(90), || async {
            ods_rows_by_key(&self.lake, raw_stream) == want.len()
        })
        .await;
    }

    /// Every process's log tail, for a failure message; the whole logs are kept for a look
    /// after the test.
    fn log_tails(&self) -> String {
        let mut logs = String::new();
        for (i, proc) in self.procs.iter().enumerate() {
            let log = self.log(i);
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| !l.contains("committed"))
                .take(40)
                .collect();
            logs.push_str(&format!("\n--- {} ---\n", proc.name));
            for line in tail.into_iter().rev() {
                logs.push_str(line);
                logs.push('\n');
            }
        }
        let keep = std::env::temp_dir().join("sluice-kafka-test-logs");
        let _ = std::fs::create_dir_all(&keep);
        for proc in &self.procs {
            let _ = std::fs::copy(&proc.log, keep.join(format!("{}.log", proc.name)));
        }
        logs.push_str(&format!("\n(logs kept in {})", keep.display()));
        logs
    }

    /// Wait for a zone's state (key `id` → `columns`) to equal `want`.
    async fn wait_for_zone_state(
        &self,
        zone: &str,
        stream: &str,
        columns: &[&str],
        want: &BTreeMap<String, Vec<Option<String>>>,
    ) {
        let got = || state_from_log(&zone_rows(&self.lake, zone, stream), "id", columns);
        if let Err(diff) = wait_for_state(Duration::from_secs(120), want, got).await {
            panic!(
                "{zone}/{stream} did not catch up: {diff}\n{}",
                self.log_tails()
            );
        }
    }

    /// Wait for a process to exit by itself.
    fn wait_exit(&mut self, i: usize, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        let child = self.procs[i].child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.procs[i].child = None;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not stop:\n{}",
                self.procs[i].name,
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.procs[i].log).unwrap_or_default()
    }

    fn metric(&self, i: usize, prefix: &str) -> f64 {
        metric_sum(
            &http_get(&self.procs[i].metrics, "/metrics").unwrap_or_default(),
            prefix,
        )
    }

    fn topic(&self, stream: &str) -> String {
        format!("{}{stream}", self.prefix)
    }

    /// Every committed record of the streams' topics, read by confluent-kafka.
    fn dump(&self, streams: &[&str]) -> Vec<Json> {
        self.dump_with(&[], streams)
    }

    /// The same for Avro topics, decoded by confluent-kafka's AvroDeserializer.
    fn dump_avro(&self, streams: &[&str]) -> Vec<Json> {
        self.dump_with(&["--registry".into(), registry()], streams)
    }

    fn dump_with(&self, options: &[String], streams: &[&str]) -> Vec<Json> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/topic_dump.py");
        let mut args = vec![script.to_string()];
        args.extend(options.iter().cloned());
        args.push(self.brokers.clone());
        args.extend(streams.iter().map(|s| self.topic(s)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python_stdout(&args)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill9(i);
        }
    }
}

/// A topic's records as change-log rows (op, `sluice.seq`, the image's `columns` as text),
/// sorted by sequence, for the same checks as the lake's rows. Also checks what every
/// consumer relies on: a Debezium envelope with its schema (embedded in JSON, a registry id
/// in Avro), and each key in one partition.
fn topic_rows(records: &[Json], columns: &[&str]) -> Vec<LakeRow> {
    let mut partition_of: BTreeMap<String, i64> = BTreeMap::new();
    let mut rows: Vec<LakeRow> = records
        .iter()
        .map(|r| {
            let avro = r.get("value_schema_id").is_some();
            let (payload, key) = if avro {
                assert!(r["value_schema_id"].is_u64(), "no schema id: {r}");
                (&r["value"], r["key"].to_string())
            } else {
                assert!(r["value"]["schema"].is_object(), "no embedded schema: {r}");
                (&r["value"]["payload"], r["key"]["payload"].to_string())
            };
            let op = payload["op"].as_str().unwrap().to_string();
            assert!(["r", "c", "u", "d"].contains(&op.as_str()), "op {op}");
            assert!(
                payload["source"]["connector"].is_string(),
                "no source block: {r}"
            );
            let image = if op == "d" {
                &payload["before"]
            } else {
                &payload["after"]
            };
            let partition = r["partition"].as_i64().unwrap();
            assert_eq!(
                *partition_of.entry(key.clone()).or_insert(partition),
                partition,
                "key {key} is in two partitions"
            );
            let values = columns
                .iter()
                .map(|c| {
                    let v = match &image[*c] {
                        Json::Null => None,
                        Json::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    };
                    (c.to_string(), v)
                })
                .collect();
            LakeRow {
                op,
                seq: r["headers"]["sluice.seq"].as_str().unwrap().to_string(),
                values,
                file: PathBuf::new(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.seq.cmp(&b.seq));
    rows
}

/// Records of a topic counted by kcat (read_committed), if kcat is installed.
fn kcat_count(topic: &str) -> Option<usize> {
    let out = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &brokers(),
            "-t",
            topic,
            "-e",
            "-q",
            "-f",
            "%o\\n",
        ])
        .args(["-X", "isolation.level=read_committed"])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kcat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).lines().count())
}

const CLEAN_ORDERS: &str = "CREATE STREAM clean.orders WITH (dlq = 'dlq.orders') AS
SELECT id, version, lower(email) AS email, sha256(email) AS email_hash, CAST(amount AS DECIMAL(12,2)) AS amount
FROM pg.public.orders
WHERE status <> 'test';
";

const CLEAN_ITEMS: &str = "CREATE STREAM clean.items AS
SELECT id, version, upper(name) AS name, price
FROM maria.sluice_it_kitems.items;
";

#[tokio::test(flavor = "multi_thread")]
async fn postgres_and_mariadb_changes_flow_through_raw_and_cleansed_topics_into_the_lake() {
    let pg = TestDb::create("sluice_it_kafka_flow").await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, version int NOT NULL, email text, amount numeric(12,2), status text);
             INSERT INTO orders SELECT g, 0, 'User' || g || '@Example.com', g * 1.25, CASE WHEN g % 7 = 0 THEN 'test' ELSE 'paid' END
             FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
    let my = MyDb::create("sluice_it_kitems").await;
    let mut conn = my.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, name varchar(64), price decimal(10,2));\n\
         INSERT INTO items SELECT seq, 0, CONCAT('item', seq), seq / 4 FROM seq_1_to_1500",
    )
    .await;

    let mut p = Pipeline::new(
        "flow",
        &[
            ("pg", "postgres", &pg.url, &["public.orders"], ""),
            (
                "maria",
                "mysql",
                &my.url,
                &["sluice_it_kitems.items"],
                "server_id: 7401\n",
            ),
        ],
        &[
            ("clean.orders.sql", CLEAN_ORDERS),
            ("clean.items.sql", CLEAN_ITEMS),
        ],
    );
    let all = p.add(None, "solo");
    p.start(all);

    // Changes while it streams: updates bump `version`, deletes, inserts, a key-changing update.
    wait_for(
        "the snapshots in the lake",
        Duration::from_secs(90),
        || async {
            zone_row_count(&p.lake, "raw", "pg.public.orders") >= 2000
                && zone_row_count(&p.lake, "raw", "maria.sluice_it_kitems.items") >= 1500
        },
    )
    .await;
    for round in 0..5 {
        client
            .batch_execute(&format!(
                "UPDATE orders SET version = version + 1, amount = amount + 1 WHERE id % 5 = {round};
                 DELETE FROM orders WHERE id = {};
                 INSERT INTO orders VALUES ({}, 0, 'New{round}@Example.com', 9.99, 'paid');",
                100 + round,
                5000 + round
            ))
            .await
            .unwrap();
        my_exec(
            &mut conn,
            &format!(
                "UPDATE items SET version = version + 1, price = price + 1 WHERE id % 4 = {round};\n\
                 DELETE FROM items WHERE id = {};\n\
                 INSERT INTO items VALUES ({}, 0, 'fresh', 1.50)",
                200 + round,
                9000 + round
            ),
        )
        .await;
    }

    let want_orders = table_state(
        &client,
        "orders",
        &["id", "version", "email", "amount", "status"],
    )
    .await;
    let want_items = my_table_state(&mut conn, "items", &["id", "version", "name", "price"]).await;
    wait_for(
        "the lake to hold the tables",
        Duration::from_secs(120),
        || async {
            let orders = state_from_log(
                &zone_rows(&p.lake, "raw", "pg.public.orders"),
                "id",
                &["id", "version", "email", "amount", "status"],
            );
            let items = state_from_log(
                &zone_rows(&p.lake, "raw", "maria.sluice_it_kitems.items"),
                "id",
                &["id", "version", "name", "price"],
            );
            orders == want_orders && items == want_items
        },
    )
    .await;
    // The cleansed streams equal their views over the tables.
    let view_orders: BTreeMap<String, Vec<Option<String>>> = want_orders
        .iter()
        .filter(|(_, row)| row[4].as_deref() != Some("test"))
        .map(|(k, row)| {
            (
                k.clone(),
                vec![
                    row[0].clone(),
                    row[1].clone(),
                    row[2].as_ref().map(|e| e.to_lowercase()),
                    row[3].clone(),
                ],
            )
        })
        .collect();
    let view_items: BTreeMap<String, Vec<Option<String>>> = want_items
        .iter()
        .map(|(k, row)| {
            (
                k.clone(),
                vec![
                    row[0].clone(),
                    row[1].clone(),
                    row[2].as_ref().map(|n| n.to_uppercase()),
                    row[3].clone(),
                ],
            )
        })
        .collect();
    let cleansed_states = || {
        (
            state_from_log(
                &zone_rows(&p.lake, "cleansed", "clean.orders"),
                "id",
                &["id", "version", "email", "amount"],
            ),
            state_from_log(
                &zone_rows(&p.lake, "cleansed", "clean.items"),
                "id",
                &["id", "version", "name", "price"],
            ),
        )
    };
    let equal = wait_until(Duration::from_secs(60), || async {
        cleansed_states() == (view_orders.clone(), view_items.clone())
    })
    .await;
    if !equal {
        let (orders, items) = cleansed_states();
        panic!(
            "the cleansed zone differs from the views:\nclean.orders: {}\nclean.items: {}",
            differences(&orders, &view_orders),
            differences(&items, &view_items)
        );
    }
    p.assert_running();
    assert!(
        p.metric(
            all,
            "sluice_kafka_transactions_total{stage=\"sources\",outcome=\"committed\"}"
        ) > 0.0
    );
    assert!(
        p.metric(
            all,
            "sluice_kafka_transactions_total{stage=\"transforms\",outcome=\"committed\"}"
        ) > 0.0
    );
    assert!(p.metric(all, "sluice_kafka_produced_records_total") > 0.0);
    p.terminate(all);

    // The topics, as a Debezium consumer reads them: each change once, each key in one
    // partition, the same records the lake holds.
    for (stream, cleansed, columns) in [
        ("pg.public.orders", "clean.orders", ["id", "version"]),
        (
            "maria.sluice_it_kitems.items",
            "clean.items",
            ["id", "version"],
        ),
    ] {
        let raw = topic_rows(&p.dump(&[stream]), &columns);
        let lake = zone_rows(&p.lake, "raw", stream);
        assert_eq!(raw.len(), lake.len(), "{stream}: topic and lake disagree");
        let mut seqs: Vec<&str> = raw.iter().map(|r| r.seq.as_str()).collect();
        seqs.dedup();
        assert_eq!(
            seqs.len(),
            raw.len(),
            "{stream}: a change is in the topic twice"
        );
        let cleansed_rows = topic_rows(&p.dump(&[cleansed]), &columns);
        assert_eq!(
            cleansed_rows.len(),
            zone_rows(&p.lake, "cleansed", cleansed).len()
        );
        if let Some(n) = kcat_count(&p.topic(stream)) {
            assert_eq!(n, raw.len(), "kcat reads {n} records of {stream}");
        }
    }
    // Debezium's value encodings survive the topic: the decimal is Connect's Decimal.
    let sample = p.dump(&["pg.public.orders"]).remove(0);
    let amount = sample["value"]["schema"]["fields"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "amount")
        .unwrap()
        .clone();
    assert_eq!(amount["name"], "org.apache.kafka.connect.data.Decimal");

    // A poison record in a raw topic (not JSON, written by someone else): the transform
    // dead-letters it with the reason and where it was, the sink puts it in the lake's dlq zone,
    // and neither stops.
    p.start(all);
    let produce = format!(
        "from confluent_kafka import Producer\np = Producer({{'bootstrap.servers': '{}'}})\np.produce('{}', key=b'{{\"id\": 1}}', value=b'not json at all')\np.flush(10)\n",
        brokers(),
        p.topic("pg.public.orders")
    );
    python_stdout(&["-c", &produce]);
    wait_for(
        "the poison record in both dead-letter queues",
        Duration::from_secs(60),
        || async {
            let letters = |stream| {
                zone_rows(&p.lake, "dlq", stream).into_iter().any(|r| {
                    r.values["error"]
                        .as_deref()
                        .is_some_and(|e| e.contains("cannot decode the record"))
                })
            };
            letters("dlq.orders") && letters("pg.public.orders")
        },
    )
    .await;
    p.assert_running();
    p.terminate(all);
}

/// The registry's answer to a request, as JSON (with urllib, in the tests' Python).
fn registry_call(method: &str, path: &str, body: &str) -> Json {
    let code = format!(
        "import urllib.request, urllib.error, sys\n\
         r = urllib.request.Request('{}{path}', data={data}, method='{method}', headers={{'Content-Type': 'application/vnd.schemaregistry.v1+json'}})\n\
         try:\n    print(urllib.request.urlopen(r).read().decode())\n\
         except urllib.error.HTTPError as e:\n    print(e.read().decode())\n",
        registry(),
        data = if body.is_empty() {
            "None".to_string()
        } else {
            format!("{body:?}.encode()")
        },
    );
    serde_json::from_str(&python_stdout(&["-c", &code])).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_records_go_through_the_registry_evolve_and_stop_at_an_incompatible_change() {
    let pg = TestDb::create("sluice_it_kafka_avro").await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, version int NOT NULL, email text, amount numeric(12,2), status text);
             INSERT INTO orders SELECT g, 0, 'User' || g || '@Example.com', g * 1.25, CASE WHEN g % 7 = 0 THEN 'test' ELSE 'paid' END
             FROM generate_series(1, 300) g;",
        )
        .await
        .unwrap();
    let my = MyDb::create("sluice_it_kavro").await;
    let mut conn = my.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, name varchar(64), price decimal(10,2));\n\
         INSERT INTO items SELECT seq, 0, CONCAT('item', seq), seq / 4 FROM seq_1_to_200",
    )
    .await;
    let mut p = Pipeline::with_kafka(
        "avro",
        &brokers(),
        &format!(", format: avro, schema_registry: \"{}\"", registry()),
        &[
            // Its own slot: another test runs a source `pg` on this server at the same time.
            (
                "pg",
                "postgres",
                &pg.url,
                &["public.orders"],
                "slot: sluice_pg_avro\n",
            ),
            (
                "maria",
                "mysql",
                &my.url,
                &["sluice_it_kavro.items"],
                "server_id: 7402\n",
            ),
        ],
        &[("clean.orders.sql", CLEAN_ORDERS)],
    );
    let orders_subject = format!("{}-value", p.topic("pg.public.orders"));
    let items_subject = format!("{}-value", p.topic("maria.sluice_it_kavro.items"));
    let all = p.add(None, "solo");
    p.start(all);
    client
        .batch_execute("UPDATE orders SET version = version + 1, amount = amount + 1 WHERE id % 3 = 0; DELETE FROM orders WHERE id = 10;")
        .await
        .unwrap();
    my_exec(
        &mut conn,
        "UPDATE items SET version = version + 1 WHERE id % 2 = 0",
    )
    .await;

    let order_columns = ["id", "version", "email", "amount", "status"];
    let want_orders = table_state(&client, "orders", &order_columns).await;
    p.wait_for_zone_state("raw", "pg.public.orders", &order_columns, &want_orders)
        .await;
    let item_columns = ["id", "version", "name", "price"];
    let want_items = my_table_state(&mut conn, "items", &item_columns).await;
    p.wait_for_zone_state(
        "raw",
        "maria.sluice_it_kavro.items",
        &item_columns,
        &want_items,
    )
    .await;
    let view: BTreeMap<String, Vec<Option<String>>> = want_orders
        .iter()
        .filter(|(_, row)| row[4].as_deref() != Some("test"))
        .map(|(k, row)| {
            (
                k.clone(),
                vec![
                    row[0].clone(),
                    row[1].clone(),
                    row[2].as_ref().map(|e| e.to_lowercase()),
                    row[3].clone(),
                ],
            )
        })
        .collect();
    p.wait_for_zone_state(
        "cleansed",
        "clean.orders",
        &["id", "version", "email", "amount"],
        &view,
    )
    .await;

    // A compatible change (a nullable column): a second version of the subject.
    client
        .batch_execute("ALTER TABLE orders ADD COLUMN note text; INSERT INTO orders VALUES (9001, 0, 'n@example.com', 1.00, 'paid', 'hello');")
        .await
        .unwrap();
    let order_columns = ["id", "version", "email", "amount", "status", "note"];
    let want_orders = table_state(&client, "orders", &order_columns).await;
    p.wait_for_zone_state("raw", "pg.public.orders", &order_columns, &want_orders)
        .await;
    assert_eq!(
        registry_call("GET", &format!("/subjects/{orders_subject}/versions"), ""),
        serde_json::json!([1, 2])
    );

    // An incompatible one (int to text): the registry refuses it, and sluice stops naming the
    // subject and the fix, with nothing of the change acknowledged.
    my_exec(
        &mut conn,
        "ALTER TABLE items MODIFY version varchar(20) NOT NULL;\n\
         UPDATE items SET version = 'v-two' WHERE id = 1",
    )
    .await;
    let status = p.wait_exit(all, Duration::from_secs(60));
    assert!(!status.success());
    let log = p.log(all);
    assert!(
        log.contains(&format!(
            "refused the schema of subject `{items_subject}` (409)"
        )) && log.contains("PUT /config/"),
        "{log}"
    );

    // Relaxed for that subject, a restart goes on from where it stopped: each change once.
    let relaxed = registry_call(
        "PUT",
        &format!("/config/{items_subject}"),
        r#"{"compatibility": "NONE"}"#,
    );
    assert_eq!(relaxed["compatibility"], "NONE");
    p.start(all);
    my_exec(
        &mut conn,
        "INSERT INTO items VALUES (9100, 'v-new', 'late', 2.50)",
    )
    .await;
    let want_items = my_table_state(&mut conn, "items", &item_columns).await;
    p.wait_for_zone_state(
        "raw",
        "maria.sluice_it_kavro.items",
        &item_columns,
        &want_items,
    )
    .await;
    p.assert_running();
    p.terminate(all);

    // The topics as Avro consumers read them (confluent-kafka's AvroDeserializer, with the
    // writer's schema from the registry): every change once, the lake's records.
    for stream in [
        "pg.public.orders",
        "maria.sluice_it_kavro.items",
        "clean.orders",
    ] {
        let zone = if stream.starts_with("clean") {
            "cleansed"
        } else {
            "raw"
        };
        let records = p.dump_avro(&[stream]);
        let rows = topic_rows(&records, &["id", "version"]);
        assert_eq!(
            rows.len(),
            zone_rows(&p.lake, zone, stream).len(),
            "{stream}: topic and lake disagree"
        );
        let mut seqs: Vec<&str> = rows.iter().map(|r| r.seq.as_str()).collect();
        seqs.dedup();
        assert_eq!(
            seqs.len(),
            rows.len(),
            "{stream}: a change is in the topic twice"
        );
        // kcat here has no Avro support (Debian builds it without libserdes): it counts.
        if let Some(n) = kcat_count(&p.topic(stream)) {
            assert_eq!(n, rows.len(), "kcat reads {n} records of {stream}");
        }
        let key_ids: std::collections::BTreeSet<u64> = records
            .iter()
            .filter_map(|r| r["key_schema_id"].as_u64())
            .collect();
        assert_eq!(key_ids.len(), 1, "{stream}: the key schema never changed");
    }
    // Debezium's value encodings through Avro: the decimal is exact, the schema id registered
    // under the topic's subject, the first version before the column was added.
    let records = p.dump_avro(&["pg.public.orders"]);
    let first = records
        .iter()
        .find(|r| r["key"]["id"] == 1 && r["value"]["op"] == "r")
        .expect("the snapshot row of id 1");
    assert_eq!(first["value"]["after"]["amount"], "1.25");
    assert_eq!(first["value"]["after"]["email"], "User1@Example.com");
    let v1 = registry_call("GET", &format!("/subjects/{orders_subject}/versions/1"), "");
    assert_eq!(first["value_schema_id"], v1["id"]);
    let late = records
        .iter()
        .find(|r| r["key"]["id"] == 9001)
        .expect("row 9001");
    assert_eq!(late["value"]["after"]["note"], "hello");
    let v2 = registry_call("GET", &format!("/subjects/{orders_subject}/versions/2"), "");
    assert_eq!(late["value_schema_id"], v2["id"]);
}

/// A broker of one test's own, to stop and start: noida-db again, on a free port with its own
/// data folder (`noida-db down` saves its data, so the topics survive a restart).
struct OwnBroker {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnBroker {
    fn start() -> OwnBroker {
        let broker = OwnBroker {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        };
        broker.up();
        broker
    }

    fn noida(&self, args: &[&str]) {
        let noida = std::path::Path::new(&python()).with_file_name("noida-db");
        let out = Command::new(noida)
            .args(args)
            .args(["--data-dir", self.dir.path().to_str().unwrap()])
            .output()
            .expect("noida-db (scripts/services.sh up kafka)");
        assert!(
            out.status.success(),
            "noida-db {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let port = self.port.to_string();
        self.noida(&[
            "up",
            "--host",
            "127.0.0.1",
            "--only",
            "kafka",
            "--kafka-port",
            &port,
        ]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.brokers()).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "noida-db did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn down(&self) {
        self.noida(&["down"]);
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let noida = std::path::Path::new(&python()).with_file_name("noida-db");
        let _ = Command::new(noida)
            .args(["down", "--data-dir", self.dir.path().to_str().unwrap()])
            .output();
    }
}

/// Resident memory of a process, from /proc, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread")]
async fn while_the_broker_is_down_nothing_is_acknowledged_and_after_it_nothing_is_lost() {
    let broker = OwnBroker::start();
    let pg = TestDb::create("sluice_it_kafka_outage").await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, version int NOT NULL, pad text);
             INSERT INTO t SELECT g, 0, repeat('x', 200) FROM generate_series(1, 5000) g;",
        )
        .await
        .unwrap();
    let mut p = Pipeline::with_kafka(
        "outage",
        &broker.brokers(),
        "",
        &[("ko", "postgres", &pg.url, &["public.t"], "")],
        &[],
    );
    let all = p.add(None, "solo");
    p.start(all);
    let want = table_state(&client, "t", &["id", "version"]).await;
    p.wait_for_zone("raw", "ko.public.t", &want).await;

    // The broker goes away; the database goes on changing.
    broker.down();
    let slot_lsn = || async {
        let row = client
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE database = current_database()",
                &[],
            )
            .await
            .unwrap();
        lsn(row.get(0))
    };
    let pid = p.procs[all].child.as_ref().unwrap().id();
    let mut peak_rss: f64 = 0.0;
    let mut first_write_end = None;
    for round in 0..40 {
        client
            .batch_execute(&format!(
                "UPDATE t SET version = version + 1 WHERE id % 40 = {round}; \
                 INSERT INTO t VALUES ({}, 0, repeat('y', 200));",
                10_000 + round
            ))
            .await
            .unwrap();
        if first_write_end.is_none() {
            let row = client
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .unwrap();
            first_write_end = Some(lsn(row.get(0)));
        }
        peak_rss = peak_rss.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // sluice waits (or restarts its stages) without exiting, and the slot has not been told
    // that any change of the outage is safe: they all stay in the WAL.
    p.assert_running();
    let confirmed = slot_lsn().await;
    assert!(
        confirmed < first_write_end.unwrap(),
        "the slot confirmed {confirmed:X}, past the first change written while the broker was down ({:X})",
        first_write_end.unwrap()
    );
    eprintln!("peak RSS of sluice while the broker was down: {peak_rss:.1} MiB");

    // The broker comes back: every change arrives, once.
    broker.up();
    let want = table_state(&client, "t", &["id", "version"]).await;
    p.wait_for_zone("raw", "ko.public.t", &want).await;
    p.assert_running();
    p.terminate(all);
    let counts = assert_version_chains(
        &zone_rows(&p.lake, "raw", "ko.public.t"),
        &want,
        "id",
        "version",
    );
    assert_version_chains(
        &topic_rows(&p.dump(&["ko.public.t"]), &["id", "version"]),
        &want,
        "id",
        "version",
    );
    assert!(counts["u"] >= 5000, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_any_role_leaves_topics_and_lake_with_every_change_once() {
    const INITIAL: i64 = 20_000;
    let pg = TestDb::create("sluice_it_kafka_crash").await;
    let client = pg.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, version int NOT NULL, balance numeric(12,2), note text);
             INSERT INTO accounts SELECT g, 0, 0, repeat('n', 100) FROM generate_series(1, {INITIAL}) g;"
        ))
        .await
        .unwrap();
    let mut p = Pipeline::new(
        "crash",
        &[(
            "kc",
            "postgres",
            &pg.url,
            &["public.accounts"],
            "snapshot_chunk_rows: 2500\n",
        )],
        &[(
            "clean.accounts.sql",
            // A projection: every raw change has one cleansed change, so the same version
            // chains prove the cleansed topic and zone exact. (A filter would also pass
            // key-only deletes of rows outside the view, which the flow test covers.)
            "CREATE STREAM clean.accounts AS\nSELECT id, version, balance FROM kc.public.accounts;\n",
        )],
    );
    let roles = [
        p.add(Some("sources"), "s1"),
        p.add(Some("transforms"), "t1"),
        p.add(Some("sinks"), "k1"),
    ];
    for r in roles {
        p.start(r);
    }
    let (seed, mut rng) = seeded_rng("kafka crash test");
    let load = Workload::start(&pg.url, seed, INITIAL);

    // Twelve kills of a random role at random moments: inside the snapshot, while streaming,
    // around the ALTER the workload makes after 400 transactions.
    let names = ["sources", "transforms", "sinks"];
    for kill in 0..12 {
        tokio::time::sleep(Duration::from_millis(700 + rng.below(2500))).await;
        let victim = roles[rng.below(3) as usize];
        eprintln!(
            "kill {kill}: {} after {} statements",
            names[victim],
            load.committed()
        );
        p.kill9(victim);
        tokio::time::sleep(Duration::from_millis(rng.below(600))).await;
        p.start(victim);
        p.assert_running();
    }
    let statements = load.stop().await;
    eprintln!("workload done: {statements} statements");

    let want = table_state(&client, "accounts", &["id", "version"]).await;
    let want_clean = want.clone();
    p.wait_for_zone("raw", "kc.public.accounts", &want).await;
    p.wait_for_zone("cleansed", "clean.accounts", &want_clean)
        .await;
    p.assert_running();
    for r in roles {
        p.terminate(r);
    }

    // Exactly once, in each of the four places a change lands.
    let raw_topic = topic_rows(&p.dump(&["kc.public.accounts"]), &["id", "version"]);
    let counts = assert_version_chains(&raw_topic, &want, "id", "version");
    eprintln!("raw topic: {counts:?}");
    assert_version_chains(
        &topic_rows(&p.dump(&["clean.accounts"]), &["id", "version"]),
        &want_clean,
        "id",
        "version",
    );
    assert_version_chains(
        &zone_rows(&p.lake, "raw", "kc.public.accounts"),
        &want,
        "id",
        "version",
    );
    assert_version_chains(
        &zone_rows(&p.lake, "cleansed", "clean.accounts"),
        &want_clean,
        "id",
        "version",
    );
    assert!(
        counts.get("u").copied().unwrap_or(0) > 50,
        "too few updates streamed: {counts:?}"
    );
}

/// The named failpoint inside a raw-topic transaction (src/failpoint.rs): the sources process
/// dies with its records and offsets sent but not committed. The broker aborts that
/// transaction when the next incarnation fences it, the sources resume from the last committed
/// offsets record, and every change is in the topics and the lake once.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_inside_a_raw_topic_transaction_leaves_every_change_once() {
    use std::os::unix::process::ExitStatusExt;
    const INITIAL: i64 = 300;
    let pg = TestDb::create("sluice_it_kafka_failpoint").await;
    let client = pg.client().await;
    create_accounts(&client, INITIAL).await;
    let mut p = Pipeline::new(
        "failpoint",
        &[("kf", "postgres", &pg.url, &["public.accounts"], "")],
        &[(
            "clean.accounts.sql",
            "CREATE STREAM clean.accounts AS\nSELECT id, version, balance FROM kf.public.accounts;\n",
        )],
    );
    let sources = p.add(Some("sources"), "s1");
    let others = [p.add(Some("transforms"), "t1"), p.add(Some("sinks"), "k1")];
    p.procs[sources].env = vec![(
        "FAILPOINTS".into(),
        "kafka.inside_transaction=5*off->return".into(),
    )];
    for r in [sources, others[0], others[1]] {
        p.start(r);
    }
    let (seed, _) = seeded_rng("kafka failpoint test");
    let load = Workload::start(&pg.url, seed, INITIAL);
    let status = p.wait_exit(sources, Duration::from_secs(90));
    assert_eq!(
        status.signal(),
        Some(9),
        "the sources process exited with {status}"
    );
    assert!(
        p.log(sources)
            .contains("failpoint kafka.inside_transaction: killing the process"),
        "the crash was not inside the transaction"
    );
    p.procs[sources].env.clear();
    p.start(sources);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;

    let want = table_state(&client, "accounts", &["id", "version"]).await;
    p.wait_for_zone("raw", "kf.public.accounts", &want).await;
    p.wait_for_zone("cleansed", "clean.accounts", &want).await;
    p.assert_running();
    for r in [sources, others[0], others[1]] {
        p.terminate(r);
    }
    let raw_topic = topic_rows(&p.dump(&["kf.public.accounts"]), &["id", "version"]);
    let counts = assert_version_chains(&raw_topic, &want, "id", "version");
    assert!(
        counts.get("u").copied().unwrap_or(0) > 0,
        "no update streamed: {counts:?}"
    );
    assert_version_chains(
        &zone_rows(&p.lake, "raw", "kf.public.accounts"),
        &want,
        "id",
        "version",
    );
    assert_version_chains(
        &zone_rows(&p.lake, "cleansed", "clean.accounts"),
        &want,
        "id",
        "version",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sink_processes_split_the_partitions_and_survive_one_being_killed() {
    const INITIAL: i64 = 5_000;
    let pg = TestDb::create("sluice_it_kafka_sinks").await;
    let client = pg.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, version int NOT NULL, balance numeric(12,2), note text);
             INSERT INTO accounts SELECT g, 0, 0, 'x' FROM generate_series(1, {INITIAL}) g;"
        ))
        .await
        .unwrap();
    let mut p = Pipeline::new(
        "sinks",
        &[("ks", "postgres", &pg.url, &["public.accounts"], "")],
        &[(
            "clean.accounts.sql",
            "CREATE STREAM clean.accounts AS\nSELECT id, version FROM ks.public.accounts;\n",
        )],
    );
    let sources = p.add(Some("sources"), "s1");
    let transforms = p.add(Some("transforms"), "t1");
    let sink_a = p.add(Some("sinks"), "a");
    let sink_b = p.add(Some("sinks"), "b");
    for r in [sources, transforms, sink_a, sink_b] {
        p.start(r);
    }
    let load = Workload::start(&pg.url, 7, INITIAL);

    // Both sinks take part: the 9 partitions (raw, cleansed and dead-letter topics, 3 each)
    // split between them, and both write.
    wait_for(
        "both sinks to share the partitions",
        Duration::from_secs(60),
        || async {
            let (a, b) = (
                partitions_assigned(&p.log(sink_a)),
                partitions_assigned(&p.log(sink_b)),
            );
            a > 0 && b > 0 && a + b == 9
        },
    )
    .await;
    wait_for("both sinks to write", Duration::from_secs(60), || async {
        let rows = |i| p.metric(i, "sluice_sink_rows_total");
        rows(sink_a) > 0.0 && rows(sink_b) > 0.0
    })
    .await;
    // Kill one sink mid-stream: the other goes on committing its partitions meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.kill9(sink_a);
    eprintln!("killed sink a after {} statements", load.committed());
    let b_rows = p.metric(sink_b, "sluice_sink_rows_total");
    wait_for("sink b to go on alone", Duration::from_secs(30), || async {
        p.metric(sink_b, "sluice_sink_rows_total") > b_rows
    })
    .await;
    // The stand-in never expires a dead group member (Kafka reassigns its partitions after
    // session.timeout.ms, 10 s here), so instead of waiting for a takeover the killed sink comes
    // back: as the same static member it gets its partitions again at once, and starts them at
    // the offsets its lake commits recorded.
    p.start(sink_a);
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.stop().await;

    let want = table_state(&client, "accounts", &["id", "version"]).await;
    p.assert_accounts_landed_once("ks.public.accounts", &want)
        .await;
    let (a, b) = (
        partitions_assigned(&p.log(sink_a)),
        partitions_assigned(&p.log(sink_b)),
    );
    assert!(
        a > 0 && b > 0 && a + b == 9,
        "partitions split {a} + {b} after the restart"
    );
    for r in [sources, transforms, sink_b] {
        p.terminate(r);
    }
}

/// How many partitions a sink's log says it was assigned last.
fn partitions_assigned(log: &str) -> u32 {
    strip_ansi(log)
        .lines()
        .rfind(|l| l.contains("partitions assigned"))
        .and_then(|l| l.split("partitions=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0)
}

/// A sink worker that stalls past `max.poll.interval.ms` while it holds records (a long pause, a
/// slow disk, an inline ODS merge) loses its partitions to the other worker, which takes the same
/// records from the lake's offsets and commits them. When the stalled one wakes it must not
/// commit what it held: its commit meets the other's revocation in its log, and it restarts.
///
/// Dynamic membership (`group.instance.id: ""`): the stalled consumer then leaves the group
/// itself. A static member would be replaced after `session.timeout.ms`, which the stand-in broker
/// never enforces (see docs/kafka.md); the fencing at the lake is the same either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_sink_worker_stalled_past_its_poll_interval_cannot_commit_what_another_took_over() {
    const INITIAL: i64 = 2_000;
    let pg = TestDb::create("sluice_it_kafka_stall").await;
    let client = pg.client().await;
    create_accounts(&client, INITIAL).await;
    let mut p = Pipeline::with_kafka(
        "stall",
        &brokers(),
        ", consumer: { group.instance.id: \"\", max.poll.interval.ms: \"6000\", session.timeout.ms: \"6000\" }",
        &[("kst", "postgres", &pg.url, &["public.accounts"], "")],
        &[(
            "clean.accounts.sql",
            "CREATE STREAM clean.accounts AS\nSELECT id, version FROM kst.public.accounts;\n",
        )],
    );
    let sources = p.add(Some("sources"), "s1");
    let transforms = p.add(Some("transforms"), "t1");
    let sink_a = p.add(Some("sinks"), "a");
    let sink_b = p.add(Some("sinks"), "b");
    // Sink a stalls for 15 s at its ninth commit, holding what it took since the eighth.
    p.procs[sink_a].env = vec![(
        "FAILPOINTS".into(),
        "sinks.before_commit=8*off->1*sleep(15000)".into(),
    )];
    for r in [sources, transforms, sink_a, sink_b] {
        p.start(r);
    }
    let load = Workload::start(&pg.url, 11, INITIAL);

    wait_for(
        "sink b to take every partition over from the stalled sink a",
        Duration::from_secs(90),
        || async {
            let log = p.log(sink_b);
            partitions_assigned(&log) == 9 && p.log(sink_a).contains("partitions assigned")
        },
    )
    .await;
    wait_for(
        "sink a to wake and find its partitions revoked",
        Duration::from_secs(60),
        || async { strip_ansi(&p.log(sink_a)).contains("gave partitions this sink worker held") },
    )
    .await;
    // It rejoins: the partitions are split again, and both write.
    wait_for("sink a to rejoin", Duration::from_secs(60), || async {
        let (a, b) = (
            partitions_assigned(&p.log(sink_a)),
            partitions_assigned(&p.log(sink_b)),
        );
        a > 0 && b > 0 && a + b == 9
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop().await;

    let want = table_state(&client, "accounts", &["id", "version"]).await;
    p.assert_accounts_landed_once("kst.public.accounts", &want)
        .await;
    for r in [sources, transforms, sink_a, sink_b] {
        p.terminate(r);
    }
}

/// Log text without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn ods_rows_by_key(lake: &std::path::Path, stream: &str) -> usize {
    zone_rows(lake, "ods", stream).len()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reaches_the_brokers_and_names_the_fix_when_it_cannot() {
    let pg = TestDb::create("sluice_it_kafka_check").await;
    pg.client()
        .await
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v text)")
        .await
        .unwrap();
    let p = Pipeline::new(
        "check",
        &[("kk", "postgres", &pg.url, &["public.t"], "")],
        &[(
            "clean.t.sql",
            "CREATE STREAM clean.t AS\nSELECT id, v FROM kk.public.t;\n",
        )],
    );
    let check = |config: &PathBuf| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["check", "--config", config.to_str().unwrap()])
            .env("SLUICE_TEST_METRICS_PORT", "9")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = check(&p.config);
    assert!(ok, "check failed against a running broker:\n{text}");

    // A broker that is not there: the check says so and how to fix it.
    let yaml = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, yaml.replace(&brokers(), "127.0.0.1:1")).unwrap();
    let (ok, text) = check(&p.config);
    assert!(!ok, "check passed without a broker:\n{text}");
    assert!(
        text.contains("did not answer") && text.contains("log.kafka.brokers"),
        "{text}"
    );

    // Avro with a registry that is not there: the check names it.
    let avro = yaml.replace(
        "transaction_interval: 50ms",
        "transaction_interval: 50ms, format: avro, schema_registry: \"http://127.0.0.1:1\"",
    );
    std::fs::write(&p.config, avro).unwrap();
    let (ok, text) = check(&p.config);
    assert!(!ok, "check passed without a registry:\n{text}");
    assert!(
        text.contains("schema registry") && text.contains("log.kafka.schema_registry"),
        "{text}"
    );
    // And with the registry running, it passes.
    std::fs::write(
        &p.config,
        yaml.replace(
            "transaction_interval: 50ms",
            &format!(
                "transaction_interval: 50ms, format: avro, schema_registry: \"{}\"",
                registry()
            ),
        ),
    )
    .unwrap();
    let (ok, text) = check(&p.config);
    assert!(ok, "check failed against a running registry:\n{text}");
}

/// Delete every record of `topic`'s partitions below their high watermark, as retention would
/// (Kafka's DeleteRecords, through confluent-kafka's admin client; one partition per request,
/// as the stand-in broker answers no request naming several).
fn expire_all_records(brokers: &str, topic: &str) {
    python_stdout(&[
        "-c",
        "import sys; from confluent_kafka import Consumer, TopicPartition; \
         from confluent_kafka.admin import AdminClient; \
         b, t = sys.argv[1], sys.argv[2]; \
         c = Consumer({'bootstrap.servers': b, 'group.id': 'expire'}); \
         a = AdminClient({'bootstrap.servers': b}); \
         parts = c.list_topics(t, timeout=10).topics[t].partitions; \
         tps = [TopicPartition(t, p, c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]) for p in parts]; \
         [f.result(timeout=30) for tp in tps for f in a.delete_records([tp]).values()]; \
         c.close()",
        brokers,
        topic,
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_topic_that_expired_under_a_stopped_sink_is_a_named_stop() {
    let pg = TestDb::create("sluice_it_kafka_retention").await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);
             INSERT INTO t SELECT g, 0 FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    let mut p = Pipeline::new(
        "retention",
        &[("kr", "postgres", &pg.url, &["public.t"], "")],
        &[],
    );
    let sources = p.add(Some("sources"), "s1");
    let sink = p.add(Some("sinks"), "k1");
    p.start(sources);
    p.start(sink);
    let want = table_state(&client, "t", &["id", "v"]).await;
    p.wait_for_zone_state("raw", "kr.public.t", &["id", "v"], &want)
        .await;
    p.terminate(sink);
    // While the sink is down, changes reach the raw topic and then expire from it.
    client
        .batch_execute("UPDATE t SET v = 1 WHERE id <= 10")
        .await
        .unwrap();
    let topic = p.topic("kr.public.t");
    wait_for(
        "the changes to reach the raw topic",
        Duration::from_secs(60),
        || async { kcat_count(&topic).is_some_and(|n| n >= 60) },
    )
    .await;
    expire_all_records(&p.brokers, &topic);
    p.start(sink);
    let status = p.wait_exit(sink, Duration::from_secs(60));
    assert!(
        !status.success(),
        "the sink jumped over the expired records"
    );
    let log = p.log(sink);
    assert!(
        log.contains("no longer holds the records after the lake's position"),
        "the stop does not name the cause:\n{log}"
    );
    p.terminate(sources);
}
