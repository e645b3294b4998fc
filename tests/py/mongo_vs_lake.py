"""Read a MongoDB collection's ODS table with pyarrow and compare it with the collection.

usage: mongo_vs_lake.py <ods dir of the stream> <mongodb url> <db> <collection>

Every document must be there once, its `_doc` column equal to the document (relaxed extended
JSON), and every inferred column equal to the field under the documented mapping
(docs/types.md): numbers, strings, booleans and dates as themselves, ObjectId as hex, Decimal128
as its exact text, UUID as text, binary as bytes, arrays as lists, and documents or fields of
mixed types as extended JSON text. Prints `ok <documents>` or the differences (exit 1).
"""

import datetime
import glob
import json
import sys
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pymongo
from bson import Binary, Decimal128, ObjectId, Regex, Timestamp
from bson.json_util import RELAXED_JSON_OPTIONS, dumps

META = {"_id", "_doc", "_op", "_seq", "_ts_ms", "_source_pos", "_tx_id", "_deleted"}


def relaxed(value):
    return json.loads(dumps(value, json_options=RELAXED_JSON_OPTIONS))


def json_equal(text, value):
    try:
        return text is not None and json.loads(text) == value
    except ValueError:
        return False


def decimal_text(d):
    return format(d.to_decimal(), "f")


def expected(value, arrow_type):
    """The lake value a BSON value should become in a column of `arrow_type`."""
    if value is None:
        return None
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        if isinstance(value, str):
            return ("text", value)
        if isinstance(value, ObjectId):
            return ("text", str(value))
        if isinstance(value, Decimal128):
            return ("text", decimal_text(value))
        if isinstance(value, Regex):
            options = relaxed(value)["$regularExpression"]["options"]
            return ("text", "/%s/%s" % (value.pattern, options))
        if isinstance(value, Timestamp):
            return ("text", "%d:%d" % (value.time, value.inc))
        if isinstance(value, Binary) and value.subtype == 4:
            return ("text", str(uuid.UUID(bytes=bytes(value))))
        return ("json", relaxed(value))
    if pa.types.is_timestamp(arrow_type):
        return ("value", value.replace(tzinfo=datetime.timezone.utc) if value.tzinfo is None else value)
    if pa.types.is_binary(arrow_type):
        return ("value", bytes(value))
    if pa.types.is_list(arrow_type):
        return ("value", [expected(v, arrow_type.value_type)[1] for v in value])
    return ("value", value)


def main():
    ods, url, db, coll = sys.argv[1:5]
    files = sorted(glob.glob(ods + "/**/*.parquet", recursive=True))
    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables, promote_options="default") if tables else None
    client = pymongo.MongoClient(url)
    docs = {}
    for d in client[db][coll].find():
        i = d["_id"]
        key = str(i) if isinstance(i, (ObjectId, str, int)) else json.dumps(relaxed(i), separators=(",", ":"))
        docs[key] = d
    problems = []
    rows = table.to_pylist() if table is not None else []
    seen = set()
    for row in rows:
        key = row["_id"]
        if key in seen:
            problems.append("%s: twice in the ODS" % key)
        seen.add(key)
        d = docs.get(key)
        if d is None:
            problems.append("%s: in the lake, not in the collection" % key)
            continue
        if json.loads(row["_doc"]) != relaxed(d):
            problems.append("%s: _doc %s != %s" % (key, row["_doc"], relaxed(d)))
        for field in table.schema:
            if field.name in META:
                continue
            want = expected(d.get(field.name), field.type)
            got = row[field.name]
            if want is None:
                if got is not None:
                    problems.append("%s.%s: %r, the document has none" % (key, field.name, got))
                continue
            kind, value = want
            # A text column holds a string itself, or (widened to JSON) its JSON text.
            ok = got == value or (kind != "value" and json_equal(got, relaxed(d.get(field.name))))
            if not ok:
                problems.append("%s.%s: lake %r, collection %r" % (key, field.name, got, value))
    for key in docs.keys() - seen:
        problems.append("%s: in the collection, not in the lake" % key)
    if problems:
        print("\n".join(problems[:50]))
        sys.exit(1)
    print("ok %d" % len(rows))


if __name__ == "__main__":
    main()
