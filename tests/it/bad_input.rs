//! Bad input gets a clear message, a non-zero exit, and nothing half-created: a config typo, a
//! missing table, a database without wal_level=logical (the second cluster services.sh starts on
//! port 5433), a table without a primary key.

use std::process::Output;

use crate::common::*;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(d: &Daemon) -> Output {
    d.command(&["check", "--config", d.config.to_str().unwrap()])
        .output()
        .unwrap()
}

fn run_to_exit(d: &Daemon) -> Output {
    d.command(&["run", "--config", d.config.to_str().unwrap()])
        .output()
        .unwrap()
}

/// Neither a publication nor a slot was left behind.
async fn nothing_created(db: &TestDb) {
    let client = db.client().await;
    let pubs = client
        .query("SELECT pubname::text FROM pg_publication", &[])
        .await
        .unwrap();
    assert!(
        pubs.is_empty(),
        "a publication was created: {:?}",
        pubs.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    );
    assert!(
        db.slots().await.is_empty(),
        "a slot was created: {:?}",
        db.slots().await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_typo_in_the_config_names_file_line_and_fix() {
    let d = Daemon::configure(
        "typo",
        "postgres://sluice:sluice@127.0.0.1:5432/sluice",
        &["public.t"],
        "{ rows: 10 }",
    );
    let main = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("sink:", "sinc:");
    std::fs::write(&d.config, main).unwrap();
    let source = d.dir.path().join("sources/typo.yaml");
    std::fs::write(
        &source,
        "name: typo\nkind: postgress\nurl: x\ntables: [public.t]\n",
    )
    .unwrap();

    let out = check(&d);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("sluice.yaml") && t.contains("line 2") && t.contains("unknown field `sinc`"),
        "{t}"
    );
    assert!(
        t.contains("expected one of"),
        "the message lists the valid keys: {t}"
    );

    let out = run_to_exit(&d);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown field `sinc`"));

    // Fix the main file: now the source file's bad value is reported, with its line.
    let main = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("sinc:", "sink:");
    std::fs::write(&d.config, main).unwrap();
    let t = text(&check(&d));
    assert!(
        t.contains("typo.yaml")
            && t.contains("line 2")
            && t.contains("unknown variant `postgress`"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_is_refused_and_nothing_is_created() {
    let db = TestDb::create("sluice_it_missing").await;
    db.client()
        .await
        .batch_execute("CREATE TABLE present (id int PRIMARY KEY)")
        .await
        .unwrap();
    let d = Daemon::configure(
        "missing",
        &db.url,
        &["public.present", "public.absent"],
        "{ rows: 10 }",
    );
    let out = check(&d);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("table `public.absent` does not exist") && t.contains("fix:"),
        "{t}"
    );
    let out = run_to_exit(&d);
    assert!(!out.status.success());
    assert!(text(&out).contains("public.absent"), "{}", text(&out));
    nothing_created(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_without_primary_key_is_refused_and_nothing_is_created() {
    let db = TestDb::create("sluice_it_nopk").await;
    db.client()
        .await
        .batch_execute("CREATE TABLE loose (id int, v text)")
        .await
        .unwrap();
    let d = Daemon::configure("nopk", &db.url, &["public.loose"], "{ rows: 10 }");
    let t = text(&check(&d));
    assert!(
        t.contains("public.loose has no primary key") && t.contains("REPLICA IDENTITY FULL"),
        "{t}"
    );
    let out = run_to_exit(&d);
    assert!(!out.status.success());
    assert!(text(&out).contains("no primary key"), "{}", text(&out));
    nothing_created(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_without_logical_wal_is_refused_with_the_fix() {
    let db = TestDb::create_on(&pg_plain_url(), "sluice_it_walrep").await;
    db.client()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let d = Daemon::configure("walrep", &db.url, &["public.t"], "{ rows: 10 }");
    let out = check(&d);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("wal_level is `replica`") && t.contains("ALTER SYSTEM SET wal_level = logical"),
        "{t}"
    );
    let out = run_to_exit(&d);
    assert!(!out.status.success());
    assert!(text(&out).contains("wal_level"), "{}", text(&out));
    nothing_created(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_every_problem_at_once() {
    let db = TestDb::create("sluice_it_many").await;
    db.client()
        .await
        .batch_execute("CREATE TABLE loose (id int)")
        .await
        .unwrap();
    let d = Daemon::configure(
        "many",
        &db.url.replace("sluice:sluice", "norepl:norepl"),
        &["public.loose", "public.absent"],
        "{ rows: 10 }",
    );
    let t = text(&check(&d));
    assert!(t.contains("lacks the REPLICATION attribute"), "{t}");
    assert!(t.contains("public.absent"), "{t}");
    assert!(t.contains("public.loose has no primary key"), "{t}");
    assert!(t.contains("may not create it"), "{t}");
    assert!(t.contains("4 problem(s) found"), "{t}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_reported() {
    let port = free_port();
    let d = Daemon::configure(
        "down",
        &format!("postgres://sluice:sluice@127.0.0.1:{port}/x"),
        &["public.t"],
        "{ rows: 10 }",
    );
    let t = text(&check(&d));
    assert!(t.contains("cannot connect") && t.contains("fix:"), "{t}");
}
