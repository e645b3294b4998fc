//! The lake on real HDFS 2.7.3 (scripts/services.sh up hdfs): the change log and the ODS land
//! exactly once across kill -9, read back through hdfs-native (Rust) and the Python hdfs-native
//! client with pyarrow, and compared with the table.

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_and_its_crashes_on_hdfs() {
    let lake_url = format!("{}/sluice-it-{}", hdfs_url(), std::process::id());
    let run = remote_lake_run("hdfs", &lake_url, Vec::new()).await;

    // An independent reader: the Python hdfs-native client and pyarrow, straight from HDFS. The
    // client's runtime sometimes aborts during interpreter teardown ("terminate called without
    // an active exception"), after the answer is printed: os._exit skips the teardown.
    let got = python_stdout(&[
        "-c",
        "import sys, io, os, pyarrow.parquet as pq; from hdfs_native import Client; \
         c = Client(sys.argv[1]); files = [s.path for s in c.list_status(sys.argv[2] + '/ods/hdfs.public.t')]; \
         t = pq.read_table(io.BytesIO(c.read(files[0]).read())); \
         print(t.num_rows, sum(t.column('v').to_pylist()), flush=True); os._exit(0)",
        &hdfs_url(),
        lake_url.strip_prefix(&hdfs_url()).unwrap(),
    ]);
    assert_eq!(got, run.table_count_sum().await);
}
