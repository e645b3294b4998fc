"""Read Kafka topics as an existing consumer would, and print every committed record.

usage: topic_dump.py [--registry URL] BROKERS TOPIC...
For each record, one JSON line: {"topic", "partition", "offset", "key", "value", "headers"},
the key and value parsed as JSON (Debezium JsonConverter records) or null. With --registry, key
and value are Avro in the Confluent wire format, decoded by confluent-kafka's AvroDeserializer
with the writer's schema from the registry; the line then also has "key_schema_id" and
"value_schema_id", decimals print as their exact text and bytes as base64. It reads with
confluent-kafka (librdkafka's Python client), isolation.level=read_committed, from the beginning
of every partition to its end at the time of the call, so an aborted transaction never shows.
"""
import base64
import decimal
import json
import sys
import uuid

from confluent_kafka import Consumer, TopicPartition, KafkaError

args = sys.argv[1:]
registry = None
if args[0] == "--registry":
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    registry = SchemaRegistryClient({"url": args[1]})
    avro = AvroDeserializer(registry)
    args = args[2:]
brokers, topics = args[0], args[1:]
consumer = Consumer({
    "bootstrap.servers": brokers,
    "group.id": f"topic-dump-{uuid.uuid4()}",
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "earliest",
})
assignment = []
for topic in topics:
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    if meta.error is not None:
        continue
    for p in meta.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > low:
            assignment.append(TopicPartition(topic, p, low))
consumer.assign(assignment)
open_partitions = {(tp.topic, tp.partition) for tp in assignment}


def parse(raw, topic=None, field=None):
    if raw is None:
        return None
    if registry is not None and raw[:1] == b"\0":
        try:
            return avro(raw, SerializationContext(topic, field))
        except Exception as e:  # noqa: BLE001 - a record the deserializer refuses is reported
            return {"undecodable": str(e)}
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def plain(v):
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    raise TypeError(type(v))


def schema_id(raw):
    return int.from_bytes(raw[1:5], "big") if raw and raw[:1] == b"\0" else None


while open_partitions:
    msg = consumer.poll(10)
    if msg is None:
        sys.exit(f"timed out reading {sorted(open_partitions)}")
    if msg.error():
        if msg.error().code() == KafkaError._PARTITION_EOF:
            open_partitions.discard((msg.topic(), msg.partition()))
            continue
        sys.exit(f"consumer error: {msg.error()}")
    headers = {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}
    record = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": parse(msg.key(), msg.topic(), registry and MessageField.KEY),
        "value": parse(msg.value(), msg.topic(), registry and MessageField.VALUE),
        "headers": headers,
    }
    if registry is not None:
        record["key_schema_id"] = schema_id(msg.key())
        record["value_schema_id"] = schema_id(msg.value())
    print(json.dumps(record, default=plain))
consumer.close()
