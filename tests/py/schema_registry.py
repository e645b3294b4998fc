#!/usr/bin/env python3
"""A STAND-IN for Confluent Schema Registry, for sluice's tests only.

No Confluent-compatible schema registry can be installed on these machines (the real one is a
JVM service from Confluent's Maven and Docker repositories; Karapace is not on PyPI), so the
tests run this: the documented REST subset that sluice and confluent-kafka's Avro serde use,
with Avro schema resolution for the compatibility levels. docker-compose.yaml runs the real
Confluent Schema Registry.

  POST   /subjects/<s>/versions            register (same schema again: same id)
  POST   /subjects/<s>                     look a schema up
  GET    /subjects, /subjects/<s>/versions, /subjects/<s>/versions/<n|latest>
  DELETE /subjects/<s>
  GET    /schemas/ids/<id>
  GET    /config, PUT /config, GET|PUT|DELETE /config/<s>     compatibility levels
  POST   /compatibility/subjects/<s>/versions/<n|latest>

Errors are the registry's: {"error_code": 409|40401|40403|42201|401, "message": ...}. State is
in memory. `--auth user:password` requires HTTP basic credentials.

    schema_registry.py --port 8081 [--auth user:password]
"""

import argparse
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import fastavro

LEVELS = {"NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
          "FULL_TRANSITIVE"}
PROMOTIONS = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"),
              ("long", "double"), ("float", "double"), ("string", "bytes"), ("bytes", "string")}
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class HttpError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ----------------------------------------------------------------------------- schema resolution
def named_types(schema, namespace=None, out=None):
    """Full name -> definition of every named type in a parsed schema."""
    out = {} if out is None else out
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, namespace, out)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            name = schema["name"]
            ns = schema.get("namespace", namespace)
            if "." in name:
                full, ns = name, name.rsplit(".", 1)[0]
            else:
                full = f"{ns}.{name}" if ns else name
            out[full] = (schema, ns)
            for field in schema.get("fields", []):
                named_types(field["type"], ns, out)
        elif kind == "array":
            named_types(schema["items"], namespace, out)
        elif kind == "map":
            named_types(schema["values"], namespace, out)
        elif isinstance(kind, (dict, list)):
            named_types(kind, namespace, out)
    return out


def resolve(schema, names, namespace):
    """A schema with references replaced by their definitions, and its namespace."""
    if isinstance(schema, str) and schema not in PRIMITIVES:
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        found = names.get(full) or names.get(schema)
        if found is None:
            raise ValueError(f"unknown type {schema}")
        return found
    if isinstance(schema, dict) and isinstance(schema.get("type"), str) \
            and schema["type"] in PRIMITIVES:
        return schema["type"], namespace
    if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
        return resolve(schema["type"], names, namespace)
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
        name = schema["name"]
        return schema, name.rsplit(".", 1)[0] if "." in name else schema.get("namespace",
                                                                              namespace)
    return schema, namespace


def kind_of(schema):
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return schema["type"]


def short(name):
    return name.rsplit(".", 1)[-1]


def incompatibility(reader, writer, rnames, wnames, rns=None, wns=None, path="/"):
    """Why data written with `writer` cannot be read with `reader`, or None (Avro's rules)."""
    reader, rns = resolve(reader, rnames, rns)
    writer, wns = resolve(writer, wnames, wns)
    rk, wk = kind_of(reader), kind_of(writer)
    if wk == "union":
        for branch in writer:
            why = incompatibility(reader, branch, rnames, wnames, rns, wns, path)
            if why:
                return why
        return None
    if rk == "union":
        if any(incompatibility(b, writer, rnames, wnames, rns, wns, path) is None for b in reader):
            return None
        return f"{path}: the reader's union has no branch for the writer's {wk}"
    if rk in PRIMITIVES or wk in PRIMITIVES:
        if rk == wk or (wk, rk) in PROMOTIONS:
            return None
        return f"{path}: the writer's {wk} cannot be read as {rk}"
    if rk != wk:
        return f"{path}: the writer's {wk} cannot be read as {rk}"
    if rk == "record":
        if short(reader["name"]) != short(writer["name"]):
            return f"{path}: record {writer['name']} cannot be read as {reader['name']}"
        written = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            if field["name"] in written:
                why = incompatibility(field["type"], written[field["name"]]["type"], rnames,
                                      wnames, rns, wns, f"{path}{field['name']}/")
                if why:
                    return why
            elif "default" not in field:
                return f"{path}{field['name']}: the reader's field has no default and the " \
                       f"writer has no such field"
        return None
    if rk == "array":
        return incompatibility(reader["items"], writer["items"], rnames, wnames, rns, wns, path)
    if rk == "map":
        return incompatibility(reader["values"], writer["values"], rnames, wnames, rns, wns, path)
    if rk == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return f"{path}: the reader's enum lacks {sorted(missing)}"
        return None
    if rk == "fixed":
        return None if reader["size"] == writer["size"] else f"{path}: fixed sizes differ"
    return None


def compatibility_problems(level, new, olders):
    """Problems of registering `new` after the parsed `olders` (oldest first) under `level`."""
    if level == "NONE" or not olders:
        return []
    against = olders if level.endswith("TRANSITIVE") else olders[-1:]
    new_names = named_types(new)
    problems = []
    for old in against:
        old_names = named_types(old)
        if level.startswith(("BACKWARD", "FULL")):
            why = incompatibility(new, old, new_names, old_names)
            if why:
                problems.append(f"the new schema cannot read data written with an earlier one: "
                                f"{why}")
        if level.startswith(("FORWARD", "FULL")):
            why = incompatibility(old, new, old_names, new_names)
            if why:
                problems.append(f"an earlier schema cannot read data written with the new one: "
                                f"{why}")
    return problems


# ----------------------------------------------------------------------------- registry state
class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.schemas = []          # id - 1 -> canonical text
        self.subjects = {}         # subject -> [schema id, ...] (version n at index n - 1)
        self.level = "BACKWARD"
        self.levels = {}

    @staticmethod
    def canonical(text):
        try:
            parsed = json.loads(text)
            fastavro.parse_schema(parsed, _write_hint=False)
        except Exception as e:  # noqa: BLE001 - any parse failure is the caller's bad schema
            raise HttpError(422, 42201, f"Invalid schema: {e}")
        return json.dumps(parsed, separators=(",", ":")), parsed

    def id_of(self, canonical):
        try:
            return self.schemas.index(canonical) + 1
        except ValueError:
            self.schemas.append(canonical)
            return len(self.schemas)

    def versions(self, subject):
        if subject not in self.subjects:
            raise HttpError(404, 40401, f"Subject '{subject}' not found.")
        return self.subjects[subject]

    def version(self, subject, version):
        ids = self.versions(subject)
        n = len(ids) if version == "latest" else int(version)
        if not 1 <= n <= len(ids):
            raise HttpError(404, 40402, f"Version {version} not found.")
        sid = ids[n - 1]
        return {"subject": subject, "version": n, "id": sid, "schema": self.schemas[sid - 1]}

    def register(self, subject, text):
        canonical, parsed = self.canonical(text)
        with self.lock:
            ids = self.subjects.get(subject, [])
            for sid in ids:
                if self.schemas[sid - 1] == canonical:
                    return {"id": sid}
            olders = [json.loads(self.schemas[sid - 1]) for sid in ids]
            level = self.levels.get(subject, self.level)
            problems = compatibility_problems(level, parsed, olders)
            if problems:
                raise HttpError(409, 409, f"Schema being registered is incompatible with an "
                                          f"earlier schema for subject \"{subject}\", details: "
                                          f"{problems} (compatibility {level})")
            sid = self.id_of(canonical)
            self.subjects.setdefault(subject, []).append(sid)
            return {"id": sid}

    def lookup(self, subject, text):
        canonical, _ = self.canonical(text)
        for n, sid in enumerate(self.versions(subject), 1):
            if self.schemas[sid - 1] == canonical:
                return {"subject": subject, "version": n, "id": sid, "schema": canonical}
        raise HttpError(404, 40403, "Schema not found")

    def compatible(self, subject, version, text):
        _, parsed = self.canonical(text)
        if subject not in self.subjects:
            return {"is_compatible": True}
        old = json.loads(self.version(subject, version)["schema"])
        level = self.levels.get(subject, self.level)
        return {"is_compatible": not compatibility_problems(level, parsed, [old])}


# ----------------------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    registry = Registry()
    auth = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise HttpError(422, 42201, "the request body is not JSON")

    def handle_any(self, method):
        try:
            if self.auth and self.headers.get("Authorization") != self.auth:
                raise HttpError(401, 401, "Unauthorized")
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/") if p]
            self.reply(200, self.route(method, parts))
        except HttpError as e:
            self.reply(e.status, {"error_code": e.code, "message": e.message})
        except (KeyError, ValueError, IndexError) as e:
            self.reply(422, {"error_code": 422, "message": f"bad request: {e}"})

    def route(self, method, p):
        r = self.registry
        match method, p:
            case "GET", []:
                return {}
            case "GET", ["subjects"]:
                return sorted(r.subjects)
            case "GET", ["subjects", s, "versions"]:
                return list(range(1, len(r.versions(s)) + 1))
            case "GET", ["subjects", s, "versions", v]:
                return r.version(s, v)
            case "POST", ["subjects", s, "versions"]:
                return r.register(s, self.body()["schema"])
            case "POST", ["subjects", s]:
                return r.lookup(s, self.body()["schema"])
            case "DELETE", ["subjects", s]:
                versions = list(range(1, len(r.versions(s)) + 1))
                del r.subjects[s]
                return versions
            case "GET", ["schemas", "ids", sid]:
                if not 1 <= int(sid) <= len(r.schemas):
                    raise HttpError(404, 40403, f"Schema {sid} not found")
                return {"schema": r.schemas[int(sid) - 1]}
            case "GET", ["config"]:
                return {"compatibilityLevel": r.level}
            case "PUT", ["config"]:
                r.level = self.level_of(self.body())
                return {"compatibility": r.level}
            case "GET", ["config", s]:
                if s not in r.levels:
                    raise HttpError(404, 40408, f"Subject '{s}' does not have subject-level "
                                                f"compatibility configured")
                return {"compatibilityLevel": r.levels[s]}
            case "PUT", ["config", s]:
                r.levels[s] = self.level_of(self.body())
                return {"compatibility": r.levels[s]}
            case "DELETE", ["config", s]:
                return {"compatibilityLevel": r.levels.pop(s, r.level)}
            case "POST", ["compatibility", "subjects", s, "versions", v]:
                return r.compatible(s, v, self.body()["schema"])
        raise HttpError(404, 404, f"{method} /{'/'.join(p)} is not served by this stand-in")

    @staticmethod
    def level_of(body):
        level = body.get("compatibility", "")
        if level not in LEVELS:
            raise HttpError(422, 42203, f"Invalid compatibility level {level!r}")
        return level

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--auth", help="user:password required as HTTP basic credentials")
    args = ap.parse_args()
    if args.auth:
        Handler.auth = "Basic " + base64.b64encode(args.auth.encode()).decode()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
