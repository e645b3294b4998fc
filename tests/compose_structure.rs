//! docker-compose.yaml cannot start here (no Docker engine): check its structure instead. Every
//! service has an image or a build with a Dockerfile, host ports do not clash, every file it
//! mounts exists, named volumes are declared, dependencies name real services, and the sluice,
//! Prometheus and Grafana pieces point at each other. The sample database and the load generator
//! run for real against the test Postgres.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn compose() -> Value {
    serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(REPO).join("docker-compose.yaml")).unwrap(),
    )
    .unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_service_is_complete_and_consistent() {
    let doc = compose();
    let services = doc["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(String::from))
        .collect();
    for expected in [
        "postgres",
        "mysql",
        "mongo",
        "kafka",
        "schema-registry",
        "namenode",
        "datanode",
        "sluice",
        "loadgen",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(expected), "the stack has {expected}");
    }
    let declared_volumes: BTreeSet<String> = doc["volumes"]
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut host_ports = BTreeSet::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        match (svc.get("image"), svc.get("build")) {
            (Some(_), None) => {}
            (None, Some(ctx)) => {
                let dockerfile = Path::new(REPO)
                    .join(ctx.as_str().unwrap())
                    .join("Dockerfile");
                assert!(
                    dockerfile.exists(),
                    "{name}: {} is missing",
                    dockerfile.display()
                );
            }
            _ => panic!("{name}: needs exactly one of image or build"),
        }
        for port in strings(&svc["ports"]) {
            let host = port.split(':').next().unwrap().to_string();
            assert!(
                host_ports.insert(host.clone()),
                "{name}: host port {host} is used twice"
            );
        }
        for volume in strings(&svc["volumes"]) {
            let source = volume.split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(
                    Path::new(REPO).join(source).exists(),
                    "{name}: mounts {source}, which does not exist"
                );
            } else {
                assert!(
                    declared_volumes.contains(source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        let deps: Vec<String> = match &svc["depends_on"] {
            Value::Sequence(_) => strings(&svc["depends_on"]),
            Value::Mapping(m) => m
                .keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect(),
            _ => vec![],
        };
        for dep in deps {
            assert!(
                names.contains(&dep),
                "{name}: depends on unknown service {dep}"
            );
        }
    }
}

#[test]
fn sluice_prometheus_and_grafana_point_at_each_other() {
    let doc = compose();
    let sluice = &doc["services"]["sluice"];
    let listen = sluice["environment"]["SLUICE_METRICS"].as_str().unwrap();
    let port = listen.rsplit(':').next().unwrap();
    assert!(
        strings(&sluice["ports"])
            .iter()
            .any(|p| p.ends_with(&format!(":{port}"))),
        "sluice publishes its metrics port"
    );
    let prometheus =
        std::fs::read_to_string(Path::new(REPO).join("grafana/prometheus.yml")).unwrap();
    assert!(
        prometheus.contains(&format!("sluice:{port}")),
        "Prometheus scrapes sluice's port"
    );
    assert!(prometheus.contains("/etc/prometheus/alerts.yaml"));
    assert!(
        strings(&doc["services"]["prometheus"]["volumes"])
            .iter()
            .any(|v| v.ends_with(":/etc/prometheus/alerts.yaml:ro"))
    );
    let provisioning = std::fs::read_to_string(
        Path::new(REPO).join("grafana/provisioning/dashboards/sluice.yaml"),
    )
    .unwrap();
    let dashboards_dir = provisioning
        .split("path: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(
        strings(&doc["services"]["grafana"]["volumes"])
            .iter()
            .any(|v| v.contains(&format!(":{dashboards_dir}")))
    );
    let datasource = std::fs::read_to_string(
        Path::new(REPO).join("grafana/provisioning/datasources/prometheus.yaml"),
    )
    .unwrap();
    assert!(
        datasource.contains("uid: prometheus") && datasource.contains("http://prometheus:9090")
    );

    // The configuration sluice runs with in the stack loads.
    for (k, v) in sluice["environment"].as_mapping().unwrap() {
        // SAFETY: no other test in this binary reads or writes these variables.
        unsafe { std::env::set_var(k.as_str().unwrap(), v.as_str().unwrap()) };
    }
    let config = sluice::config::Config::load(&Path::new(REPO).join("sluice.yaml"))
        .expect("sluice.yaml loads with the stack's environment");
    assert!(
        config
            .sources
            .iter()
            .any(|s| s.url.contains("@postgres:5432/shop")),
        "the source points at the postgres service"
    );
    assert!(
        config
            .sources
            .iter()
            .any(|s| s.url.contains("@mysql:3306/inventory")),
        "the MySQL source points at the mysql service"
    );
    assert!(
        config
            .sources
            .iter()
            .any(|s| s.url.starts_with("mongodb://mongo:27017/")),
        "the MongoDB source points at the mongo service"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_database_and_the_load_generator_work() {
    let db = common::TestDb::create("sluice_it_compose").await;
    let client = db.client().await;
    let init = std::fs::read_to_string(Path::new(REPO).join("examples/compose/postgres-init.sql"))
        .unwrap();
    // ALTER ROLE needs a superuser, which the compose image's POSTGRES_USER is.
    let init: String = init
        .lines()
        .filter(|l| !l.starts_with("ALTER ROLE"))
        .collect::<Vec<_>>()
        .join("\n");
    client.batch_execute(&init).await.unwrap();
    let out = std::process::Command::new(common::python())
        .arg(Path::new(REPO).join("scripts/loadgen.py"))
        .env(
            "LOADGEN_URL",
            db.url.replace("postgres://", "postgresql://"),
        )
        .env("LOADGEN_RATE", "1000")
        .env("LOADGEN_CHANGES", "200")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let orders: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        orders > 1000,
        "the load generator inserted orders: {orders}"
    );
}
