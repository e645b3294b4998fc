//! A Postgres restart in the middle of streaming: sluice reconnects with backoff and resumes from
//! the committed position; nothing lost, nothing twice. Its own test binary, because it restarts
//! the server every other test uses (test binaries run one after another).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_server_restart_mid_stream_loses_and_duplicates_nothing() {
    let db = TestDb::create("sluice_it_restart").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "restart",
        &db.url,
        &["public.t"],
        "{ rows: 500, interval: 200ms }",
    );
    d.start();
    wait_for("the slot", Duration::from_secs(30), || async {
        !db.slots().await.is_empty()
    })
    .await;

    let url = db.url.clone();
    let writer = tokio::spawn(async move {
        // Keep writing through the restart, reconnecting when the server is back.
        let mut client = connect(&url).await;
        let mut id = 0;
        while id < 3000 {
            match client
                .execute("INSERT INTO t VALUES ($1, $1)", &[&id])
                .await
            {
                Ok(_) => id += 1,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok((c, conn)) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        client = c;
                    }
                }
            }
            if id % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let restarted = std::process::Command::new("pg_ctlcluster")
        .args(["15", "main", "restart", "-m", "fast"])
        .status()
        .unwrap();
    assert!(restarted.success());
    writer.await.unwrap();

    let client = db.client().await;
    let want = table_state(&client, "t", &["id", "v"]).await;
    assert_eq!(want.len(), 3000);
    let caught_up = wait_until(Duration::from_secs(90), || async {
        state_from_log(&lake_rows(&d.lake, "restart.public.t"), "id", &["id", "v"]) == want
    })
    .await;
    assert!(
        caught_up,
        "the lake did not catch up after the restart:\n{}",
        d.log()
    );
    assert!(d.is_running(), "a server restart is transient: {}", d.log());
    let rows = lake_rows(&d.lake, "restart.public.t");
    assert_eq!(rows.len(), 3000, "every insert exactly once");
    assert!(
        d.log().contains("transient error"),
        "the restart was seen and retried"
    );
    assert!(d.terminate().success());
}
