//! Property tests on what the MongoDB source decodes: any BSON document (every type, nested,
//! odd field names) is typed into a row, widens the schema or not, and orders against any other
//! `_id`; any update description applies to any pre-image or is an error; stored cursors and
//! tokens parse or are errors. None of it panics.

use mongodb::bson::{self, Bson, Document, spec::BinarySubtype};
use proptest::prelude::*;
use sluice::decoders::mongodb::documents::{CollectionSchema, apply_update, compare, id_text};
use sluice::decoders::mongodb::parse_id;
use sluice::decoders::mongodb::parse_token;

fn leaf() -> impl Strategy<Value = Bson> {
    prop_oneof![
        Just(Bson::Null),
        Just(Bson::Undefined),
        Just(Bson::MinKey),
        Just(Bson::MaxKey),
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        any::<f64>().prop_map(Bson::Double),
        any::<bool>().prop_map(Bson::Boolean),
        ".{0,8}".prop_map(Bson::String),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(bson::oid::ObjectId::from_bytes(b))),
        any::<i64>().prop_map(|ms| Bson::DateTime(bson::DateTime::from_millis(ms))),
        any::<[u8; 16]>().prop_map(|b| Bson::Decimal128(bson::Decimal128::from_bytes(b))),
        (any::<u32>(), any::<u32>())
            .prop_map(|(time, increment)| Bson::Timestamp(bson::Timestamp { time, increment })),
        (
            proptest::collection::vec(any::<u8>(), 0..20),
            prop_oneof![Just(0u8), Just(4u8), any::<u8>()]
        )
            .prop_map(|(bytes, subtype)| Bson::Binary(bson::Binary {
                subtype: BinarySubtype::from(subtype),
                bytes
            })),
        ("[a-z*]{0,4}", "[imsx]{0,2}").prop_map(|(pattern, options)| Bson::RegularExpression(
            bson::Regex { pattern, options }
        )),
        ".{0,6}".prop_map(Bson::JavaScriptCode),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
            proptest::collection::vec(("[a-c._$]{1,3}", inner), 0..4)
                .prop_map(|fields| Bson::Document(fields.into_iter().collect())),
        ]
    })
}

fn document() -> impl Strategy<Value = Document> {
    (
        value(),
        proptest::collection::vec(("[a-d_.$]{1,3}", value()), 0..6),
    )
        .prop_map(|(id, fields)| {
            let mut d = Document::new();
            d.insert("_id", id);
            for (k, v) in fields {
                d.insert(k, v);
            }
            d
        })
}

fn path() -> impl Strategy<Value = String> {
    "[a-d0-3]{1,2}(\\.[a-d0-3]{1,2}){0,2}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn any_document_types_into_a_row(docs in proptest::collection::vec(document(), 1..4)) {
        let mut schema = CollectionSchema::default();
        for d in &docs {
            schema.observe(d);
            let row = schema.row(d);
            prop_assert_eq!(row.len(), schema.columns().len());
            let id = d.get("_id").unwrap();
            let _ = id_text(id);
            let _ = schema.key_row(id);
        }
    }

    #[test]
    fn any_ids_order_totally(a in value(), b in value()) {
        prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        prop_assert_eq!(compare(&a, &a), std::cmp::Ordering::Equal);
    }

    #[test]
    fn any_update_applies_or_is_an_error(
        pre in document(),
        set in proptest::collection::vec((path(), value()), 0..4),
        removed in proptest::collection::vec(path(), 0..3),
        truncated in proptest::collection::vec((path(), 0usize..4), 0..2),
    ) {
        let updated: Document = set.into_iter().collect();
        let _ = apply_update(&pre, &updated, &removed, &truncated);
    }

    #[test]
    fn stored_cursors_and_tokens_parse_or_fail(text in ".{0,40}", json in "[{}\\[\\]\":,a-z0-9$_]{0,40}") {
        let _ = parse_id(&text);
        let _ = parse_id(&json);
        let _ = parse_token(&json);
    }
}
