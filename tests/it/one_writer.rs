//! One writer per lake (ARCHITECTURE.md, "One writer per lake"): a second daemon on the same
//! configuration waits for the first and takes over when it dies, and a holder that was paused
//! while another took over is fenced when it wakes, before it writes anything. Each under a live
//! Postgres workload, proved by the lake equal to the table with every change once.

use std::time::Duration;

use crate::common::*;

const INITIAL_ROWS: i64 = 200;
const STREAM: &str = "ow.public.accounts";

/// The first daemon running with a workload and a commit in the lake, and its twin waiting.
async fn holder_and_waiting_twin(db: &TestDb, seed_name: &str) -> (Daemon, Daemon, Workload) {
    let client = db.client().await;
    create_accounts(&client, INITIAL_ROWS).await;
    let mut first = Daemon::configure(
        "ow",
        &db.url,
        &["public.accounts"],
        "{ rows: 100, interval: 200ms }",
    );
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
