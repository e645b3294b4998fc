//! Property tests on the MySQL/MariaDB decoders sluice wrote: TABLE_MAP and rows events, every
//! binlog value type under every column kind, MariaDB's GTID events, binary JSON, column types,
//! GTID positions and the DDL tracker return values or errors for any input, and never panic.

use proptest::prelude::*;
use sluice::decoders::mysql::ddl::{self, DdlContext, Tables};
use sluice::decoders::mysql::gtid::{MariaGtidPos, MysqlGtidSet};
use sluice::decoders::mysql::mariadb;
use sluice::decoders::mysql::rows::{self, Lossy, MapColumn, Reader, RowDecoder, RowsKind, code};
use sluice::decoders::mysql::schema::MyTableDef;
use sluice::decoders::mysql::types::{self, Charset, Kind, MyColumn};

fn type_codes() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(code::TINY),
        Just(code::SHORT),
        Just(code::LONG),
        Just(code::INT24),
        Just(code::LONGLONG),
        Just(code::FLOAT),
        Just(code::DOUBLE),
        Just(code::NEWDECIMAL),
        Just(code::DATE),
        Just(code::TIME),
        Just(code::TIME2),
        Just(code::DATETIME),
        Just(code::DATETIME2),
        Just(code::TIMESTAMP),
        Just(code::TIMESTAMP2),
        Just(code::YEAR),
        Just(code::VARCHAR),
        Just(code::STRING),
        Just(code::ENUM),
        Just(code::SET),
        Just(code::BIT),
        Just(code::BLOB),
        Just(code::GEOMETRY),
        Just(code::JSON),
        Just(code::NULL),
        any::<u8>(),
    ]
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind::Int {
            bytes: 1,
            unsigned: false,
        },
        Kind::Int {
            bytes: 8,
            unsigned: true,
        },
        Kind::Float,
        Kind::Double,
        Kind::Decimal {
            precision: 12,
            scale: 2,
        },
        Kind::Decimal {
            precision: 65,
            scale: 30,
        },
        Kind::Text(Charset::Utf8),
        Kind::Text(types::charset_of("latin1").unwrap()),
        Kind::Bytes,
        Kind::FixedBinary(4),
        Kind::Date,
        Kind::Time,
        Kind::DateTime,
        Kind::Timestamp,
        Kind::Year,
        Kind::Json,
        Kind::Enum(vec!["a".into(), "b".into()]),
        Kind::Set(vec!["x".into(); 70]),
        Kind::Bit { bits: 1 },
        Kind::Bit { bits: 64 },
        Kind::Geometry,
        Kind::Other("inet6".into()),
    ]
}

/// A valid TABLE_MAP body with `n` columns of the given types, metadata bytes as given.
fn table_map(types: &[u8], meta: &[u8]) -> Vec<u8> {
    let mut b = vec![
        7,
        0,
        0,
        0,
        0,
        0,
        1,
        0,
        1,
        b'd',
        0,
        1,
        b't',
        0,
        types.len() as u8,
    ];
    b.extend(types);
    b.push(meta.len() as u8);
    b.extend(meta);
    b.extend(vec![0xff; types.len().div_ceil(8)]);
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn values_of_any_type_and_kind_never_panic(
        ty in type_codes(),
        meta in any::<u16>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        for kind in kinds() {
            let mut lossy = Lossy::default();
            let col = MapColumn { ty, meta, nullable: true };
            let _ = rows::decode_value(&mut Reader::new(&bytes), col, &kind, 0, &mut lossy);
        }
    }

    #[test]
    fn table_maps_never_panic(body in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = rows::parse_table_map(&body);
    }

    #[test]
    fn rows_events_never_panic(
        types in proptest::collection::vec(type_codes(), 1..6),
        meta in proptest::collection::vec(any::<u8>(), 0..12),
        kind in prop_oneof![Just(RowsKind::Write), Just(RowsKind::Update), Just(RowsKind::Delete)],
        v2 in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..120),
        pick in proptest::collection::vec(0usize..22, 6),
    ) {
        let Ok(map) = rows::parse_table_map(&table_map(&types, &meta)) else { return Ok(()); };
        let all = kinds();
        let chosen: Vec<Kind> = (0..map.columns.len()).map(|i| all[pick[i] % all.len()].clone()).collect();
        // A plausible header followed by random row data, and wholly random bodies.
        let mut plausible = vec![7, 0, 0, 0, 0, 0, 1, 0];
        if v2 { plausible.extend([2, 0]); }
        plausible.push(map.columns.len() as u8);
        plausible.extend([0xff, 0xff]);
        plausible.extend(&body);
        for candidate in [plausible, body.clone()] {
            if let Ok(ev) = rows::parse_rows_event(&candidate, kind, v2)
                && let Ok(mut decoder) = RowDecoder::new(&map, &chosen)
            {
                let _ = decoder.rows(&ev, |_, _| {});
            }
        }
    }

    #[test]
    fn mariadb_events_and_binary_json_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = mariadb::parse_gtid(&body, 1);
        let _ = mariadb::parse_gtid_list(&body);
        let _ = mariadb::parse_binlog_checkpoint(&body);
        let _ = mariadb::parse_annotate_rows(&body);
        let _ = rows::json_text(&body);
        for first in 0u8..16 {
            let mut json = vec![first];
            json.extend(&body);
            let _ = rows::json_text(&json);
        }
    }

    #[test]
    fn column_types_and_gtids_never_panic(text in ".{0,40}", ascii in "[a-z0-9(),' -]{0,30}") {
        for t in [&text, &ascii] {
            let _ = types::parse_type(t);
            let _ = types::canonical_type(t);
            let col = MyColumn { name: "c".into(), column_type: t.to_string(), charset: Some(t.to_string()), nullable: true, key: false };
            let _ = col.column();
            let _ = MariaGtidPos::parse(t);
            let _ = MysqlGtidSet::parse(t);
        }
    }

    #[test]
    fn ddl_never_panics(
        head in prop_oneof![
            Just("ALTER TABLE t "), Just("CREATE TABLE t2 "), Just("DROP TABLE "), Just("RENAME TABLE t TO "),
            Just("TRUNCATE "), Just("CREATE TABLE t3 LIKE "), Just("ALTER TABLE d.t "),
        ],
        body in "[a-zA-Z0-9_ ,.()'`=;-]{0,60}",
    ) {
        let sql = format!("{head}{body}");
        let _ = ddl::classify(&sql);
        let _ = ddl::named_tables(&sql, "d");
        let mut tables: Tables = [(
            "d.t".to_string(),
            MyTableDef {
                columns: vec![MyColumn { name: "id".into(), column_type: "int".into(), charset: None, nullable: false, key: true }],
                charset: "utf8mb4".into(),
            },
        )]
        .into();
        let captured = |_: &str| true;
        let charset = |_: &str| "utf8mb4".to_string();
        let ctx = DdlContext { default_db: "d", captured: &captured, db_charset: &charset };
        let _ = ddl::apply(&mut tables, &sql, &ctx);
    }
}
