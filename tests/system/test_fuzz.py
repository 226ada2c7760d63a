"""Fuzzing the two doors bad input comes in by: Sysdig's responses and the configuration file.

Sysdig: whatever a response holds (NaN, ±Inf, negative, 1e300, duplicate series, unicode and
10 000-character label values, missing labels), the exporter either measures the period or
raises an `ExporterError`; nothing else escapes, and whatever it publishes is valid Avro under
the shipped schemas with every decimal within its precision and scale.

Configuration: any YAML document (or any text) gives a `Config` or a one-line `ConfigError`
that names the file; never another exception.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exporter.avro import SCHEMA_FILES, body_of, schema_text
from exporter.avro.messages import AvroCodec
from exporter.config import Config, load_config, masked_dict
from exporter.errors import ConfigError, ExporterError, SourceQueryError
from exporter.pipeline import Pipeline
from exporter.queries import RECORD_GRAIN
from exporter.sysdig import parse_vector
from exporter.wiring import build_pipeline
from tests.rigs.campaign import tune_server
from tests.system.conftest import PERIOD, Sim

AT = float(PERIOD.end - 5)  # the instant the exporter evaluates a 1 h period at, 10 s step
QUERIES = ("cpu.usage", "cpu.request", "cpu.chargeable", "memory.usage", "memory.request",
           "memory.chargeable", "labels", "coverage", "requests.present")  # QueryPlan.all() order
SCHEMAS = {key: fastavro.parse_schema(json.loads(schema_text(key))) for key in SCHEMA_FILES}
NOTABLE_VALUES = ("NaN", "+Inf", "-Inf", "Inf", "-1", "-0", "0", "1e300", "-1e300", "1e-300", "1e18",
                  "123456789012.5", "0x10", "", " 1", "1_000", "١٢٣", "sNaN", "-0.0", "1e-12",
                  "1E+999999999", "1e400000000000", "1E-999999999",
                  "3.14159265358979323846264338327950288419716939937510")
NOTABLE_TEXT = ("prod", "deployment", "web", "ü∂ƒ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\u0000", "tab\there", "x" * 10_000,
                "CC-1037", "__unallocated__", " ")

good_values = st.one_of(
    st.decimals(min_value=0, max_value=10**9, allow_nan=False, allow_infinity=False).map(str),
    st.floats(min_value=0, max_value=1e9).map(repr),
    st.sampled_from(["0", "-0", "1e-300", "0.015625", "1e300", "123456789012.5", " 1", "1_000", "١٢٣"]),
)
values = st.one_of(
    st.sampled_from(NOTABLE_VALUES), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.decimals(min_value=-10**20, max_value=10**20, allow_nan=False, allow_infinity=False).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=12),
)
texts = st.one_of(st.sampled_from(NOTABLE_TEXT), st.text(max_size=16))
label_names = st.sampled_from((*RECORD_GRAIN, "kube_deployment_label_costcenter",
                               "kube_statefulset_label_team", "kube_namespace_label_department",
                               "kube_namespace_label_businessunit", "app"))


@st.composite
def series(draw: st.DrawFn, dirty: bool = True) -> dict[str, Any]:
    """One series at the evaluation instant, with some labels missing and odd values."""
    labels = draw(st.dictionaries(label_names, texts, max_size=6))
    if not dirty:
        labels.update(draw(st.fixed_dictionaries({n: texts for n in RECORD_GRAIN})))
    value = draw(values if dirty else good_values)
    ts = draw(st.sampled_from([AT, AT, AT, int(AT), AT - 10, "now"]) if dirty else st.just(AT))
    return {"metric": labels, "value": [ts, value]}


@st.composite
def matrices(draw: st.DrawFn, dirty: bool = True) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = draw(st.lists(series(dirty), max_size=5))
    pick: int = draw(st.integers(-1, len(rows) - 1))
    if pick >= 0:
        rows.append(rows[pick])  # a duplicate series
    return rows


@st.composite
def answers(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """The bodies of one period (one per query): mostly plausible (some odd labels, duplicates, extremes), or
    anything at all."""
    dirty = draw(st.integers(0, 3)) == 0
    return [draw(matrices(dirty)) for _ in QUERIES]


# --- parse_vector ------------------------------------------------------------------------------

raw_items = st.one_of(
    series(),
    st.fixed_dictionaries({"metric": st.dictionaries(texts, st.one_of(texts, st.integers(), st.none()),
                                                     max_size=3),
                           "value": st.lists(st.one_of(st.just(AT), values, st.none()), max_size=3)}),
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(raw_items, max_size=6))
def test_parse_vector_returns_usable_values_or_a_query_error(result: list[Any]) -> None:
    try:
        out = parse_vector(result, AT, "Sysdig (fuzz)")
    except SourceQueryError as exc:
        assert str(exc).startswith("Sysdig (fuzz): ")
        assert "\n" not in str(exc)
        return
    for labels, value in out:
        assert value.is_finite() and value >= 0
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())


def test_an_unusable_value_error_is_one_line_whatever_the_labels() -> None:
    with pytest.raises(SourceQueryError) as caught:
        parse_vector([{"metric": {"kube_workload_name": "api\nworker"}, "value": [AT, "-1"]}],
                     AT, "Sysdig (fuzz)")
    assert "\n" not in str(caught.value)


# --- the whole source: fuzzed bodies through the simulator, records through Avro ---------------

@pytest.fixture(scope="module")
def fuzz_sim() -> Iterator[tuple[Sim, Pipeline]]:
    sim = Sim()
    sim.server.start()
    tune_server(sim.server)
    cfg = sim.config(periods={"incomplete_policy": "publish-flagged", "min_coverage": "0"},
                     sysdig={"max_attempts": 1})
    try:
        yield sim, build_pipeline(cfg, sim.clock)
    finally:
        sim.server.stop()


def decimal_fields(schema: Any, datum: Any, path: str = "") -> Iterator[tuple[str, Decimal, int, int]]:
    """Every decimal in `datum` with its schema's precision and scale (walks records, unions,
    arrays and maps of a parsed schema)."""
    if isinstance(schema, list):
        for branch in schema:
            if branch == "null" and datum is None:
                return
        for branch in schema:
            if branch != "null":
                yield from decimal_fields(branch, datum, path)
                return
        return
    if not isinstance(schema, Mapping):
        return
    kind = schema.get("type")
    if schema.get("logicalType") == "decimal":
        yield path, datum, int(schema["precision"]), int(schema.get("scale", 0))
    elif kind == "record":
        for fld in schema["fields"]:
            yield from decimal_fields(fld["type"], datum[fld["name"]], f"{path}.{fld['name']}")
    elif kind == "array":
        for i, item in enumerate(datum):
            yield from decimal_fields(schema["items"], item, f"{path}[{i}]")
    elif kind == "map":
        for k, item in datum.items():
            yield from decimal_fields(schema["values"], item, f"{path}[{k}]")
    elif isinstance(kind, Mapping | list):
        yield from decimal_fields(kind, datum, path)


def assert_valid_avro(value: bytes, key: str) -> dict[str, Any]:
    body = body_of(value)
    schema = SCHEMAS[key]
    stream = io.BytesIO(body)
    datum = fastavro.schemaless_reader(stream, schema, None)
    assert isinstance(datum, dict)
    assert stream.read() == b"", f"{key}: trailing bytes after the datum"
    again = io.BytesIO()
    fastavro.schemaless_writer(again, schema, datum)
    assert again.getvalue() == body, f"{key}: fastavro does not re-encode the same bytes"
    for path, dec, precision, scale in decimal_fields(schema, datum):
        assert isinstance(dec, Decimal) and dec.is_finite(), path
        digits = dec.as_tuple()
        assert -int(digits.exponent) == scale, f"{key}{path}: scale of {dec}"
        assert len(digits.digits) <= precision, f"{key}{path}: {dec} exceeds precision {precision}"
    return datum


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=answers())
def test_any_sysdig_answer_is_measured_exactly_or_refused_clearly(
        fuzz_sim: tuple[Sim, Pipeline], bodies: list[list[dict[str, Any]]]) -> None:
    sim, pipeline = fuzz_sim
    sim.server.faults.clear()
    # The pre-count comes first: one group of the fleet's clusters, then the fuzzed answers.
    clusters = sorted({w.key.cluster for w in sim.fleet.workloads()})
    counted = [{"metric": {"kube_cluster_name": c}, "value": [AT, "5"]} for c in clusters]
    for rows in [counted, *bodies]:  # one query at a time, in plan order: each body answers its query
        sim.server.faults.push("/prometheus", status=200, body=json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": rows}}))
    try:
        result = pipeline.compute(PERIOD)
        messages = pipeline.messages(result)
    except ExporterError as exc:
        event(f"refused: {type(exc).__name__}")
        assert str(exc) and type(exc) is not ExporterError
        return
    event(f"published: {'some' if result.records else 'no'} records")
    codec = pipeline.codec
    assert isinstance(codec, AvroCodec)
    assert len(messages) == len(result.records) + len(result.manifests)
    for m in messages:
        kind = "billing_record" if m.topic == codec.topics.records else "period_manifest"
        datum = assert_valid_avro(m.value, kind)
        if kind == "billing_record":
            record = codec.decode_record(m.value)
            assert (datum["usage_quantity"], datum["request_quantity"], datum["chargeable_quantity"]) == (
                record.usage_quantity, record.request_quantity, record.chargeable_quantity)


def test_an_astronomical_value_is_refused_clearly(fuzz_sim: tuple[Sim, Pipeline]) -> None:
    sim, pipeline = fuzz_sim
    sim.server.faults.clear()
    row = {"metric": dict.fromkeys(RECORD_GRAIN, "x"), "value": [AT, "1E+999999999"]}
    for rows in ([row], [], [], [], [], [], [], [], []):
        sim.server.faults.push("/prometheus", status=200, body=json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": rows}}))
    with pytest.raises(ExporterError):
        pipeline.compute(PERIOD)


# --- configuration files -----------------------------------------------------------------------

SECTIONS: Mapping[str, tuple[str, ...]] = {
    name: tuple(getattr(f.annotation, "model_fields", {})) for name, f in Config.model_fields.items()
}
config_keys = st.one_of(st.sampled_from(sorted({k for ks in SECTIONS.values() for k in ks})),
                        st.text(max_size=8))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-10**30, max_value=10**30),
    st.floats(), st.text(max_size=20),
    st.sampled_from(["10m", "1h", "1d", "7m", "-1h", "0s", "1e3", "2026-11-01T00:00:00Z",
                     "9999-12-31T23:59:59Z", "0001-01-01", "PLAINTEXT", "SASL_SSL", "confluent",
                     "pod", "hold", "http://x", "https://", "", "99999999999999999999d",
                     "1000000000000000000000s"]),
)
yaml_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(config_keys, inner, max_size=3)), max_leaves=8)
sections = st.sampled_from(sorted(SECTIONS)).flatmap(lambda s: st.tuples(
    st.just(s), st.dictionaries(st.sampled_from(SECTIONS[s]), yaml_values, max_size=4)))
documents = st.one_of(st.lists(sections, max_size=5).map(dict), yaml_values)


def assert_config_or_one_line(path: Path) -> None:
    try:
        cfg = load_config(path, environ={})
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith(f"{path}: "), text
        assert "\n" not in text and "Traceback" not in text, text
        return
    yaml.safe_dump(masked_dict(cfg))  # what check-config prints must be producible


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents)
def test_any_yaml_document_is_a_config_or_a_config_error(tmp_path: Path, doc: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert_config_or_one_line(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), st.sampled_from([
    "{", "[", "a: [", "a: *x", "&a [*a]", "!!python/object:os.system x", "---\n---\n", "a: 1\na: 2",
    "sysdig: {url: !!binary aGk=}", "\t", "%YAML 9.9\n---\n", "? [a]\n: 1", "<<: *nope"])))
def test_any_text_is_a_config_or_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    assert_config_or_one_line(path)


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"sysdig:\n  url: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"config\.yaml"):
        load_config(path, environ={})


def test_an_unknown_key_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"sysdig": {"bad\nkey": 1}}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "\n" not in str(caught.value)


env_names = st.lists(st.one_of(
    st.sampled_from(["SYSDIG", "URL", "TOKEN", "KAFKA", "PERIODS", "LENGTH", "START", "EXTRA",
                     "TOPICS", "ORG", "KEYS", "COSTCENTER", "WORKLOAD_LABELS", "X", ""]),
    st.text(alphabet="ABCZ_19", max_size=4)), min_size=1, max_size=4,
).map(lambda parts: "CHARGEBACK_" + "__".join(parts))


@settings(max_examples=300, deadline=None)
@given(env=st.dictionaries(env_names, st.one_of(st.text(max_size=20), st.sampled_from(
    ["[1,2]", "{a: 1}", "null", "~", "- x", "1h", "true", "{", "[", "'", "0x10", "1e400", ".nan"])),
    max_size=4))
def test_any_environment_override_is_a_config_or_a_config_error(env: dict[str, str]) -> None:
    try:
        load_config(None, environ=env)
    except ConfigError as exc:
        assert str(exc).startswith(("configuration", "environment")), str(exc)
