//! Change events as Kafka records and back.
//!
//! The key is the primary key and the value the Debezium envelope, in Debezium's JsonConverter
//! shape (with its embedded Connect schema when `schemas: true`), so Debezium consumers read
//! sluice's topics unchanged. Two headers carry what the envelope cannot say exactly, for
//! sluice's own downstream stages: `sluice.seq`, the event's sequence (the lake's `_seq`), and
//! `sluice.version`, its table's schema version, and `sluice.partial_before` on a delete whose
//! before image holds only the key (Postgres's default replica identity; the envelope shows
//! the other columns as null, which a transform's filter must not read as values). Records
//! without them (written by Debezium, say)
//! still decode; their sequence is then their topic position.
//!
//! Decoding never panics: a record that cannot be read is an error for the dead-letter queue.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use serde_json::Value as Json;

use super::KafkaError;
use super::avro::{AvroSchema, unframe};
use super::registry::{RegistryError, SchemaRegistry};
use crate::event::debezium::decode::{DecodeError, Decoder};
use crate::event::debezium::serialize::{Envelope, Key};
use crate::event::debezium::{envelope_json, envelope_schema, key_json, key_json_with_schema};
use crate::event::{ChangeEvent, Op, Seq, TableSchema};

pub(crate) const HEADER_SEQ: &str = "sluice.seq";
pub(crate) const HEADER_VERSION: &str = "sluice.version";
pub(crate) const HEADER_PARTIAL_BEFORE: &str = "sluice.partial_before";

/// One event as a record: key (None for a truncate, which has no key), value and headers. The
/// key and value are the encoder's buffers, good until its next record (the producer copies
/// them).
pub(crate) struct EncodedRecord<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: &'a [u8],
    pub(crate) headers: OwnedHeaders,
}

/// How records are written: Debezium's JsonConverter (with or without the embedded schema), or
/// Avro in the Confluent wire format with its schemas in the registry.
#[derive(Clone)]
pub(crate) enum Encoding {
    Json { schemas: bool },
    Avro(Arc<SchemaRegistry>),
}

/// A table version's key and value schemas, in the form its encoding needs.
enum TableSchemas {
    /// The Connect schemas as JSON text, when embedded.
    Json { key: String, value: String },
    /// The registered Avro schemas and their ids.
    Avro {
        key: Box<(u32, AvroSchema)>,
        value: Box<(u32, AvroSchema)>,
    },
    /// JSON without embedded schemas.
    None,
}

/// Encodes events, keeping the schemas of the tables it saw last: a JSON schema is most of a
/// record's bytes, an Avro one a registry call, and both the same for every event of a table
/// version.
pub(crate) struct RecordEncoder {
    encoding: Encoding,
    /// Most recent first.
    cache: Vec<(Arc<TableSchema>, TableSchemas)>,
    /// The last record's key and value, their room kept for the next: a record with its schema
    /// is some kilobytes, and allocating that afresh for every record cost the producer's
    /// thread a tenth of its time in malloc.
    key: Vec<u8>,
    value: Vec<u8>,
}

impl RecordEncoder {
    const CACHED_TABLES: usize = 32;

    pub(crate) fn new(encoding: Encoding) -> Self {
        RecordEncoder {
            encoding,
            cache: Vec::new(),
            key: Vec::new(),
            value: Vec::new(),
        }
    }

    /// The record of `event` for `topic` (the topic names the registry subjects).
    pub(crate) fn encode(
        &mut self,
        topic: &str,
        event: &ChangeEvent,
    ) -> Result<EncodedRecord<'_>, KafkaError> {
        let now_us = chrono::Utc::now().timestamp_micros();
        let has_key = event.op != Op::Truncate;
        let envelope = Envelope {
            event,
            processed_at_us: now_us,
        };
        let (mut key, mut value) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.value),
        );
        key.clear();
        value.clear();
        match self.schemas_of(topic, event)? {
            TableSchemas::None => {
                json_text(&mut key, None, &Key(event))?;
                json_text(&mut value, None, &envelope)?;
            }
            TableSchemas::Json {
                key: key_schema,
                value: value_schema,
            } => {
                json_text(&mut key, Some(key_schema), &Key(event))?;
                json_text(&mut value, Some(value_schema), &envelope)?;
            }
            TableSchemas::Avro {
                key: key_schema,
                value: value_schema,
            } => {
                if has_key {
                    key = key_schema.1.encode_framed(key_schema.0, &key_json(event))?;
                }
                value = value_schema
                    .1
                    .encode_framed(value_schema.0, &envelope_json(event, now_us))?;
            }
        }
        (self.key, self.value) = (key, value);
        let seq = event.seq.to_fixed_hex();
        let version = event.table.version.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_SEQ,
                value: Some(seq.as_bytes()),
            })
            .insert(Header {
                key: HEADER_VERSION,
                value: Some(version.as_bytes()),
            });
        if event.partial_before {
            headers = headers.insert(Header {
                key: HEADER_PARTIAL_BEFORE,
                value: Some(b"1"),
            });
        }
        Ok(EncodedRecord {
            key: has_key.then_some(self.key.as_slice()),
            value: &self.value,
            headers,
        })
    }

    /// The key and value schemas of the event's table, registering Avro ones on first use.
    fn schemas_of(
        &mut self,
        topic: &str,
        event: &ChangeEvent,
    ) -> Result<&TableSchemas, KafkaError> {
        let hit = self
            .cache
            .iter()
            .position(|(table, _)| Arc::ptr_eq(table, &event.table));
        let i = match hit {
            Some(i) => i,
            None => {
                let schemas = self.schemas_for(topic, event)?;
                self.cache.truncate(Self::CACHED_TABLES - 1);
                self.cache.insert(0, (event.table.clone(), schemas));
                0
            }
        };
        Ok(&self.cache[i].1)
    }

    fn schemas_for(&self, topic: &str, event: &ChangeEvent) -> Result<TableSchemas, KafkaError> {
        let key = || {
            let mut framed = key_json_with_schema(event);
            framed["schema"].take()
        };
        Ok(match &self.encoding {
            Encoding::Json { schemas: false } => TableSchemas::None,
            Encoding::Json { schemas: true } => TableSchemas::Json {
                key: key().to_string(),
                value: envelope_schema(&event.table).to_string(),
            },
            Encoding::Avro(registry) => {
                let register =
                    |subject: String, connect: &Json| -> Result<(u32, AvroSchema), KafkaError> {
                        let schema = AvroSchema::from_connect(connect)?;
                        Ok((registry.register(&subject, &schema)?, schema))
                    };
                TableSchemas::Avro {
                    key: Box::new(register(format!("{topic}-key"), &key())?),
                    value: Box::new(register(
                        format!("{topic}-value"),
                        &envelope_schema(&event.table),
                    )?),
                }
            }
        })
    }
}

/// JSON text of `payload` into `out`, after its Connect schema when there is one
/// (JsonConverter's `{"schema": …, "payload": …}`).
fn json_text(
    out: &mut Vec<u8>,
    schema: Option<&str>,
    payload: &impl serde::Serialize,
) -> Result<(), KafkaError> {
    if let Some(schema) = schema {
        out.extend_from_slice(b"{\"schema\":");
        out.extend_from_slice(schema.as_bytes());
        out.extend_from_slice(b",\"payload\":");
    }
    serde_json::to_writer(&mut *out, payload)
        .map_err(|e| KafkaError::Setup(format!("encoding a record: {e}")))?;
    if schema.is_some() {
        out.push(b'}');
    }
    Ok(())
}

/// A dead letter, for the dead-letter stream `dlq`, of a topic record that `reader` (a transform,
/// or the sink) could not decode from `stream`: the error, `topic:partition:offset`, and the
/// record's value as text.
pub(crate) fn undecodable_dead_letter<M: Message>(
    msg: &M,
    dlq: &str,
    reader: &str,
    stream: &str,
    error: &DecodeError,
) -> ChangeEvent {
    let record = String::from_utf8_lossy(msg.payload().unwrap_or_default());
    let at = format!("{}:{}:{}", msg.topic(), msg.partition(), msg.offset());
    crate::event::dead_letter::undecodable_dead_letter(
        dlq,
        reader,
        stream,
        &format!("cannot decode the record: {error}"),
        &at,
        &record,
    )
}

/// `{"schema": …, "payload": …}` (JsonConverter with schemas, schema first as it writes it): the
/// schema's text, unparsed, and the payload. None for any other shape.
fn framed(value: &[u8]) -> Result<Option<(&str, Json)>, DecodeError> {
    #[derive(serde::Deserialize)]
    struct Framed<'a> {
        #[serde(borrow)]
        schema: Option<&'a serde_json::value::RawValue>,
        payload: Option<Json>,
    }
    let starts_with_schema = value
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(9)
        .copied()
        .eq(b"{\"schema\"".iter().copied());
    if !starts_with_schema {
        return Ok(None);
    }
    let framed: Framed<'_> = serde_json::from_slice(value)
        .map_err(|e| DecodeError(format!("the value is not JSON: {e}")))?;
    Ok(match (framed.schema, framed.payload) {
        (Some(schema), Some(payload)) => Some((schema.get(), payload)),
        _ => None,
    })
}

/// Decodes the records of many topics, each with its own schema history, naming every event's
/// stream after its topic (a cleansed topic's envelope names the raw table it came from). Both
/// encodings are read whatever `format` says, told apart by the Avro magic byte.
#[derive(Default)]
pub(crate) struct RecordDecoder {
    topics: HashMap<String, TopicDecoder>,
    /// For Avro records; None when no registry is configured.
    registry: Option<Arc<SchemaRegistry>>,
    /// Writer schemas by registry id, with their Connect form.
    avro: HashMap<u32, (Arc<AvroSchema>, Arc<Json>)>,
}

struct TopicDecoder {
    stream: String,
    decoder: Decoder,
    /// The last Connect schema seen, as text and parsed: parsing it is most of a record's
    /// decoding, and consecutive records of a table carry the same one.
    schema: Option<(String, Json)>,
    /// The decoder's last schema, and the same with this topic's stream name and version.
    last: Option<(Arc<TableSchema>, Arc<TableSchema>)>,
}

/// A writer's Avro schema and its Connect form.
type WriterSchema = (Arc<AvroSchema>, Arc<Json>);

/// A record's key or value, decoded to the JsonConverter's form.
struct Decoded {
    /// The Connect schema, when the record had one.
    schema: Option<Arc<Json>>,
    payload: Json,
}

impl RecordDecoder {
    pub(crate) fn new(registry: Option<Arc<SchemaRegistry>>) -> Self {
        RecordDecoder {
            registry,
            ..Default::default()
        }
    }

    /// Decode one message of `topic` whose stream is `stream`. The inner error is the record's
    /// (for the dead-letter queue); the outer one the stage's (the registry cannot be reached).
    pub(crate) fn decode<M: Message>(
        &mut self,
        stream: &str,
        message: &M,
    ) -> Result<Result<ChangeEvent, DecodeError>, KafkaError> {
        let value = match message.payload() {
            Some(v) => v,
            None => {
                return Ok(Err(DecodeError(
                    "the record has no value (a tombstone)".into(),
                )));
            }
        };
        let key = match message.key().map(|k| self.avro_or_none(k)).transpose()? {
            None => None,
            Some(Some(Ok(decoded))) => Some(decoded.payload),
            Some(Some(Err(e))) => return Ok(Err(e)),
            Some(None) => match serde_json::from_slice(message.key().unwrap_or_default()) {
                Ok(k) => Some(k),
                Err(e) => return Ok(Err(DecodeError(format!("the key is not JSON: {e}")))),
            },
        };
        let avro = match self.avro_or_none(value)? {
            None => None,
            Some(Ok(decoded)) => Some(decoded),
            Some(Err(e)) => return Ok(Err(e)),
        };
        let topic = self
            .topics
            .entry(message.topic().to_string())
            .or_insert_with(|| TopicDecoder {
                stream: stream.to_string(),
                decoder: Decoder::default(),
                schema: None,
                last: None,
            });
        Ok(topic.decode(key.as_ref(), avro, value, message))
    }

    /// An Avro key or value decoded with its writer's schema; None when the bytes are not Avro.
    fn avro_or_none(
        &mut self,
        bytes: &[u8],
    ) -> Result<Option<Result<Decoded, DecodeError>>, KafkaError> {
        let Some((id, datum)) = unframe(bytes) else {
            return Ok(None);
        };
        let (schema, connect) = match self.writer_schema(id)? {
            Ok(found) => found,
            Err(e) => return Ok(Some(Err(e))),
        };
        Ok(Some(
            schema
                .decode(datum)
                .map(|payload| Decoded {
                    schema: Some(connect),
                    payload,
                })
                .map_err(|e| DecodeError(format!("schema id {id}: {e}"))),
        ))
    }

    fn writer_schema(&mut self, id: u32) -> Result<Result<WriterSchema, DecodeError>, KafkaError> {
        if let Some(found) = self.avro.get(&id) {
            return Ok(Ok(found.clone()));
        }
        let Some(registry) = &self.registry else {
            return Ok(Err(DecodeError(format!(
                "the record is Avro (schema id {id}) and log.kafka.schema_registry is not set"
            ))));
        };
        let schema = match registry.schema(id) {
            Ok(s) => s,
            // The record names a schema the registry does not have, or one that is not Avro.
            Err(e @ (RegistryError::Failed { code: 404, .. } | RegistryError::Schema { .. })) => {
                return Ok(Err(DecodeError(e.to_string())));
            }
            Err(e) => return Err(e.into()),
        };
        let connect = match schema.to_connect() {
            Ok(c) => Arc::new(c),
            Err(e) => return Ok(Err(DecodeError(format!("schema id {id}: {e}")))),
        };
        self.avro.insert(id, (schema.clone(), connect.clone()));
        Ok(Ok((schema, connect)))
    }
}

impl TopicDecoder {
    fn decode<M: Message>(
        &mut self,
        key: Option<&Json>,
        avro: Option<Decoded>,
        value: &[u8],
        message: &M,
    ) -> Result<ChangeEvent, DecodeError> {
        let mut event = match avro {
            Some(Decoded { schema, payload }) => {
                self.decoder
                    .decode_envelope(key, schema.as_deref(), &payload)?
            }
            None => match framed(value)? {
                Some((schema_text, payload)) => {
                    let schema = match &self.schema {
                        Some((text, parsed)) if text == schema_text => parsed,
                        _ => {
                            let parsed: Json = serde_json::from_str(schema_text)
                                .map_err(|e| DecodeError(format!("the schema is not JSON: {e}")))?;
                            &self.schema.insert((schema_text.to_string(), parsed)).1
                        }
                    };
                    self.decoder.decode_envelope(key, Some(schema), &payload)?
                }
                None => {
                    let value: Json = serde_json::from_slice(value)
                        .map_err(|e| DecodeError(format!("the value is not JSON: {e}")))?;
                    self.decoder.decode_parts(key, &value)?
                }
            },
        };
        let (mut seq, mut version) = (None, None);
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                let text = h.value.and_then(|v| std::str::from_utf8(v).ok());
                match h.key {
                    HEADER_SEQ => seq = text.and_then(Seq::from_fixed_hex),
                    HEADER_VERSION => version = text.and_then(|t| t.parse::<u32>().ok()),
                    HEADER_PARTIAL_BEFORE => event.partial_before = text == Some("1"),
                    _ => {}
                }
            }
        }
        event.seq = seq.unwrap_or_else(|| {
            Seq::new(
                message.offset().max(0) as u64,
                message.partition().max(0) as u64,
            )
        });
        event.table = self.named(&event.table, version);
        Ok(event)
    }

    fn named(&mut self, decoded: &Arc<TableSchema>, version: Option<u32>) -> Arc<TableSchema> {
        if let Some((seen, named)) = &self.last
            && Arc::ptr_eq(seen, decoded)
            && version.is_none_or(|v| v == named.version)
        {
            return named.clone();
        }
        let mut schema = (**decoded).clone();
        schema.stream = self.stream.clone();
        if let Some(v) = version {
            schema.version = v;
        }
        let named = Arc::new(schema);
        self.last = Some((decoded.clone(), named.clone()));
        named
    }
}
