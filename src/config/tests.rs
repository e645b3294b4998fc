use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD_SOURCE: &str =
    "name: shop\nkind: postgres\nurl: postgres://u@127.0.0.1/db\ntables: [public.orders]\n";

#[test]
fn loads_a_complete_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "sluice.yaml",
        "pipeline: shop\nsink:\n  path: file:///tmp/lake\n  rotate: { rows: 10, bytes: 1MiB, interval: 2s }\n",
    );
    write(dir.path(), "sources/shop.yaml", GOOD_SOURCE);
    let cfg = Config::load(&main).unwrap();
    assert_eq!(cfg.sources.len(), 1);
    assert_eq!(cfg.sources[0].slot_name(), "sluice_shop");
    assert_eq!(cfg.daemon.sink.rotate.bytes.0, 1 << 20);
    assert_eq!(cfg.daemon.sink.rotate.interval.0, Duration::from_secs(2));
    assert_eq!(cfg.daemon.sink.zones, vec![Zone::Raw]);
}

#[test]
fn a_typo_names_file_line_and_the_keys_expected() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "sluice.yaml",
        "pipeline: shop\nsink:\n  path: /tmp/lake\n  rotat: {}\n",
    );
    let err = Config::load(&main).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("sluice.yaml:4:"), "{text}");
    assert!(text.contains("unknown field `rotat`"), "{text}");
    assert!(text.contains("expected one of"), "{text}");
}

#[test]
fn every_bad_source_file_is_reported_not_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "sluice.yaml", "sink: { path: /tmp/lake }\n");
    write(
        dir.path(),
        "sources/a.yaml",
        "name: a\nkind: postgres\nurl: x\ntables: [public.t]\nsnapshot: sometimes\n",
    );
    write(
        dir.path(),
        "sources/b.yaml",
        "name: b\nkind: postgres\ntables: [public.t]\n",
    );
    let err = Config::load(&main).unwrap_err();
    assert_eq!(err.0.len(), 2, "{err}");
    assert!(err.0[0].to_string().contains("a.yaml:5:"), "{err}");
    assert!(
        err.0[0].message.contains("unknown variant `sometimes`"),
        "{err}"
    );
    assert!(err.0[1].message.contains("missing field `url`"), "{err}");
}

#[test]
fn wrong_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "sluice.yaml",
        "sink:\n  path: /tmp/lake\n  rotate:\n    rows: many\n",
    );
    write(dir.path(), "sources/a.yaml", GOOD_SOURCE);
    let err = Config::load(&main).unwrap_err().to_string();
    assert!(err.contains("sluice.yaml:4:"), "{err}");
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn env_interpolation_and_missing_variable() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "sluice.yaml", "sink: { path: /tmp/lake }\n");
    write(
        dir.path(),
        "sources/a.yaml",
        "name: a\nkind: postgres\nurl: postgres://u:${SLUICE_TEST_SURELY_UNSET_VAR}@h/db\ntables: [public.t]\n",
    );
    let err = Config::load(&main).unwrap_err().to_string();
    assert!(
        err.contains("a.yaml:3: environment variable `SLUICE_TEST_SURELY_UNSET_VAR` is not set"),
        "{err}"
    );
}

#[test]
fn duplicate_source_names_and_bad_table_names() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "sluice.yaml", "sink: { path: /tmp/lake }\n");
    write(dir.path(), "sources/a.yaml", GOOD_SOURCE);
    write(
        dir.path(),
        "sources/b.yaml",
        "name: shop\nkind: postgres\nurl: x\ntables: [orders]\n",
    );
    let err = Config::load(&main).unwrap_err().to_string();
    assert!(err.contains("must be `schema.table`"), "{err}");
    assert!(err.contains("used by another file"), "{err}");
}

#[test]
fn kafka_settings_load_with_defaults_and_refuse_typos_and_what_is_not_built() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "sluice.yaml",
        "sink: { path: /tmp/lake }\nlog:\n  kind: kafka\n  kafka: { brokers: \"k1:9092,k2:9092\", security: { protocol: sasl_ssl, sasl_mechanism: SCRAM-SHA-512 } }\n",
    );
    write(dir.path(), "sources/shop.yaml", GOOD_SOURCE);
    let cfg = Config::load(&main).unwrap();
    let kafka = cfg.daemon.log.kafka_config();
    assert_eq!(kafka.brokers, "k1:9092,k2:9092");
    assert!(kafka.schemas, "JsonConverter embeds schemas by default");
    assert_eq!(kafka.partitions, 3);
    assert_eq!(kafka.transaction_interval.0, Duration::from_millis(10));
    assert_eq!(
        kafka.security.sasl_mechanism.as_deref(),
        Some("SCRAM-SHA-512")
    );

    std::fs::write(
        &main,
        "sink: { path: /tmp/lake }\nlog:\n  kind: kafka\n  kafka: { broker: x }\n",
    )
    .unwrap();
    let text = Config::load(&main).unwrap_err().to_string();
    assert!(
        text.contains("sluice.yaml:4:") && text.contains("unknown field `broker`"),
        "{text}"
    );

    std::fs::write(
        &main,
        "sink: { path: /tmp/lake }\nlog:\n  kind: kafka\n  kafka: { format: avro }\n",
    )
    .unwrap();
    let text = Config::load(&main).unwrap_err().to_string();
    assert!(
        text.contains("`avro` needs log.kafka.schema_registry"),
        "{text}"
    );

    std::fs::write(&main, "sink: { path: /tmp/lake }\nlog: { kind: kafka }\n").unwrap();
    write(
        dir.path(),
        "sources/docs.yaml",
        "name: docs\nkind: mongodb\nurl: mongodb://127.0.0.1/\ntables: [db.c]\n",
    );
    let text = Config::load(&main).unwrap_err().to_string();
    assert!(
        text.contains("docs.yaml") && text.contains("do not run in Kafka mode yet"),
        "{text}"
    );
}

#[test]
fn an_s3_lake_refuses_files_too_large_for_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "sluice.yaml",
        "pipeline: shop\nsink:\n  path: s3://bucket/lake\n  rotate: { bytes: 6GiB }\n",
    );
    write(dir.path(), "sources/shop.yaml", GOOD_SOURCE);
    let text = Config::load(&main).unwrap_err().to_string();
    assert!(text.contains("sluice.yaml"), "{text}");
    assert!(
        text.contains("sink.rotate.bytes must be at most 4GiB on S3"),
        "{text}"
    );
    // The same size on a local disk is the user's choice.
    let main = write(
        dir.path(),
        "sluice.yaml",
        "pipeline: shop\nsink:\n  path: /tmp/lake\n  rotate: { bytes: 6GiB }\n",
    );
    assert!(Config::load(&main).is_ok());
}
