//! The Avro form of real Debezium 3.6 events (tests/fixtures/debezium, JsonConverter with
//! schemas): schemas as Confluent's AvroConverter derives them, and datums that decode back to
//! the same payload and the same change event.

use proptest::prelude::*;

use super::*;
use crate::event::debezium::decode::Decoder;

fn samples() -> Vec<(&'static str, Json)> {
    let files = [
        include_str!("../../../tests/fixtures/debezium/pg-schemas-events.json"),
        include_str!("../../../tests/fixtures/debezium/mariadb-schemas-events.json"),
    ];
    let mut out = Vec::new();
    for text in files {
        let events: Json = serde_json::from_str(text).unwrap();
        for op in ["c", "u", "d"] {
            out.push((op, events[op].clone()));
        }
    }
    out
}

#[test]
fn envelope_schema_has_the_avro_converter_shape() {
    let (_, event) = &samples()[1];
    let schema = AvroSchema::from_connect(&event["value"]["schema"]).unwrap();
    let avro: Json = serde_json::from_str(&schema.text).unwrap();
    assert_eq!(avro["type"], "record");
    assert_eq!(avro["name"], "Envelope");
    assert_eq!(avro["namespace"], "pg.public.bench");
    let field = |name: &str| {
        avro["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()
            .clone()
    };
    let before = field("before");
    assert_eq!(before["type"][0], "null");
    assert_eq!(before["default"], Json::Null);
    assert_eq!(before["type"][1]["name"], "Value");
    assert_eq!(before["type"][1]["connect.name"], "pg.public.bench.Value");
    // The second use of the row record refers to the first.
    assert_eq!(
        field("after")["type"],
        json!(["null", "pg.public.bench.Value"])
    );
    let price = before["type"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "price")
        .unwrap()
        .clone();
    assert_eq!(price["type"][1]["logicalType"], "decimal");
    assert_eq!(price["type"][1]["precision"], 12);
    assert_eq!(price["type"][1]["scale"], 2);
    // A field with a default puts its type first (Avro's default is the first branch's).
    let source = field("source");
    let snapshot = source["type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "snapshot")
        .unwrap()
        .clone();
    assert_eq!(snapshot["type"][1], "null");
    assert_eq!(snapshot["default"], "false");
    assert_eq!(
        source["type"]["namespace"],
        "io.debezium.connector.postgresql"
    );
    assert_eq!(field("op")["type"], "string");
}

#[test]
fn debezium_events_round_trip_through_avro() {
    for (op, event) in samples() {
        for part in ["key", "value"] {
            let connect = &event[part]["schema"];
            let payload = &event[part]["payload"];
            let schema = AvroSchema::from_connect(connect).unwrap();
            let framed = schema.encode_framed(42, payload).unwrap();
            let (id, datum) = unframe(&framed).unwrap();
            assert_eq!(id, 42);
            let decoded = schema.decode(datum).unwrap();
            assert_eq!(&decoded, payload, "{op} {part}");
            // The schema read back from its Avro text is the same Avro schema again.
            let again = AvroSchema::from_connect(&schema.to_connect().unwrap()).unwrap();
            assert_eq!(again.text, schema.text, "{op} {part}");
        }
    }
}

#[test]
fn avro_records_decode_to_the_same_change_as_json_ones() {
    for (op, event) in samples() {
        let key = &event["key"]["payload"];
        let (schema, payload) = (&event["value"]["schema"], &event["value"]["payload"]);
        let from_json = Decoder::default()
            .decode_envelope(Some(key), Some(schema), payload)
            .unwrap();

        let avro = AvroSchema::from_connect(schema).unwrap();
        let framed = avro.encode_framed(1, payload).unwrap();
        let decoded = avro.decode(&framed[5..]).unwrap();
        let connect = avro.to_connect().unwrap();
        let from_avro = Decoder::default()
            .decode_envelope(Some(key), Some(&connect), &decoded)
            .unwrap();

        assert_eq!(from_avro.op, from_json.op, "{op}");
        assert_eq!(from_avro.before, from_json.before, "{op}");
        assert_eq!(from_avro.after, from_json.after, "{op}");
        assert_eq!(from_avro.table.columns, from_json.table.columns, "{op}");
        assert_eq!(from_avro.pos, from_json.pos, "{op}");
    }
}

#[test]
fn a_payload_that_does_not_fit_is_an_error_naming_the_field() {
    let (_, event) = &samples()[0];
    let schema = AvroSchema::from_connect(&event["value"]["schema"]).unwrap();
    let mut payload = event["value"]["payload"].clone();
    payload["after"]["i32"] = json!("seven");
    let e = schema.encode_framed(1, &payload).unwrap_err();
    assert!(e.0.contains("field `i32`"), "{e}");
}

#[test]
fn names_are_made_valid_avro_names() {
    assert_eq!(avro_name_of("price"), "price");
    assert_eq!(avro_name_of("unit price"), "unit_price");
    assert_eq!(avro_name_of("2fa"), "_2fa");
    assert_eq!(avro_name_of("größe"), "gr__e");
    assert_eq!(avro_full_name("my-db.public.t"), "my_db.public.t");
}

#[test]
fn unframe_needs_the_magic_byte_and_an_id() {
    assert_eq!(unframe(&[0, 0, 0, 0, 7, 1, 2]), Some((7, &[1u8, 2][..])));
    assert_eq!(unframe(b"{\"schema\":1}"), None);
    assert_eq!(unframe(&[0, 0, 0]), None);
}

proptest! {
    /// Decoding arbitrary bytes with a real envelope schema returns an error or a value; it
    /// never panics and never allocates without bound.
    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (_, event) = &samples()[0];
        let schema = AvroSchema::from_connect(&event["value"]["schema"]).unwrap();
        let _ = schema.decode(&bytes);
    }
}
