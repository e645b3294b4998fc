//! Property tests on byte and text input: the pgoutput decoder, the value parsers, the Debezium
//! JSON decoder and the transform-file parser return values or errors for anything, and never
//! panic.

use bytes::Bytes;
use proptest::prelude::*;
use sluice::decoders::postgres::{pgoutput, text};
use sluice::event::ColumnType;

fn message_tags() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'R'),
        Just(b'I'),
        Just(b'U'),
        Just(b'D'),
        Just(b'T'),
        Just(b'Y'),
        Just(b'O'),
        any::<u8>()
    ]
}

/// Debezium-like JSON: the real sample's shape with fields dropped or replaced by anything.
fn debezium_like() -> impl Strategy<Value = String> {
    let sample = include_str!("../fixtures/debezium/pg-schemas-events.json");
    let records: serde_json::Value = serde_json::from_str(sample).unwrap();
    let value = records["u"]["value"].to_string();
    (
        0..value.len(),
        0usize..40,
        "[\\[\\]{}\",:0-9a-zA-Z=+/.-]{0,12}",
    )
        .prop_map(move |(at, cut, insert)| {
            // Splice garbage into the record at a char boundary.
            let at = (0..=at)
                .rev()
                .find(|i| value.is_char_boundary(*i))
                .unwrap_or(0);
            let end = (at + cut).min(value.len());
            let end = (end..=value.len())
                .find(|i| value.is_char_boundary(*i))
                .unwrap_or(value.len());
            format!("{}{}{}", &value[..at], insert, &value[end..])
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn debezium_json_decoder_never_panics(line in debezium_like(), junk in ".{0,64}") {
        let mut decoder = sluice::event::debezium::decode::Decoder::default();
        let _ = decoder.decode(&line);
        let _ = decoder.decode(&junk);
    }

    #[test]
    fn transform_files_never_panic_the_parser(
        head in prop_oneof![Just("CREATE STREAM c WITH (dlq = 'x') AS SELECT ".to_string()), ".{0,20}"],
        body in "[a-z0-9_ ,.()'*=<>;-]{0,60}",
    ) {
        let _ = sluice::transform::definition::parse(std::path::Path::new("f.sql"), &format!("{head}{body}"));
    }

    #[test]
    fn pgoutput_never_panics(tag in message_tags(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut msg = vec![tag];
        msg.extend(body);
        let _ = pgoutput::decode(Bytes::from(msg));
    }

    #[test]
    fn tuples_with_plausible_headers_never_panic(
        relation in any::<u32>(),
        ncols in 0u16..8,
        cols in proptest::collection::vec((prop_oneof![Just(b'n'), Just(b'u'), Just(b't'), Just(b'b'), any::<u8>()], any::<i32>(), proptest::collection::vec(any::<u8>(), 0..16)), 0..8),
    ) {
        let mut msg = vec![b'I'];
        msg.extend(relation.to_be_bytes());
        msg.push(b'N');
        msg.extend(ncols.to_be_bytes());
        for (kind, len, data) in cols {
            msg.push(kind);
            msg.extend(len.to_be_bytes());
            msg.extend(data);
        }
        let _ = pgoutput::decode(Bytes::from(msg));
    }

    #[test]
    fn text_values_never_panic(input in ".{0,40}", raw in proptest::collection::vec(any::<u8>(), 0..40)) {
        let types = [
            ColumnType::Bool, ColumnType::Int16, ColumnType::Int64, ColumnType::Float32,
            ColumnType::Decimal { precision: 38, scale: 4 }, ColumnType::Numeric, ColumnType::Bytes,
            ColumnType::Date, ColumnType::Time, ColumnType::TimeTz, ColumnType::Timestamp,
            ColumnType::TimestampTz, ColumnType::List(Box::new(ColumnType::Int32)),
            ColumnType::List(Box::new(ColumnType::List(Box::new(ColumnType::Text)))),
        ];
        for ty in &types {
            let _ = text::parse_text(ty, input.as_bytes());
            let _ = text::parse_text(ty, &raw);
        }
        let mut fields = Vec::new();
        let _ = text::split_copy_line(&raw, &mut fields);
    }

    #[test]
    fn array_literals_round_trip_their_elements(items in proptest::collection::vec(proptest::option::of("[a-z ,\"\\\\{}]{0,6}"), 0..6)) {
        // Build the literal the way Postgres quotes elements, then split it again.
        let literal = format!("{{{}}}", items.iter().map(|i| match i {
            None => "NULL".to_string(),
            Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        }).collect::<Vec<_>>().join(","));
        let (got, nested) = text::split_array(&literal).expect("a well-formed literal splits");
        prop_assert!(!nested);
        prop_assert_eq!(got, items);
    }
}
