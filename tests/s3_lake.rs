//! The lake on S3 (moto's S3 server, the stand-in test-services.md names; scripts/services.sh up
//! s3): the change log and the ODS land exactly once across kill -9 (multipart uploads, objects
//! visible only when complete), read back with pyarrow's own S3 client and compared with the table.

mod common;

use common::*;

fn s3_env() -> Vec<(String, String)> {
    let endpoint =
        std::env::var("SLUICE_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".into());
    [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "AK"),
        ("AWS_SECRET_ACCESS_KEY", "SK"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_and_its_crashes_on_s3() {
    let env = s3_env();
    for (k, v) in &env {
        // SAFETY: the only test in this binary; set before any thread reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
    let prefix = format!("run-{}", std::process::id());
    let lake_url = format!("s3://sluice-test/{prefix}");
    let run = remote_lake_run("s3", &lake_url, env.clone()).await;

    // An independent reader: pyarrow's S3 filesystem, straight from the bucket.
    let endpoint = env
        .iter()
        .find(|(k, _)| k == "AWS_ENDPOINT")
        .unwrap()
        .1
        .clone();
    let got = python_stdout(&[
        "-c",
        "import sys, pyarrow.fs as fs, pyarrow.dataset as ds; \
         s3 = fs.S3FileSystem(access_key='AK', secret_key='SK', region='us-east-1', endpoint_override=sys.argv[1].split('://')[1], scheme='http'); \
         t = ds.dataset('sluice-test/' + sys.argv[2] + '/ods/s3.public.t', filesystem=s3, format='parquet').to_table(); \
         print(t.num_rows, sum(t.column('v').to_pylist()))",
        &endpoint,
        &prefix,
    ]);
    assert_eq!(got, run.table_count_sum().await);
}
