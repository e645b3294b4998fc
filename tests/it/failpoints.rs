//! Crashes at the named exactly-once seams (src/failpoint.rs), each proved harmless: the daemon
//! runs a Postgres table under a live workload until the armed failpoint SIGKILLs it at the
//! seam, starts again unarmed, and the lake must then hold every change once (the version
//! chains of `assert_version_chains`) and equal the table; the ODS one must equal it too.
//!
//! The random `kill -9` tests (crash_exactly_once.rs) stay as the soak: these hit each seam on
//! purpose, every run. Kafka mode's seam (`kafka.inside_transaction`) is in kafka_pipeline.rs.
//! Built with `--features failpoints` (scripts/test.sh); without it the seams compile to
//! nothing and this file to no tests.
#![cfg(feature = "failpoints")]

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use crate::common::*;

const INITIAL_ROWS: i64 = 300;
const SIGKILL: i32 = 9;

/// Where the crash lands, and what the lake keeps besides the raw change log.
struct Seam {
    failpoint: &'static str,
    /// The `fail` crate's action: let some passes by, so the crash lands while streaming.
    arm: &'static str,
    ods: bool,
}

async fn crash_at(seam: Seam, db_name: &str) {
    let db = TestDb::create(db_name).await;
    let client = db.client().await;
    create_accounts(&client, INITIAL_ROWS).await;
    let mut d = Daemon::configure(
        "fp",
        &db.url,
        &["public.accounts"],
        "{ rows: 100, interval: 200ms }",
    );
    // Slots are per server and the tests run at once: each its own.
    d.append_source(&format!("slot: sluice_{db_name}\n"));
    if seam.ods {
        d.add_sink_settings(&["zones: [raw, ods]", "ods_interval: 300ms"]);
    }
    d.env.push((
        "FAILPOINTS".into(),
        format!("{}={}", seam.failpoint, seam.arm),
    ));

    let (seed, _) = seeded_rng(seam.failpoint);
    let load = Workload::start(&db.url, seed, INITIAL_ROWS);
    d.start();
    let status = d.wait_exit(Duration::from_secs(90));
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "sluice was to kill itself at {} but exited with {status}",
        seam.failpoint
    );
    assert!(
        d.log().contains(&format!(
            "failpoint {}: killing the process",
            seam.failpoint
        )),
        "the crash was not at {}",
        seam.failpoint
    );

    // Unarmed, it recovers and catches up while the workload goes on.
    d.env.retain(|(k, _)| k != "FAILPOINTS");
    d.start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let statements = load.stop().await;
    eprintln!(
        "{}: workload committed {statements} statements",
        seam.failpoint
    );

    let want = table_state(&client, "accounts", &["id", "version"]).await;
    let lake_state = || {
        state_from_log(
            &lake_rows(&d.lake, "fp.public.accounts"),
            "id",
            &["id", "version"],
        )
    };
    if let Err(diff) = wait_for_state(Duration::from_secs(120), &want, lake_state).await {
        panic!(
            "the lake did not catch up after a crash at {}: {diff}",
            seam.failpoint
        );
    }
    let counts = assert_version_chains(
        &lake_rows(&d.lake, "fp.public.accounts"),
        &want,
        "id",
        "version",
    );
    assert!(
        counts.get("u").copied().unwrap_or(0) > 0,
        "no update streamed: {counts:?}"
    );
    if seam.ods {
        let ods = || ods_state(&d, "fp.public.accounts", &["id", "version"]);
        if let Err(diff) = wait_for_state(Duration::from_secs(60), &want, ods).await {
            panic!(
                "the ODS did not catch up after a crash at {}: {diff}",
                seam.failpoint
            );
        }
    }
    assert!(d.terminate().success(), "sluice did not stop cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_files_are_published_and_before_the_commit_record_loses_nothing() {
    let seam = Seam {
        failpoint: "lake.before_commit_record",
        arm: "4*off->return",
        ods: false,
    };
    crash_at(seam, "sluice_it_fp_before_record").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_commit_record_and_before_the_files_move_duplicates_nothing() {
    let seam = Seam {
        failpoint: "lake.after_commit_record",
        arm: "4*off->return",
        ods: false,
    };
    crash_at(seam, "sluice_it_fp_after_record").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_the_commit_and_the_acknowledgement_replays_only_what_is_cut() {
    let seam = Seam {
        failpoint: "sink.before_ack",
        arm: "4*off->return",
        ods: false,
    };
    crash_at(seam, "sluice_it_fp_before_ack").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_an_ods_replacement_and_its_state_leaves_the_ods_exact() {
    let seam = Seam {
        failpoint: "ods.before_state",
        arm: "2*off->return",
        ods: true,
    };
    crash_at(seam, "sluice_it_fp_ods").await;
}
