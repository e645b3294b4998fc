//! One writer per lake (ARCHITECTURE.md, "One writer per lake"): a second daemon on the same
//! configuration waits for the first and takes over when it dies, and a holder that was paused
//! while another took over is fenced when it wakes, before it writes anything. Each under a live
//! Postgres workload, proved by the lake equal to the table with every change once.

use std::time::Duration;

use crate::common::*;

const INITIAL_ROWS: i64 = 200;
const STREAM: &str = "ow.public.accounts";

/// A daemon on `db`'s accounts table, as source `ow` with a slot of the test's own (slots are
/// per Postgres server, and the tests run at once).
fn configure(db: &TestDb) -> Daemon {
    let d = Daemon::configure(
        "ow",
        &db.url,
        &["public.accounts"],
        "{ rows: 100, interval: 200ms }",
    );
    d.append_source(&format!("slot: {}\n", slot_of(db)));
    d
}

fn slot_of(db: &TestDb) -> String {
    format!("sluice_{}", db.name)
}

/// The first daemon running with a workload and a commit in the lake, and its twin waiting.
async fn holder_and_waiting_twin(db: &TestDb, seed_name: &str) -> (Daemon, Daemon, Workload) {
    let client = db.client().await;
    create_accounts(&client, INITIAL_ROWS).await;
    let mut first = configure(db);
    let (seed, _) = seeded_rng(seed_name);
    let load = Workload::start(&db.url, seed, INITIAL_ROWS);
    first.start();
    let lake = first.lake.clone();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            latest_commit(&lake).is_some()
        })
        .await,
        "the first daemon never committed"
    );
    let mut twin = first.twin();
    twin.start();
    let first_pid = first.child.as_ref().unwrap().id().to_string();
    let waiting = wait_until(Duration::from_secs(30), || async {
        twin.status().is_some_and(|s| {
            s["state"] == "waiting"
                && s["lake_holder"]
                    .as_str()
                    .is_some_and(|h| h.split('/').nth(1) == Some(&first_pid))
        })
    })
    .await;
    assert!(
        waiting,
        "the twin does not wait naming the holder:\n{}",
        twin.log()
    );
    (first, twin, load)
}

/// The lake equals the table, and holds every change once.
async fn assert_lake_equals_table(db: &TestDb, d: &Daemon) {
    let client = db.client().await;
    let want = table_state(&client, "accounts", &["id", "version"]).await;
    let lake_state = || state_from_log(&lake_rows(&d.lake, STREAM), "id", &["id", "version"]);
    if let Err(diff) = wait_for_state(Duration::from_secs(120), &want, lake_state).await {
        panic!("the lake did not catch up: {diff}");
    }
    assert_version_chains(&lake_rows(&d.lake, STREAM), &want, "id", "version");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_waits_for_the_first_and_takes_over_when_it_is_killed() {
    let db = TestDb::create("sluice_it_one_writer_kill").await;
    let (mut first, mut twin, load) = holder_and_waiting_twin(&db, "one writer, kill").await;
    // While the first lives, the twin neither writes nor touches the slot.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(first.is_running() && twin.is_running());
    assert_eq!(twin.status().unwrap()["state"], "waiting");
    let shown = twin
        .command(&["status", "--addr", &twin.metrics_addr])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("pipeline: waiting") && shown.contains("waiting for the lake, held by: "),
        "`sluice status` does not name the holder:\n{shown}"
    );
    let epoch_before = latest_commit(&first.lake).unwrap()["epoch"].as_u64();
    assert_eq!(epoch_before, Some(1), "the first daemon holds epoch 1");

    first.kill9();
    let lake = twin.lake.clone();
    let took_over = wait_until(Duration::from_secs(60), || async {
        latest_commit(&lake).is_some_and(|c| c["epoch"] == 2)
    })
    .await;
    assert!(
        took_over,
        "the twin did not take the lake over:\n{}",
        twin.log()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;
    assert_lake_equals_table(&db, &twin).await;
    assert!(twin.terminate().success(), "the twin did not stop cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_holder_is_fenced_when_it_wakes_and_writes_nothing_more() {
    let db = TestDb::create("sluice_it_one_writer_pause").await;
    let (mut first, mut twin, load) = holder_and_waiting_twin(&db, "one writer, pause").await;
    // A holder that stops renewing (a long GC pause, a frozen VM, a partition) while alive.
    first.signal("STOP");
    let lake = twin.lake.clone();
    let fenced = wait_until(Duration::from_secs(60), || async {
        latest_commit(&lake).is_some_and(|c| c["epoch"] == 2)
    })
    .await;
    assert!(
        fenced,
        "the twin did not take the lake over from a silent holder:\n{}",
        twin.log()
    );
    assert!(
        twin.log().contains("stopped renewing its lease"),
        "{}",
        twin.log()
    );
    // The old holder wakes up with sealed files and a commit due: it must stop, not commit.
    first.signal("CONT");
    let status = first.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "the fenced daemon exited with success");
    assert!(
        first.log().contains("took this lake over"),
        "the fenced daemon did not say why it stopped:\n{}",
        first.log()
    );
    load.stop().await;
    assert_lake_equals_table(&db, &twin).await;
    assert!(twin.terminate().success(), "the twin did not stop cleanly");
}

/// The slot's confirmed position, as an LSN number.
async fn slot_lsn(db: &TestDb) -> Option<u64> {
    let slots = db.slots().await;
    let (_, confirmed) = slots.iter().find(|(name, _)| *name == slot_of(db))?;
    confirmed.as_deref().map(lsn)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_pipeline_with_the_same_source_name_and_an_empty_lake_leaves_the_slot_alone() {
    let db = TestDb::create("sluice_it_one_writer_slot").await;
    let client = db.client().await;
    create_accounts(&client, INITIAL_ROWS).await;
    let (seed, _) = seeded_rng("slot owner");
    let load = Workload::start(&db.url, seed, INITIAL_ROWS);
    let mut production = configure(&db);
    production.start();
    let lake = production.lake.clone();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            latest_commit(&lake).is_some()
        })
        .await,
        "production never committed"
    );
    // Staging: the same source name (so the same slot name), its own, empty lake.
    let mut staging = configure(&db);
    staging.start();
    let status = staging.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "staging ran on production's slot");
    let log = staging.log();
    assert!(
        log.contains("did not create that slot") && log.contains("pg_drop_replication_slot"),
        "staging did not name the cause and the choices:\n{log}"
    );
    assert!(slot_lsn(&db).await.is_some(), "production's slot is gone");
    // Production never noticed: a restart resumes from its lake, exactly.
    assert!(production.is_running());
    production.kill9();
    production.start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;
    assert_lake_equals_table(&db, &production).await;
    assert!(production.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lake_restored_from_an_older_backup_is_a_named_stop_not_a_silent_gap() {
    let db = TestDb::create("sluice_it_one_writer_backup").await;
    let client = db.client().await;
    create_accounts(&client, INITIAL_ROWS).await;
    let mut d = configure(&db);
    d.start();
    let lake = d.lake.clone();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            latest_commit(&lake).is_some()
        })
        .await,
        "never committed"
    );
    assert!(d.terminate().success());
    let backup = d.dir.path().join("backup");
    copy_dir(&d.lake, &backup);
    let backup_lsn = latest_commit(&backup).unwrap()["positions"]["ow"]["lsn"]
        .as_u64()
        .unwrap();
    // More changes go into the lake, and the slot moves past the backup.
    d.start();
    client
        .batch_execute("UPDATE accounts SET version = version + 1 WHERE id <= 50")
        .await
        .unwrap();
    let moved = wait_until(Duration::from_secs(60), || async {
        slot_lsn(&db).await.is_some_and(|l| l > backup_lsn)
    })
    .await;
    assert!(moved, "the slot never moved past the backup");
    assert!(d.terminate().success());
    // The operator restores the older lake.
    std::fs::remove_dir_all(&d.lake).unwrap();
    copy_dir(&backup, &d.lake);
    d.start();
    let status = d.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "sluice streamed over the gap");
    assert!(
        d.log().contains("restored from an older backup"),
        "the stop does not name the cause:\n{}",
        d.log()
    );
    assert!(slot_lsn(&db).await.is_some(), "the slot was dropped");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}
