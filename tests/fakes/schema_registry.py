"""A small, faithful fake of the Confluent Schema Registry REST API, on 127.0.0.1.

Stdlib `ThreadingHTTPServer`, so the real `SchemaRegistryClient` talks real HTTP to it. It keeps
the registry's semantics that the exporter relies on:

- ids are global and stable: the same schema under two subjects has one id;
- registering a schema already in the subject returns its id without a new version;
- registering an incompatible schema answers 409, checked with Apache Avro's
  `avro.compatibility` under the subject's level (or the global one, BACKWARD by default);
- 404 with `error_code` 40401 (subject), 40402 (version), 40403 (schema), 40408 (no subject
  config); 422 with 42201 (invalid schema) and 42203 (invalid level);
- soft and permanent deletes; `application/vnd.schemaregistry.v1+json` bodies;
- optional basic auth answering 401 to a wrong or missing password;
- subject configuration as Confluent's `ConfigResource` serves it: `PUT /config/{s}` works
  before the subject has a version, takes the level in any case or no level at all (then only
  the other fields, such as `normalize`, change) and echoes the subject's whole configuration;
  `GET` answers 40408 when the subject has none (unless `defaultToGlobal=true`); `DELETE`
  answers 40401 when there is nothing to delete;
- optional authorization: `denied` operations (the security plugin's names, e.g.
  `SUBJECT_COMPATIBILITY_WRITE` for PUT/DELETE `/config/{s}`) answer 403 with error code 40301.

Endpoints: POST/GET `/subjects/{s}/versions`, GET `/subjects/{s}/versions/{v|latest}`,
POST `/subjects/{s}` (lookup), GET `/schemas/ids/{id}` (+ `/subjects`, `/versions`),
GET `/subjects`, POST `/compatibility/subjects/{s}/versions[/{v|latest}]`,
GET/PUT/DELETE `/config[/{s}]`, DELETE `/subjects/{s}[/versions/{v}]`.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import avro.errors
import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from chargeback_simulator.background import BackgroundHTTP, MethodHandler

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# Fields of a subject's configuration besides its level (Confluent's ConfigUpdateRequest).
CONFIG_FIELDS = ("alias", "aliasForDeks", "normalize", "validateFields", "validateNewSchemas",
                 "validateRules", "compatibilityPolicy", "compatibilityGroup", "defaultMetadata",
                 "overrideMetadata", "defaultRuleSet", "overrideRuleSet")
LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
          "FULL_TRANSITIVE")


def compatibility_problems(reader: str, writer: str) -> list[str]:
    """Why a reader schema cannot read data written with a writer schema (empty: it can)."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(reader), avro.schema.parse(writer)
    )
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted({t.value for t in result.incompatibilities})) or "incompatible"
    return [f"{kinds}: {', '.join(sorted(result.messages))} at {', '.join(sorted(result.locations))}"]


def level_problems(level: str, new: str, existing: list[str]) -> list[str]:
    """Problems registering `new` after `existing` (oldest first) under a compatibility level."""
    if level == "NONE" or not existing:
        return []
    against = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    problems: list[str] = []
    for old in against:
        if level.startswith(("BACKWARD", "FULL")):
            problems += [f"new cannot read old: {p}" for p in compatibility_problems(new, old)]
        if level.startswith(("FORWARD", "FULL")):
            problems += [f"old cannot read new: {p}" for p in compatibility_problems(old, new)]
    return problems


def _normal(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def _path_pattern(template: str) -> re.Pattern[str]:
    """The pattern of a path template: `{id}` is a number, any other `{name}` one path segment;
    a trailing slash is optional."""
    def group(m: re.Match[str]) -> str:
        return rf"(?P<{m[1]}>\d+)" if m[1] == "id" else rf"(?P<{m[1]}>[^/]+)"

    return re.compile("^" + re.sub(r"\{(\w+)\}", group, template) + "/?$")


class _HttpError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Version:
    version: int
    schema_id: int
    deleted: bool = False


@dataclass
class RegistryState:
    """Everything the fake stores; guarded by `lock`."""

    global_level: str = "BACKWARD"
    subject_levels: dict[str, str] = field(default_factory=dict)
    subject_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    schemas: dict[int, str] = field(default_factory=dict)
    ids_by_text: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[_Version]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeSchemaRegistry(BackgroundHTTP):
    """Start with `with FakeSchemaRegistry() as sr:` and point a client at `sr.url`.

    `auth=("user", "secret")` turns on basic auth; `denied` names operations the principal
    may not perform (`SUBJECT_READ`, `SUBJECT_WRITE`, `SUBJECT_DELETE`, `SCHEMA_READ`,
    `SUBJECT_COMPATIBILITY_READ`, `SUBJECT_COMPATIBILITY_WRITE`, `GLOBAL_COMPATIBILITY_READ`,
    `GLOBAL_COMPATIBILITY_WRITE`, `GLOBAL_READ`). `requests` lists `(method, path)` served;
    `fail_next(status, times)` answers the next requests with an error (e.g. 503).
    """

    def __init__(self, *, auth: tuple[str, str] | None = None,
                 denied: Collection[str] = ()) -> None:
        self.state = RegistryState()
        self.auth = auth
        self.denied = frozenset(denied)
        self.requests: list[tuple[str, str]] = []
        self._failures: list[int] = []

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve in a background thread; returns self."""
        if self._httpd is None:
            self._serve(ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class()), "fake-sr")
        return self

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("fake schema registry is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next `times` requests with `status` (error_code = status * 100 + 1)."""
        self._failures.extend([status] * times)

    # -- routing ------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(MethodHandler):
            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                registry.requests.append((method, path))
                try:
                    if registry.auth is not None and not registry._authorized(
                            self.headers.get("Authorization")):
                        raise _HttpError(401, 401, "Unauthorized")
                    if registry._failures:
                        status = registry._failures.pop(0)
                        raise _HttpError(status, status * 100 + 1, f"injected failure {status}")
                    body = json.loads(raw) if raw else None
                    status, payload = registry._route(method, path, query, body)
                except _HttpError as err:
                    status, payload = err.status, {"error_code": err.code, "message": err.message}
                except (ValueError, KeyError, TypeError) as exc:
                    status, payload = 422, {"error_code": 422, "message": f"Unprocessable: {exc}"}
                headers = {"Content-Type": CONTENT_TYPE}
                if status == 401:
                    headers["WWW-Authenticate"] = 'Basic realm="SchemaRegistry"'
                self._reply(status, json.dumps(payload).encode(), headers)

        return Handler

    def _authorized(self, header: str | None) -> bool:
        assert self.auth is not None
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:]).decode()
        except ValueError:
            return False
        return hmac.compare_digest(given, f"{self.auth[0]}:{self.auth[1]}")

    # (method, path, handler, operation): the operation is what the security plugin authorizes.
    _ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
        (verb, _path_pattern(path), name, operation) for verb, path, name, operation in [
            ("GET", "/subjects", "list_subjects", "GLOBAL_READ"),
            ("GET", "/subjects/{s}/versions", "list_versions", "SUBJECT_READ"),
            ("POST", "/subjects/{s}/versions", "register", "SUBJECT_WRITE"),
            ("GET", "/subjects/{s}/versions/{v}", "get_version", "SUBJECT_READ"),
            ("DELETE", "/subjects/{s}/versions/{v}", "delete_version", "SUBJECT_DELETE"),
            ("POST", "/subjects/{s}", "lookup", "SUBJECT_READ"),
            ("DELETE", "/subjects/{s}", "delete_subject", "SUBJECT_DELETE"),
            ("GET", "/schemas/ids/{id}", "get_schema", "SCHEMA_READ"),
            ("GET", "/schemas/ids/{id}/subjects", "schema_subjects", "SCHEMA_READ"),
            ("GET", "/schemas/ids/{id}/versions", "schema_versions", "SCHEMA_READ"),
            ("POST", "/compatibility/subjects/{s}/versions/{v}", "compat_version", "SUBJECT_WRITE"),
            ("POST", "/compatibility/subjects/{s}/versions", "compat_all", "SUBJECT_WRITE"),
            ("GET", "/config", "get_global_config", "GLOBAL_COMPATIBILITY_READ"),
            ("PUT", "/config", "put_global_config", "GLOBAL_COMPATIBILITY_WRITE"),
            ("GET", "/config/{s}", "get_subject_config", "SUBJECT_COMPATIBILITY_READ"),
            ("PUT", "/config/{s}", "put_subject_config", "SUBJECT_COMPATIBILITY_WRITE"),
            ("DELETE", "/config/{s}", "delete_subject_config", "SUBJECT_COMPATIBILITY_WRITE"),
        ]
    ]

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        for verb, pattern, name, operation in self._ROUTES:
            m = pattern.match(path)
            if m and verb == method:
                if operation in self.denied:
                    where = f"Subject: {m['s']}" if "s" in m.groupdict() else "this server"
                    raise _HttpError(403, 40301, f"User is denied operation {operation} on {where}")
                handler: Callable[..., tuple[int, Any]] = getattr(self, f"_{name}")
                with self.state.lock:
                    return handler(query=query, body=body, **m.groupdict())
        raise _HttpError(404, 404, "HTTP 404 Not Found")

    # -- helpers ------------------------------------------------------------------------

    def _live(self, subject: str) -> list[_Version]:
        versions = [v for v in self.state.subjects.get(subject, []) if not v.deleted]
        if not versions:
            raise _HttpError(404, 40401, f"Subject '{subject}' not found.")
        return versions

    def _version(self, subject: str, version: str) -> _Version:
        live = self._live(subject)
        if version in ("latest", "-1"):
            return live[-1]
        if not version.lstrip("-").isdigit():
            raise _HttpError(422, 42202, f"Invalid version {version}")
        for v in live:
            if v.version == int(version):
                return v
        raise _HttpError(404, 40402, f"Version {version} not found.")

    def _schema_text(self, body: Any) -> str:
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise _HttpError(422, 42201, "Either the input schema or one of its references is invalid")
        if body.get("schemaType", "AVRO") != "AVRO":
            raise _HttpError(422, 42201, f"Unsupported schema type {body.get('schemaType')}")
        text: str = body["schema"]
        try:
            avro.schema.parse(text)
        except (avro.errors.SchemaParseException, ValueError) as exc:
            raise _HttpError(422, 42201, f"Invalid schema: {str(exc).splitlines()[0]}") from exc
        return text

    def _level(self, subject: str) -> str:
        return self.state.subject_levels.get(subject, self.state.global_level)

    def _entry(self, subject: str, v: _Version) -> dict[str, Any]:
        return {"subject": subject, "version": v.version, "id": v.schema_id,
                "schema": self.state.schemas[v.schema_id]}

    # -- handlers -----------------------------------------------------------------------

    def _list_subjects(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, sorted(s for s, vs in self.state.subjects.items() if any(not v.deleted for v in vs))

    def _list_versions(self, query: dict[str, str], body: Any, s: str) -> tuple[int, Any]:
        return 200, [v.version for v in self._live(s)]

    def _get_version(self, query: dict[str, str], body: Any, s: str, v: str) -> tuple[int, Any]:
        return 200, self._entry(s, self._version(s, v))

    def _register(self, query: dict[str, str], body: Any, s: str) -> tuple[int, Any]:
        text = self._schema_text(body)
        key = _normal(text)
        live = [v for v in self.state.subjects.get(s, []) if not v.deleted]
        for v in live:
            if _normal(self.state.schemas[v.schema_id]) == key:
                return 200, self._entry(s, v)
        problems = level_problems(self._level(s), text, [self.state.schemas[v.schema_id] for v in live])
        if problems:
            raise _HttpError(409, 409, f"Schema being registered is incompatible with an earlier schema "
                                       f"for subject \"{s}\", details: {problems}")
        schema_id = self.state.ids_by_text.get(key)
        if schema_id is None:
            schema_id = max(self.state.schemas, default=0) + 1
            self.state.schemas[schema_id] = text
            self.state.ids_by_text[key] = schema_id
        versions = self.state.subjects.setdefault(s, [])
        entry = _Version(max((v.version for v in versions), default=0) + 1, schema_id)
        versions.append(entry)
        return 200, self._entry(s, entry)

    def _lookup(self, query: dict[str, str], body: Any, s: str) -> tuple[int, Any]:
        text = self._schema_text(body)
        include_deleted = query.get("deleted", "false").lower() == "true"
        versions = [v for v in self.state.subjects.get(s, []) if include_deleted or not v.deleted]
        if not versions:
            raise _HttpError(404, 40401, f"Subject '{s}' not found.")
        key = _normal(text)
        for v in versions:
            if _normal(self.state.schemas[v.schema_id]) == key:
                return 200, self._entry(s, v)
        raise _HttpError(404, 40403, "Schema not found")

    def _delete_subject(self, query: dict[str, str], body: Any, s: str) -> tuple[int, Any]:
        versions = self.state.subjects.get(s)
        if not versions:
            raise _HttpError(404, 40401, f"Subject '{s}' not found.")
        if query.get("permanent", "false").lower() == "true":
            if any(not v.deleted for v in versions):
                raise _HttpError(404, 40405, f"Subject '{s}' was not deleted first before being "
                                             f"permanently deleted")
            del self.state.subjects[s]
            return 200, [v.version for v in versions]
        live = [v for v in versions if not v.deleted]
        if not live:
            raise _HttpError(404, 40404, f"Subject '{s}' was soft deleted.")
        for v in live:
            v.deleted = True
        return 200, [v.version for v in live]

    def _delete_version(self, query: dict[str, str], body: Any, s: str, v: str) -> tuple[int, Any]:
        entry = self._version(s, v)
        entry.deleted = True
        return 200, entry.version

    def _get_schema(self, query: dict[str, str], body: Any, id: str) -> tuple[int, Any]:
        text = self.state.schemas.get(int(id))
        if text is None:
            raise _HttpError(404, 40403, "Schema not found")
        return 200, {"schema": text}

    def _schema_subjects(self, query: dict[str, str], body: Any, id: str) -> tuple[int, Any]:
        found = sorted({s for s, vs in self.state.subjects.items()
                        for v in vs if v.schema_id == int(id) and not v.deleted})
        if not found:
            raise _HttpError(404, 40403, "Schema not found")
        return 200, found

    def _schema_versions(self, query: dict[str, str], body: Any, id: str) -> tuple[int, Any]:
        found = [{"subject": s, "version": v.version} for s, vs in sorted(self.state.subjects.items())
                 for v in vs if v.schema_id == int(id) and not v.deleted]
        if not found:
            raise _HttpError(404, 40403, "Schema not found")
        return 200, found

    def _compat_result(self, problems: list[str], query: dict[str, str]) -> tuple[int, Any]:
        out: dict[str, Any] = {"is_compatible": not problems}
        if query.get("verbose", "false").lower() == "true":
            out["messages"] = problems
        return 200, out

    def _compat_version(self, query: dict[str, str], body: Any, s: str, v: str) -> tuple[int, Any]:
        text = self._schema_text(body)
        target = self._version(s, v)
        level = self._level(s).replace("_TRANSITIVE", "")
        return self._compat_result(level_problems(level, text, [self.state.schemas[target.schema_id]]),
                                   query)

    def _compat_all(self, query: dict[str, str], body: Any, s: str) -> tuple[int, Any]:
        text = self._schema_text(body)
        live = [v for v in self.state.subjects.get(s, []) if not v.deleted]
        existing = [self.state.schemas[v.schema_id] for v in live]
        return self._compat_result(level_problems(self._level(s), text, existing), query)

    def _level_from(self, body: Any) -> str:
        level = str((body or {}).get("compatibility", "")).upper()
        if level not in LEVELS:
            raise _HttpError(422, 42203, f"Invalid compatibility level. Valid values are {list(LEVELS)}")
        return level

    def _get_global_config(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, {"compatibilityLevel": self.state.global_level}

    def _put_global_config(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self.state.global_level = self._level_from(body)
        return 200, {"compatibility": self.state.global_level}

    def _subject_config(self, s: str, *, level_key: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if s in self.state.subject_levels:
            out[level_key] = self.state.subject_levels[s]
        out.update(self.state.subject_options.get(s, {}))
        return out

    def _get_subject_config(self, query: dict[str, str], body: Any, s: str) -> tuple[int, Any]:
        config = self._subject_config(s, level_key="compatibilityLevel")
        if query.get("defaultToGlobal", "false").lower() == "true":
            return 200, {"compatibilityLevel": self.state.global_level, **config}
        if not config:
            raise _HttpError(404, 40408, f"Subject '{s}' does not have subject-level compatibility "
                                         f"configured")
        return 200, config

    def _put_subject_config(self, query: dict[str, str], body: Any, s: str) -> tuple[int, Any]:
        if not isinstance(body, dict):
            raise _HttpError(422, 422, "Unprocessable: expected a config update request")
        # A request without a level leaves the level as it is (Confluent merges the update).
        level = self._level_from(body) if body.get("compatibility") is not None else None
        options = {k: body[k] for k in CONFIG_FIELDS if body.get(k) is not None}
        if level is not None:
            self.state.subject_levels[s] = level
        if options:
            self.state.subject_options.setdefault(s, {}).update(options)
        return 200, self._subject_config(s, level_key="compatibility")

    def _delete_subject_config(self, query: dict[str, str], body: Any, s: str) -> tuple[int, Any]:
        config = self._subject_config(s, level_key="compatibilityLevel")
        if not config:
            raise _HttpError(404, 40401, f"Subject '{s}' not found.")
        self.state.subject_levels.pop(s, None)
        self.state.subject_options.pop(s, None)
        return 200, config


@contextmanager
def running_registry(*, auth: tuple[str, str] | None = None) -> Iterator[FakeSchemaRegistry]:
    """Context manager form, handy for fixtures."""
    with FakeSchemaRegistry(auth=auth) as registry:
        yield registry
