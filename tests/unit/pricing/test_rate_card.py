"""Rate card: loading, validation messages, precedence, effective dating and cost rounding."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.avro import load_schema
from exporter.errors import PricingError
from exporter.periods import Period, parse_time
from exporter.pricing import RateCard, price_lines, quantize_cost, quantize_quantity
from exporter.records import build_records
from tests.rigs.charge_lines import HOUR, line
from tests.rigs.paths import ROOT
from tests.rigs.rate_cards import MINIMAL

EXAMPLE = ROOT / "examples" / "rate-card.yaml"
JULY = parse_time("2026-07-01T00:00:00Z")

BASE = MINIMAL


def write(tmp_path: Path, text: str, name: str = "card.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str, **kwargs: object) -> str:
    path = write(tmp_path, text)
    with pytest.raises(PricingError) as info:
        RateCard.load(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


# --- the shipped example --------------------------------------------------------------------


def test_example_card_loads_with_hourly_and_daily_periods() -> None:
    for length in (600, 3600, 86400):
        card = RateCard.load(EXAMPLE, period_length=length, other_labels=())
        assert card.currency == "EUR"
        assert [v.id for v in card.versions] == ["2026-01", "2026-07"]


@pytest.mark.parametrize(
    ("kwargs", "version", "price", "rule"),
    [
        ({}, "2026-01", "0.0310", "versions[0].default"),
        ({"cluster": "prod-eu-1"}, "2026-01", "0.0350", "versions[0].clusters.prod-eu-1"),
        ({"cluster": "prod-eu-1", "resource": "memory"}, "2026-01", "0.0042",
         "versions[0].default"),  # the cluster rule prices cpu only: memory falls through
        ({"cluster": "prod-eu-1", "namespace": "ml-training"}, "2026-01", "0.0450",
         "versions[0].namespaces[0]"),  # namespace beats cluster
        ({"cluster": "batch-eu-1", "namespace": "ml-training"}, "2026-01", "0.0280",
         "versions[0].namespaces[1]"),  # cluster-scoped namespace beats any-cluster namespace
        ({"cluster": "batch-eu-1", "namespace": "ml-training", "resource": "memory"}, "2026-01",
         "0.0060", "versions[0].namespaces[0]"),
        ({"namespace": "ml-training", "org_values": {"costcenter": "cc-4711"}}, "2026-01",
         "0.0250", "versions[0].selectors[0]"),  # selector beats namespace
        ({"org_values": {"costcenter": "cc-4711", "team": "research"}}, "2026-01", "0.0200",
         "versions[0].selectors[1]"),  # the more specific selector wins
        ({"org_values": {"costcenter": "cc-4711", "team": "research"}, "resource": "memory"},
         "2026-01", "0.0035", "versions[0].selectors[0]"),
        ({"period": Period(JULY, JULY + 3600), "cluster": "prod-eu-1"}, "2026-07", "0.0330",
         "versions[1].clusters.prod-eu-1"),
        ({"period": Period(JULY, JULY + 3600), "org_values": {"costcenter": "cc-4711"}},
         "2026-07", "0.0295", "versions[1].default"),  # the new version has no selectors
    ],
)
def test_precedence_most_specific_wins(
    kwargs: dict[str, object], version: str, price: str, rule: str
) -> None:
    card = RateCard.load(EXAMPLE)
    quote = card.quote(line("1", **kwargs))  # type: ignore[arg-type]
    assert (quote.version, quote.unit_price, quote.rule) == (version, Decimal(price), rule)


def test_selector_matches_other_labels(tmp_path: Path) -> None:
    card = RateCard.load(write(tmp_path, BASE + """\
    selectors:
      - match: {tier: gold}
        cpu: "0.05"
"""), other_labels=["tier"])
    assert card.quote(line("1", labels={"tier": "gold"})).unit_price == Decimal("0.05")
    assert card.quote(line("1", labels={"tier": "silver"})).unit_price == Decimal("0.03")


# --- effective dating -------------------------------------------------------------------------


def test_version_boundaries_pick_the_version_in_effect_at_period_start() -> None:
    card = RateCard.load(EXAMPLE)
    before = Period(JULY - 3600, JULY)  # ends exactly at the change: old price
    at = Period(JULY, JULY + 3600)  # starts exactly at the change: new price
    day_before = Period(JULY - 86400, JULY)
    assert card.price(line("1", period=before)).price_version == "2026-01"
    assert card.price(line("1", period=at)).price_version == "2026-07"
    assert card.price(line("1", period=day_before)).price_version == "2026-01"
    first = parse_time("2026-01-01T00:00:00Z")
    assert card.price(line("1", period=Period(first, first + 600))).price_version == "2026-01"
    with pytest.raises(PricingError, match="no price version is in effect at 2025-12-31T23:00:00Z"):
        card.price(line("1", period=Period(first - 3600, first)))


def test_effective_until_leaves_a_gap_without_prices(tmp_path: Path) -> None:
    card = RateCard.load(write(tmp_path, """\
        currency: USD
        versions:
          - effective_from: 2026-01-01T00:00:00Z
            effective_until: 2026-02-01T00:00:00Z
            default: {cpu: 1, memory: 1}
          - effective_from: 2026-03-01T00:00:00Z
            default: {cpu: 2, memory: 2}
    """))
    # without an id, a version is named by its start
    assert [v.id for v in card.versions] == ["2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"]
    feb = parse_time("2026-02-01T00:00:00Z")
    assert card.quote(line("1", period=Period(feb - 3600, feb))).unit_price == 1
    with pytest.raises(PricingError, match="no price version is in effect at 2026-02-01T00:00:00Z"):
        card.quote(line("1", period=Period(feb, feb + 3600)))
    mar = parse_time("2026-03-01T00:00:00Z")
    assert card.quote(line("1", period=Period(mar, mar + 3600))).unit_price == 2


def test_a_period_never_straddles_a_price_change(tmp_path: Path) -> None:
    text = BASE + """\
  - id: v2
    effective_from: 2026-01-01T00:30:00Z
    default: {cpu: "0.04", memory: "0.005"}
"""
    card = RateCard.load(write(tmp_path, text))
    with pytest.raises(PricingError, match=r"straddles the price change at 2026-01-01T00:30:00Z"):
        card.price(line("1", period=HOUR))
    # 10-minute periods are fine on both sides of the change
    half = HOUR.start + 1800
    assert card.price(line("1", period=Period(half - 600, half))).price_version == "v1"
    assert card.price(line("1", period=Period(half, half + 600))).price_version == "v2"
    # and with the period length known, the card is refused at load
    message = load_error(tmp_path, text, period_length=3600)
    assert "versions[1].effective_from: 2026-01-01T00:30:00Z is not aligned" in message
    RateCard.load(write(tmp_path, text), period_length=600)


# --- validation: one line naming file and key path ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE.replace("currency: EUR", "currency: EUR\nkurrency: EUR"), "kurrency: unknown key"),
        (BASE + "    discount: 3\n", "versions[0].discount: unknown key"),
        (BASE.replace('cpu: "0.03"', 'cpu: "0.03", disk: 1'),
         "versions[0].default.disk: unknown resource (a price is for cpu, memory, gpu, "
         "gpu.<profile> or storage.<storage class>)"),
        (BASE.replace('cpu: "0.03"', 'cpu: "0.03", gpu.MIG: 1'),
         "versions[0].default.gpu.MIG: unknown resource"),
        (BASE.replace('cpu: "0.03"', 'cpu: "0.03", gpu: "-1"'),
         "versions[0].default.gpu: must not be negative"),
        (BASE.replace("EUR", "EURO"), "currency: 'EURO' is not an active ISO 4217 currency"),
        (BASE.replace("EUR", "eur"), "currency: 'eur' is not an active ISO 4217"),
        (BASE.replace("EUR", "XAU"), "currency: 'XAU' is not an active ISO 4217"),  # gold
        (BASE.replace("EUR", "HRK"), "currency: 'HRK' is not an active"),  # replaced by EUR 2023
        (BASE.replace(', memory: "0.004"', ""),
         "versions[0].default: the default needs a price for memory"),
        (BASE.replace("effective_from: 2026-01-01T00:00:00Z", "effective_from: soon"),
         "versions[0].effective_from: not a time: 'soon'"),
        ("currency: EUR\nversions: []\n", "versions: List should have at least 1 item"),
        ("- 1\n", "top level must be a mapping"),
        (BASE + BASE.split("versions:\n")[1].replace("v1", "v2"),
         "versions[1].effective_from: overlaps versions[0] (both start at 2026-01-01T00:00:00Z)"),
        (BASE + BASE.split("versions:\n")[1].replace("2026-01-01", "2025-12-01").replace("v1", "v2"),
         "versions[1].effective_from: 2025-12-01T00:00:00Z is before versions[0]'s"),
        (BASE.replace("    default", "    effective_until: 2026-03-01T00:00:00Z\n    default")
         + BASE.split("versions:\n")[1].replace("2026-01-01", "2026-02-01").replace("v1", "v2"),
         "versions[0].effective_until: 2026-03-01T00:00:00Z overlaps versions[1]"),
        (BASE.replace("    default", "    effective_until: 2025-03-01T00:00:00Z\n    default"),
         "versions[0]: effective_until must be after effective_from"),
        (BASE + BASE.split("versions:\n")[1].replace("2026-01-01", "2026-02-01"),
         "versions[1].id: 'v1' is also versions[0].id"),
        (BASE + "    clusters: {c1: {}}\n",
         "versions[0].clusters.c1: needs a price for cpu, memory or both"),
        (BASE + "    namespaces:\n      - {namespace: ml, cpu: 1}\n      - {namespace: ml, memory: 1}\n",
         "versions[0].namespaces[1]: same namespace and cluster as versions[0].namespaces[0]"),
        (BASE + "    selectors:\n      - {match: {costcenter: a}, cpu: 1}\n"
                "      - {match: {team: b}, cpu: 2}\n",
         "versions[0].selectors[1]: ties with versions[0].selectors[0] for cpu"),
        (BASE + "    selectors:\n      - {match: {costcenter: a}, cpu: 1}\n"
                "      - {match: {costcenter: a}, cpu: 2}\n",
         "versions[0].selectors[1]: ties with versions[0].selectors[0] for cpu"),
        (BASE + "    selectors:\n      - {match: {}, cpu: 1}\n",
         "versions[0].selectors[0].match: Dictionary should have at least 1 item"),
        (BASE + "    clusters:\n      c1: {cpu: 1}\n      c1: {cpu: 2}\n",
         "line 8, column 7: duplicate key 'c1' (first at line 7)"),
        ("currency: EUR\nversions: [\n", "line 3, column 1: expected the node content"),
    ],
)
def test_invalid_cards_fail_with_one_line_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("price", "problem"),
    [
        ('"-0.03"', "must not be negative"),
        ("-1", "must not be negative"),
        ('"0.00000000001"', "has more than 10 decimals"),
        ('"1000000000000"', "does not fit decimal(22,10)"),
        ("true", "must be a decimal number"),
        (".inf", "'.inf' is not a decimal"),
        ('"abc"', "'abc' is not a decimal"),
    ],
)
def test_an_invalid_price_fails_with_one_line_naming_the_key(
    tmp_path: Path, price: str, problem: str
) -> None:
    text = BASE.replace('"0.03"', price)
    assert f"versions[0].default.cpu: {problem}" in load_error(tmp_path, text)


def test_selectors_that_cannot_both_match_or_nest_are_fine(tmp_path: Path) -> None:
    card = RateCard.load(write(tmp_path, BASE + """\
    selectors:
      - {match: {costcenter: a}, cpu: 1}
      - {match: {costcenter: b}, cpu: 2}
      - {match: {costcenter: a, team: t}, cpu: 3}
      - {match: {team: t}, memory: 4}
"""))
    assert card.quote(line("1", org_values={"costcenter": "b", "team": "t"})).unit_price == 2
    assert card.quote(line("1", org_values={"costcenter": "a", "team": "t"})).unit_price == 3
    memory = line("1", resource="memory", org_values={"costcenter": "a", "team": "t"})
    assert card.quote(memory).unit_price == 4


def test_unknown_selector_label_is_refused_when_labels_are_known(tmp_path: Path) -> None:
    text = BASE + "    selectors:\n      - {match: {costcentre: a}, cpu: 1}\n"
    message = load_error(tmp_path, text, other_labels=["tier"])
    assert "versions[0].selectors[0].match.costcentre: unknown label" in message
    RateCard.load(write(tmp_path, text))  # without the list, any label may be matched


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    card = RateCard.load(write(tmp_path, """\
        currency: EUR
        versions:
          - effective_from: 2026-01-01T00:00:00Z
            default: &base {cpu: "0.03", memory: "0.004"}
          - effective_from: 2026-02-01T00:00:00Z
            default:
              <<: *base
              cpu: "0.02"
    """))
    assert card.versions[1].default.prices.cpu == Decimal("0.02")
    assert card.versions[1].default.prices.memory == Decimal("0.004")


def test_unreadable_card_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PricingError, match=r"nope.yaml: cannot read rate card: No such file"):
        RateCard.load(missing)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"currency: \xe9\n")
    with pytest.raises(PricingError, match=r"latin1.yaml: rate card is not UTF-8 \(byte 10\)"):
        RateCard.load(bad)


def test_yaml_floats_are_read_exactly(tmp_path: Path) -> None:
    card = RateCard.load(write(tmp_path, BASE.replace('"0.03"', "0.1").replace('"0.004"', "1_000.5")))
    v = card.versions[0]
    assert v.default.prices.cpu == Decimal("0.1")  # not 0.1000000000000000055511151231257827
    assert v.default.prices.memory == Decimal("1000.5")


# --- cost and rounding ------------------------------------------------------------------------


def test_cost_is_quantized_quantity_times_price_half_even(tmp_path: Path) -> None:
    card = RateCard.load(write(tmp_path, BASE))
    priced = card.price(line("1.2345678905"))
    assert priced.unit_price == Decimal("0.03")
    assert priced.cost == Decimal("0.037037")
    assert str(priced.cost) == "0.037037"  # exactly at the record scale
    assert (priced.currency, priced.price_version) == ("EUR", "v1")
    # 0.003125 GiB-h × 0.004 = 0.0000125, exactly half a unit at 6 places: half-even keeps 2
    assert card.price(line("0.003125", resource="memory")).cost == Decimal("0.000012")
    assert card.price(line("0.003375", resource="memory")).cost == Decimal("0.000014")


def test_cost_uses_the_quantity_at_record_scale(tmp_path: Path) -> None:
    card = RateCard.load(write(tmp_path, BASE.replace('"0.03"', '"3000"')))
    # 1.0000000025 is recorded as 1.000000002 (half-even), so the cost is 3000.000006, not the
    # 3000.000008 that the unrounded quantity would give: a consumer can recompute it
    priced = card.price(line("1.0000000025"))
    assert priced.cost == Decimal("3000.000006")
    assert priced.cost == quantize_cost(quantize_quantity(priced.line.chargeable) * 3000)


def test_values_that_do_not_fit_the_record_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match=r"quantity 1000000000.000000000 does not fit decimal\(18,9\)"):
        quantize_quantity(Decimal(10) ** 9)
    assert quantize_quantity(Decimal("999999999.9999999994")) == Decimal("999999999.999999999")
    card = RateCard.load(write(tmp_path, BASE.replace('"0.03"', '"999999999999"')))
    with pytest.raises(PricingError, match=r"versions\[0\].default: cost .* does not fit decimal\(20,6\)"):
        card.price(line("999"))


def test_no_rate_card_gives_none_prices() -> None:
    lines = [line("1"), line("2", resource="memory")]
    priced = price_lines(lines, None)
    assert [(p.line, p.unit_price, p.cost, p.currency, p.price_version) for p in priced] == [
        (lines[0], None, None, None, None), (lines[1], None, None, None, None),
    ]
    card = RateCard.load(EXAMPLE)
    assert [p.cost for p in price_lines(lines, card)] == [Decimal("0.031000"), Decimal("0.008400")]


def test_priced_values_survive_the_billing_record_unchanged(tmp_path: Path) -> None:
    """Pricing rounds to the record's scales, so building and encoding the record is lossless."""
    card = RateCard.load(write(tmp_path, BASE.replace('"0.03"', '"0.0333333333"')))
    priced = card.price_lines([line("1.2345678905"), line("7.0000000005", resource="memory")])
    records = build_records(priced, revision=0, generated_at_ms=0, exporter_version="test")
    schema = load_schema("billing_record")
    for p, r in zip(priced, records, strict=True):
        assert (r.unit_price, r.cost, r.currency, r.price_version) == (
            p.unit_price, p.cost, "EUR", "v1")
        assert r.chargeable_quantity == quantize_quantity(p.line.chargeable)
        decoded = schema.decode(schema.encode_object(r))
        assert (decoded["cost"], decoded["unit_price"]) == (p.cost, p.unit_price)
        assert decoded["chargeable_quantity"] == r.chargeable_quantity
    assert records[0].cost == Decimal("0.041152")  # 1.234567890 × 0.0333333333 = 0.04115226296...
