//! Operations, with the real Prometheus (Debian's package, installed by scripts/services.sh):
//! promtool validates and unit-tests the alert rules and lints the live /metrics; a Prometheus
//! scraping a running pipeline answers every query of the Grafana dashboard with data; stopping
//! the source database makes the source-down alert expression true, and starting it clears it.
//! Its own test binary: it stops the Postgres server the other tests use.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(Path::new(REPO).join("grafana"));
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("promtool (scripts/services.sh up prometheus)");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn alert_rules_are_valid_and_every_alert_has_a_unit_test() {
    let (ok, out) = promtool(&["check", "rules", "alerts.yaml"], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yaml"], None);
    assert!(ok, "{out}");
    let rules = std::fs::read_to_string(Path::new(REPO).join("grafana/alerts.yaml")).unwrap();
    let tests = std::fs::read_to_string(Path::new(REPO).join("grafana/alerts_test.yaml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "alert {line} has no promtool test"
        );
    }
    assert!(
        rules.matches("runbook:").count() == rules.matches("- alert:").count(),
        "every alert has a runbook line"
    );
}

struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = Path::new(REPO).join("grafana/alerts.yaml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [{}]\n\
                 scrape_configs:\n  - job_name: sluice\n    static_configs: [{{ targets: ['{target}'] }}]\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("prometheus (scripts/services.sh up prometheus)");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Instant query; the result vector.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let Some(body) = http_get(&self.addr, &format!("/api/v1/query?query={encoded}")) else {
            return vec![];
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_ne!(v["status"], "error", "query failed: {promql}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pg_cluster(action: &str) {
    let ok = Command::new("pg_ctlcluster")
        .args(["15", "main", action])
        .status()
        .unwrap()
        .success();
    assert!(ok, "pg_ctlcluster {action}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_answers_every_dashboard_query_and_sees_a_source_go_down() {
    let db = TestDb::create("sluice_it_prom").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 500) g;")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "prom",
        &db.url,
        &["public.t"],
        "{ rows: 100, interval: 300ms }",
    );
    let source = d.dir.path().join("sources/prom.yaml");
    std::fs::write(
        &source,
        std::fs::read_to_string(&source).unwrap() + "heartbeat: 1s\n",
    )
    .unwrap();
    // A transform, so the transform panels have data: row 1 fails its cast (a dead letter),
    // odd rows are filtered out, the rest are cleansed.
    std::fs::create_dir_all(d.dir.path().join("transforms")).unwrap();
    std::fs::write(
        d.dir.path().join("transforms/clean.t.sql"),
        "CREATE STREAM clean.t AS SELECT id, CAST(CASE WHEN id = 1 THEN v ELSE '7' END AS INT) AS n FROM prom.public.t WHERE id % 2 = 0 OR id = 1",
    )
    .unwrap();
    d.add_sink_settings(&["zones: [raw, cleansed]"]);
    d.start();
    wait_for("the snapshot", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "prom.public.t").len() == 500
    })
    .await;
    // Row 1's failed cast was dead-lettered in the same sink step that wrote the raw rows.
    assert!(d.metric("sluice_transform_dead_letters_total") >= 1.0);

    // The exposition passes promtool's lint.
    let (ok, out) = promtool(&["check", "metrics"], Some(&d.metrics()));
    assert!(ok, "promtool check metrics:\n{out}");

    let prom = Prometheus::start(&d.metrics_addr);
    wait_for(
        "Prometheus to scrape sluice",
        Duration::from_secs(30),
        || async { !prom.query("sluice_source_up == 1").is_empty() },
    )
    .await;
    for i in 0..20 {
        client
            .execute(
                "UPDATE t SET v = $1 WHERE id <= 50",
                &[&format!("round {i}")],
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(REPO).join("grafana/dashboards/sluice-overview.json"))
            .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(exprs.len() >= 15);
    for expr in &exprs {
        let ok = wait_until(Duration::from_secs(20), || async {
            !prom.query(expr).is_empty()
        })
        .await;
        assert!(ok, "dashboard query returned no data: {expr}");
    }

    // Source down: the alert's expression, taken from the rules file, turns true, then clears.
    let rules = std::fs::read_to_string(Path::new(REPO).join("grafana/alerts.yaml")).unwrap();
    let down_expr = rules
        .split("- alert: SluiceSourceDown")
        .nth(1)
        .and_then(|r| r.lines().find_map(|l| l.trim().strip_prefix("expr: ")))
        .unwrap()
        .to_string();
    pg_cluster("stop");
    let fired = wait_until(Duration::from_secs(60), || async {
        !prom.query(&down_expr).is_empty()
    })
    .await;
    pg_cluster("start");
    assert!(
        fired,
        "`{down_expr}` did not become true with the database stopped"
    );
    let cleared = wait_until(Duration::from_secs(90), || async {
        prom.query(&down_expr).is_empty() && !prom.query("sluice_source_up == 1").is_empty()
    })
    .await;
    assert!(
        cleared,
        "`{down_expr}` did not clear after the database came back:\n{}",
        d.log()
    );
    assert!(d.terminate().success());
}
