//! MariaDB for the tests: a database of the test's own on the real MariaDB 10.11 that
//! `scripts/services.sh up mariadb` starts (binlog on, ROW format), and its rows as text.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

pub fn mysql_admin_url() -> String {
    std::env::var("SLUICE_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://sluice:sluice@127.0.0.1:3306/sluice".into())
}

pub async fn my_connect(url: &str) -> Conn {
    let opts = Opts::from_url(url).unwrap();
    Conn::new(opts).await.unwrap_or_else(|e| {
        panic!("cannot connect to {url} (run scripts/services.sh up mariadb): {e}")
    })
}

/// A database of the test's own, dropped and recreated on each run.
pub struct MyDb {
    pub name: String,
    pub url: String,
}

impl MyDb {
    pub async fn create(name: &str) -> MyDb {
        let admin = mysql_admin_url();
        let mut conn = my_connect(&admin).await;
        conn.query_drop(format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .unwrap();
        conn.query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            .await
            .unwrap();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("bad admin url"),
        };
        MyDb {
            name: name.to_string(),
            url,
        }
    }

    pub async fn conn(&self) -> Conn {
        my_connect(&self.url).await
    }
}

/// Run statements separated by `;` on `conn`.
pub async fn my_exec(conn: &mut Conn, sql: &str) {
    for statement in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        conn.query_drop(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// The table's rows as canonical text, by key. `exprs` are SQL expressions in column order
/// (each rendered with CAST … AS CHAR); the first is the key.
pub async fn my_table_state(
    conn: &mut Conn,
    table: &str,
    exprs: &[&str],
) -> BTreeMap<String, Vec<Option<String>>> {
    let sql = format!(
        "SELECT {} FROM {table}",
        exprs
            .iter()
            .map(|e| format!("CAST(({e}) AS CHAR)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap();
    rows.into_iter()
        .map(|mut r| {
            let vals: Vec<Option<String>> = (0..exprs.len())
                .map(|i| r.take::<Option<String>, _>(i).flatten())
                .collect();
            (vals[0].clone().unwrap(), vals)
        })
        .collect()
}

/// The binlog file the server writes now.
pub async fn current_binlog(conn: &mut Conn) -> String {
    let row: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await.unwrap();
    row.and_then(|mut r| r.take::<String, _>(0)).unwrap()
}
