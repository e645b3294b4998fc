//! The lake: storage below every stage. Where files live ([`store`]: a local folder, HDFS or S3),
//! how a set of files becomes visible at once with the source positions it covers ([`commit`],
//! the exactly-once protocol), which one process may write it ([`lease`]), how rows become Parquet ([`parquet`]), the current-state zone
//! ([`ods`]), small files merged ([`compact`]), table definitions for query engines ([`ddl`]) and
//! the schema histories sources keep beside their positions ([`schema_history`]).

pub mod commit;
pub(crate) mod compact;
pub mod ddl;
pub(crate) mod lease;
pub(crate) mod ods;
pub mod parquet;
pub(crate) mod position_claims;
pub(crate) mod schema_history;
pub mod store;

/// A name from outside (a source, a table, a topic) as one path segment of the lake: `/`, `\`,
/// `%` and control characters percent-encoded, and `.`/`..` encoded whole, so that no name can
/// reach outside its folder ("Names from the databases are data" in the design).
pub(crate) fn path_segment(name: &str) -> String {
    if name == "." || name == ".." || name.is_empty() {
        return name
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
            + "%00";
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '/' | '\\' | '%') || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn a_name_is_one_path_segment() {
        assert_eq!(path_segment("shop"), "shop");
        assert_eq!(path_segment("a/b"), "a%2Fb");
        assert_eq!(path_segment("..\\x"), "..%5Cx");
        assert_eq!(path_segment("100%"), "100%25");
        assert_eq!(path_segment("tab\tnl\n"), "tab%09nl%0A");
        assert_eq!(path_segment(".."), "%2E%2E%00");
        assert_eq!(path_segment(""), "%00");
        for hostile in ["..", ".", "../../etc", "a/../../b", "x\\..\\y"] {
            let seg = path_segment(hostile);
            assert!(!seg.contains('/') && !seg.contains('\\') && seg != ".." && seg != ".");
        }
    }
}
