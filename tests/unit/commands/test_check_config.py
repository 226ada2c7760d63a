"""`check-config` loads every file the worker loads and reports each problem on its own line.

Each problem line names the file and, where the parser knows it, the line and column:
`chargeback-exporter check-config: error: <file>: line L, column C: <key path>: <problem>`.
The worker's start-up (`build_pipeline`) reads the same files with the same loader and fails
with the same problems.
"""

from __future__ import annotations

import os
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import main
from exporter.clock import FakeClock
from exporter.config import load_config
from exporter.errors import ConfigError
from exporter.periods import parse_time
from exporter.wiring import build_pipeline
from tests.rigs.rate_cards import MINIMAL

PREFIX = "chargeback-exporter check-config: error: "

CARD = MINIMAL
SECOND = """\
  - id: v2
    effective_from: 2026-02-01T00:00:00Z
    default: {cpu: "0.02", memory: "0.003"}
"""


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith(("CHARGEBACK_", "REQUESTS_CA", "CURL_CA"))]:
        monkeypatch.delenv(var)


def write_config(tmp_path: Path, config: dict[str, Any], card: str | bytes | None = None) -> Path:
    """A config file; `card` (when given) is written to card.yaml and referenced."""
    if card is not None:
        path = tmp_path / "card.yaml"
        if isinstance(card, bytes):
            path.write_bytes(card)
        else:
            path.write_text(textwrap.dedent(card), encoding="utf-8")
        config = {**config, "pricing": {"rate_card_file": str(path)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    """Exit code, stderr lines and stdout of `check-config --config.file path`."""
    code = main(["check-config", "--config.file", str(path)])
    out = capsys.readouterr()
    return code, out.err.splitlines(), out.out


def problems(tmp_path: Path, capsys: pytest.CaptureFixture[str], card: str | bytes | None,
             config: dict[str, Any] | None = None) -> list[str]:
    """The problem lines (without the command prefix) of a config with `card`; asserts exit 2
    and that the worker's start-up fails with exactly these problems."""
    path = write_config(tmp_path, config or {}, card)
    code, err, out = check(path, capsys)
    assert code == 2, (err, out)
    assert out == "", "an invalid configuration is not printed as if it were valid"
    assert err and all(line.startswith(PREFIX) for line in err), err
    lines = [line.removeprefix(PREFIX) for line in err]
    cfg = load_config(path, environ={})
    with pytest.raises(ConfigError) as worker:
        build_pipeline(cfg, FakeClock(parse_time("2026-11-01T00:00:00Z")), source=object())
    assert list(worker.value.problems) == lines, "the worker and check-config disagree"
    assert "\n" not in str(worker.value)
    return lines


# --- ten and more broken rate cards ---------------------------------------------------------


def bad_cpu(price: str, problem: str, name: str) -> Any:
    """A card whose default cpu price (line 5, column 15) is `price`, and its one problem."""
    return pytest.param(CARD.replace('"0.03"', price),
                        [f"line 5, column 15: versions[0].default.cpu: {problem}"], id=name)


BROKEN_CARDS = [
    pytest.param(CARD + SECOND.replace("2026-02-01", "2026-01-01"),
                 ["line 7, column 5: versions[1].effective_from: overlaps versions[0] "
                  "(both start at 2026-01-01T00:00:00Z)"], id="same-start"),
    pytest.param(CARD.replace("    default", "    effective_until: 2026-03-01T00:00:00Z\n    default")
                 + SECOND,
                 ["line 5, column 5: versions[0].effective_until: 2026-03-01T00:00:00Z overlaps "
                  "versions[1], which starts at 2026-02-01T00:00:00Z"], id="until-overlaps-next"),
    pytest.param(CARD.replace("2026-01-01", "2026-02-01") + SECOND.replace("2026-02-01", "2026-01-01"),
                 ["line 7, column 5: versions[1].effective_from: 2026-01-01T00:00:00Z is before "
                  "versions[0]'s 2026-02-01T00:00:00Z; list versions in ascending effective_from"],
                 id="unsorted"),
    bad_cpu('"-0.03"', "must not be negative", "negative"),
    pytest.param(CARD.replace('"0.004"', "-0.004"),
                 ["line 5, column 28: versions[0].default.memory: must not be negative"],
                 id="negative-unquoted"),
    bad_cpu('"0,03"', "'0,03' is not a decimal number", "decimal-comma"),
    bad_cpu("0x1F", "'0x1F' is not a decimal number", "hexadecimal"),
    bad_cpu("1:30", "'1:30' is not a decimal number", "sexagesimal"),
    bad_cpu(".nan", "'.nan' is not a decimal number", "nan"),
    pytest.param(CARD.replace('cpu: "0.03"', 'cpu: "0.03", disk: "1.2"'),
                 ["line 5, column 28: versions[0].default.disk: unknown resource (a price is for "
                  "cpu, memory, gpu, gpu.<profile> or storage.<storage class>)"],
                 id="unknown-resource"),
    pytest.param(CARD.replace("EUR", "EURO"),
                 ["line 1, column 1: currency: 'EURO' is not an active ISO 4217 currency code "
                  "(e.g. EUR, USD)"], id="unknown-currency"),
    pytest.param(CARD.replace("EUR", "eur"),
                 ["line 1, column 1: currency: 'eur' is not an active ISO 4217 currency code "
                  "(e.g. EUR, USD)"], id="lower-case-currency"),
    pytest.param(CARD + "    clusters:\n      c1: {cpu: 1}\n      c1: {cpu: 2}\n",
                 ["line 8, column 7: duplicate key 'c1' (first at line 7)"], id="duplicate-key"),
    pytest.param(CARD.replace("currency: EUR\n", "currency: EUR\ncurrency: USD\n"),
                 ["line 2, column 1: duplicate key 'currency' (first at line 1)"],
                 id="duplicate-top-level-key"),
    pytest.param(CARD.replace("T00:00:00Z", "T00:30:00Z"),
                 ["line 4, column 5: versions[0].effective_from: 2026-01-01T00:30:00Z is not "
                  "aligned to the 3600s period length, so a period would straddle it"],
                 id="not-aligned-to-periods"),
    pytest.param(CARD + "    selectors:\n      - {match: {costcentre: a}, cpu: 1}\n",
                 ["line 7, column 18: versions[0].selectors[0].match.costcentre: unknown label; "
                  "a selector matches org keys costcenter, businessunit, department, team or a "
                  "label listed in org.other_labels"], id="unknown-selector-label"),
    pytest.param(CARD + "    selectors:\n      - {match: {costcenter: a}, cpu: 1}\n"
                 "      - {match: {team: b}, cpu: 2}\n",
                 ["line 8, column 9: versions[0].selectors[1]: ties with versions[0].selectors[0] "
                  "for cpu (a line can match both and neither is more specific); make one a "
                  "superset of the other"], id="ambiguous-selectors"),
    pytest.param(CARD.replace(', memory: "0.004"', ""),
                 ["line 5, column 5: versions[0].default: the default needs a price for memory"],
                 id="default-without-memory"),
    pytest.param("# see docs/pricing.md for the format\n",
                 ["top level must be a mapping with currency and versions"], id="comment-only"),
    pytest.param("currency: EUR\nversions: [\n",
                 ["line 3, column 1: expected the node content, but found '<stream end>'"],
                 id="yaml-syntax"),
]


@pytest.mark.parametrize(("card", "expected"), BROKEN_CARDS)
def test_a_broken_rate_card_fails_check_config_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], card: str, expected: list[str]
) -> None:
    card_path = tmp_path / "card.yaml"
    assert problems(tmp_path, capsys, card) == [f"{card_path}: {e}" for e in expected]


def test_every_problem_of_a_card_is_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = (CARD.replace("EUR", "EURO").replace('"0.03"', '"-1"')
            + "    clusters:\n      c1: {cpu: abc, disk: 1}\n")
    path = tmp_path / "card.yaml"
    assert problems(tmp_path, capsys, card) == [
        f"{path}: line 1, column 1: currency: 'EURO' is not an active ISO 4217 currency code "
        "(e.g. EUR, USD)",
        f"{path}: line 5, column 15: versions[0].default.cpu: must not be negative",
        f"{path}: line 7, column 12: versions[0].clusters.c1.cpu: 'abc' is not a decimal number",
        f"{path}: line 7, column 22: versions[0].clusters.c1.disk: unknown resource (a price is "
        "for cpu, memory, gpu, gpu.<profile> or storage.<storage class>)",
    ]


def test_every_dating_problem_is_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = (CARD + SECOND.replace("2026-02-01", "2026-01-01")
            + SECOND.replace("v2", "v3").replace("T00:00", "T00:10"))
    path = tmp_path / "card.yaml"
    assert problems(tmp_path, capsys, card) == [
        f"{path}: line 7, column 5: versions[1].effective_from: overlaps versions[0] (both start "
        "at 2026-01-01T00:00:00Z)",
        f"{path}: line 10, column 5: versions[2].effective_from: 2026-02-01T00:10:00Z is not "
        "aligned to the 3600s period length, so a period would straddle it",
    ]


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read rate card: No such file or directory"),
    (b"currency: \xe9\n", "rate card is not UTF-8 (byte 10)"),
])
def test_an_unreadable_rate_card_fails_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, expected: str
) -> None:
    path = write_config(tmp_path, {}, content if content is not None else b"")
    if content is None:
        (tmp_path / "card.yaml").unlink()
    code, err, _ = check(path, capsys)
    assert (code, err) == (2, [f"{PREFIX}{tmp_path / 'card.yaml'}: {expected}"])


def test_a_directory_as_rate_card_fails_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, {"pricing": {"rate_card_file": str(tmp_path)}})
    code, err, _ = check(path, capsys)
    assert (code, err) == (2, [f"{PREFIX}{tmp_path}: cannot read rate card: Is a directory"])


def test_a_valid_card_and_allow_list_pass_and_the_config_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allowed = tmp_path / "cc.csv"
    allowed.write_text("costcenter\ncc-1\n", encoding="utf-8")
    config = {"org": {"keys": {"costcenter": {"allowed_values_file": str(allowed)}}}}
    code, err, out = check(write_config(tmp_path, config, CARD + SECOND), capsys)
    assert (code, err) == (0, [])
    assert yaml.safe_load(out)["pricing"]["rate_card_file"] == str(tmp_path / "card.yaml")


# --- allow-lists and the other files the worker reads ---------------------------------------


def allow_list_config(tmp_path: Path, **files: str | None) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for key, text in files.items():
        path = tmp_path / f"{key}.csv"
        if text is not None:
            path.write_text(text, encoding="utf-8")
        keys[key] = {"allowed_values_file": str(path)}
    return {"org": {"keys": keys}}


def test_each_broken_allow_list_is_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = allow_list_config(tmp_path, costcenter=None, businessunit="businessunit\n",
                               department="department\n__invalid__\n",
                               team="team,owner\nweb,alice\n\"sre\n")
    assert problems(tmp_path, capsys, CARD.replace('"0.03"', '"-1"'), config) == [
        f"{tmp_path / 'costcenter.csv'}: cannot read allowed values for costcenter: "
        "No such file or directory",
        f"{tmp_path / 'businessunit.csv'}: allowed values for businessunit: no values below "
        "the header",
        f"{tmp_path / 'department.csv'}:2: __invalid__ is reserved, not a department",
        f"{tmp_path / 'team.csv'}:3: invalid CSV: unexpected end of data",
        f"{tmp_path / 'card.yaml'}: line 5, column 15: versions[0].default.cpu: must not be "
        "negative",
    ]


def test_a_default_outside_its_allow_list_fails_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = allow_list_config(tmp_path, team="team\nweb\n")
    config["org"]["keys"]["team"]["default"] = "platform"
    assert problems(tmp_path, capsys, None, config) == [
        f"org.keys.team.default: 'platform' is not in {tmp_path / 'team.csv'}"]


def test_every_unreadable_referenced_file_is_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = {name: str(tmp_path / name) for name in (
        "token", "sysdig-ca.pem", "kafka-password", "kafka-ca.pem", "client.pem", "client.key",
        "registry-auth", "registry-ca.pem")}
    config = {
        "sysdig": {"token_file": missing["token"], "ca_file": missing["sysdig-ca.pem"]},
        "kafka": {
            "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
            "sasl_password_file": missing["kafka-password"],
            "ssl_ca_location": missing["kafka-ca.pem"],
            "ssl_certificate_location": missing["client.pem"],
            "ssl_key_location": missing["client.key"],
            "framing": "confluent",
            "schema_registry": {"url": "http://registry:8081",
                                "basic_auth_user_info_file": missing["registry-auth"],
                                "ca_location": missing["registry-ca.pem"]},
        },
    }
    code, err, out = check(write_config(tmp_path, config), capsys)
    assert (code, out) == (2, "")
    enoent = "No such file or directory"
    assert err == [PREFIX + line for line in (
        f"sysdig.token: cannot read secret file {missing['token']}: {enoent}",
        f"sysdig.ca_file: CA bundle {missing['sysdig-ca.pem']} does not exist (TLS verification "
        "of Sysdig needs it)",
        f"kafka.sasl_password: cannot read secret file {missing['kafka-password']}: {enoent}",
        f"{missing['kafka-ca.pem']}: cannot read kafka.ssl_ca_location: {enoent}",
        f"{missing['client.pem']}: cannot read kafka.ssl_certificate_location: {enoent}",
        f"{missing['client.key']}: cannot read kafka.ssl_key_location: {enoent}",
        f"kafka.schema_registry.basic_auth_user_info: cannot read secret file "
        f"{missing['registry-auth']}: {enoent}",
        f"{missing['registry-ca.pem']}: cannot read kafka.schema_registry.ca_location: {enoent}",
    )]


# --- exact decimals: a price is never read in another base ----------------------------------


def test_integer_prices_are_read_in_decimal(tmp_path: Path) -> None:
    from exporter.pricing import RateCard

    path = tmp_path / "card.yaml"
    path.write_text(CARD.replace('"0.03"', "010").replace('"0.004"', "1_000"), encoding="utf-8")
    default = RateCard.load(path).versions[0].default.prices
    assert (default.cpu, default.memory) == (Decimal(10), Decimal(1000))


# --- the rate card against the allow-lists --------------------------------------------------


def test_a_selector_value_outside_its_allow_list_fails_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = allow_list_config(tmp_path, costcenter="costcenter\nCC-1\ncc-2\n", team="team\nweb\n")
    config["org"]["keys"]["costcenter"]["allowed_values_case_sensitive"] = False
    card = CARD + (
        "    selectors:\n"
        "      - {match: {costcenter: CC-1}, cpu: 1}\n"
        "      - {match: {costcenter: cc-1, team: web}, cpu: 2}\n"
        "      - {match: {costcenter: cc-3}, memory: 3}\n"
        "      - {match: {costcenter: __unallocated__, team: __invalid__}, memory: 4}\n"
        "      - {match: {team: Web, costcenter: cc-2}, memory: 5}\n"
    )
    csv = tmp_path / "costcenter.csv"
    path = tmp_path / "card.yaml"
    assert problems(tmp_path, capsys, card, config) == [
        f"{path}: line 8, column 18: versions[0].selectors[1].match.costcenter: 'cc-1' is not in "
        f"the allow-list {csv}, so it never matches; the list spells it 'CC-1'",
        f"{path}: line 9, column 18: versions[0].selectors[2].match.costcenter: 'cc-3' is not in "
        f"the allow-list {csv}, so it never matches",
        f"{path}: line 11, column 18: versions[0].selectors[4].match.team: 'Web' is not in the "
        f"allow-list {tmp_path / 'team.csv'}, so it never matches",
    ]


def test_selector_values_in_their_allow_lists_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = allow_list_config(tmp_path, costcenter="costcenter\ncc-1\n")
    card = CARD + "    selectors:\n      - {match: {costcenter: cc-1, tier: gold}, cpu: 1}\n"
    config["org"]["other_labels"] = ["tier"]
    code, err, _ = check(write_config(tmp_path, config, card), capsys)
    assert (code, err) == (0, [])


# --- the config file itself -----------------------------------------------------------------


def test_a_duplicate_key_in_the_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("kafka:\n  bootstrap_servers: a:9092\nperiods: {length: 1h}\n"
                    "kafka:\n  partitions: 3\n", encoding="utf-8")
    code, err, out = check(path, capsys)
    assert (code, out) == (2, "")
    assert err == [f"{PREFIX}{path}: line 4, column 1: duplicate key 'kafka' (first at line 1)"]
    with pytest.raises(ConfigError, match="duplicate key 'kafka'"):
        load_config(path, environ={})


def test_each_problem_of_the_config_file_is_its_own_line_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("kafka:\n  partitions: 0\n  bootstrap_servers: a:9092\n"
                    "periods:\n  length: 7m\n  resolution: 10s\n  grainn: pod\n", encoding="utf-8")
    monkeypatch.setenv("CHARGEBACK_WORKER__MAX_BATCH_PERIODS", "0")
    code, err, out = check(path, capsys)
    assert (code, out) == (2, "")
    origin = f"{path} + environment"
    assert err == [PREFIX + line for line in (
        f"{origin}: line 5, column 3: periods.length: must be one of 10m, 1h, 1d",
        f"{origin}: line 7, column 3: periods.grainn: unknown key",
        f"{origin}: line 2, column 3: kafka.partitions: Input should be greater than or equal to 1",
        f"{origin}: worker.max_batch_periods: Input should be greater than or equal to 1",
    )]
    with pytest.raises(ConfigError) as one:
        load_config(path)
    assert str(one.value) == (
        f"{origin}: periods.length: must be one of 10m, 1h, 1d; periods.grainn: unknown key; "
        "kafka.partitions: Input should be greater than or equal to 1; "
        "worker.max_batch_periods: Input should be greater than or equal to 1")
