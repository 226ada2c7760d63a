"""Rate card: prices per Core-Hour and per GiB-Hour, effective-dated, with overrides.

A rate card is a YAML file (format in docs/pricing.md, example in examples/rate-card.yaml):
one ISO 4217 currency, and a list of versions sorted by `effective_from`. Each version has a
default price per resource and optional overrides by cluster, by namespace and by label selector.

Precedence, most specific first, per resource (an override may price one resource only):
1. label selector (matches resolved org values and other labels); among matching selectors the
   one with more labels wins, which is unambiguous because the card is rejected at load when two
   selectors could match the same line without one containing the other;
2. namespace scoped to a cluster, then namespace in any cluster;
3. cluster;
4. the version's default.

Effective dating: a version applies from `effective_from` (inclusive) to the next version's
`effective_from` or its own `effective_until` (exclusive). The version in effect at a period's
start prices the whole period. A period that straddles a version boundary is refused
(`PricingError`), never split; `RateCard.load(..., period_length=...)` refuses boundaries that
are not aligned to the period length, so a straddle cannot happen at run time.

Rounding: cost = chargeable quantity quantized to the record's quantity scale, times the unit
price, quantized to the record's cost scale with ROUND_HALF_EVEN (`exporter.money.cost`). Unit
prices are never rounded: one with more decimals than the unit-price scale is rejected at load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter.avro import load_schema
from exporter.errors import PricingError
from exporter.model import (
    INVALID,
    ORG_KEYS,
    RESOURCES,
    UNALLOCATED,
    ChargeLine,
    PricedLine,
    Resource,
    is_resource,
)
from exporter.money import cost, quantize
from exporter.periods import Period, iso, parse_time
from exporter.yamlfile import Location, Positions, UniqueKeyLoader, read_yaml_positions

if TYPE_CHECKING:
    from exporter.org import AllowedValues

# Record scales, read from the shipped billing-record schema so pricing can never round to a
# scale the record does not have: quantities decimal(18,9), unit price (22,10), cost (20,6).
_RECORD = load_schema("billing_record").decimals
QUANTITY_PRECISION = _RECORD["chargeable_quantity"].precision
QUANTITY_SCALE = _RECORD["chargeable_quantity"].scale
UNIT_PRICE_PRECISION = _RECORD["unit_price"].precision
UNIT_PRICE_SCALE = _RECORD["unit_price"].scale
COST_PRECISION = _RECORD["cost"].precision
COST_SCALE = _RECORD["cost"].scale
_QUANTITY = _RECORD["chargeable_quantity"]
_COST = _RECORD["cost"]

# ISO 4217 List One (SIX, as published 2026-01-01) without the codes that are not money one
# can be billed in: precious metals (XAU XAG XPD XPT), bond-market units (XBA-XBD), XTS, XXX.
_ISO_4217_LIST = """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN
    BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU
    MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON
    RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP
    TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAD XAF XCD XCG XDR XOF
    XPF XSU XUA YER ZAR ZMW ZWG
"""
ISO_4217_CODES: frozenset[str] = frozenset(_ISO_4217_LIST.split())


def quantize_quantity(value: Decimal) -> Decimal:
    """`value` at the record's quantity scale (ROUND_HALF_EVEN); raises PricingError if it
    would not fit the quantity precision."""
    return quantize(value, _QUANTITY, "quantity", PricingError)


def quantize_cost(value: Decimal) -> Decimal:
    """`value` at the record's cost scale (ROUND_HALF_EVEN); raises PricingError if it would
    not fit the cost precision."""
    return quantize(value, _COST, "cost", PricingError)


# --- YAML: exact decimals, timestamps kept as text, duplicate keys refused -------------------


class _CardLoader(UniqueKeyLoader):
    """Loader that reads numbers in decimal only (floats as exact Decimals) and refuses
    duplicate mapping keys."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text  # `.inf`/`.nan` spellings: left as text, rejected by validation
    return value if value.is_finite() else text


_DECIMAL_INTEGER = re.compile(r"[-+]?[0-9]+")


def _construct_integer(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    # YAML 1.1 also reads 0x1F, 0b11, 1:30 (base 60) and 010 (octal) as integers: a price so
    # written is left as text (and refused), and 010 is ten.
    text = str(loader.construct_scalar(node))
    digits = text.replace("_", "")
    return int(digits) if _DECIMAL_INTEGER.fullmatch(digits) else text


def _construct_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return str(loader.construct_scalar(node))


_CardLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
_CardLoader.add_constructor("tag:yaml.org,2002:int", _construct_integer)
_CardLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)


# --- The file's schema ------------------------------------------------------------------------


def _price(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ValueError("must be a decimal number such as 0.031 or \"0.031\"")
    try:
        price = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not price.is_finite():
        raise ValueError("must be a finite number")
    if price < 0:
        raise ValueError("must not be negative")
    exponent = price.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > UNIT_PRICE_SCALE:
        raise ValueError(f"has more than {UNIT_PRICE_SCALE} decimals (the unit-price scale)")
    if price.adjusted() >= UNIT_PRICE_PRECISION - UNIT_PRICE_SCALE:
        raise ValueError(
            f"does not fit decimal({UNIT_PRICE_PRECISION},{UNIT_PRICE_SCALE})"
        )
    return price


def _instant(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be an RFC 3339 instant such as 2026-01-01T00:00:00Z")
    return value if isinstance(value, int) else parse_time(value)


Price = Annotated[Decimal, BeforeValidator(_price)]
Instant = Annotated[int, BeforeValidator(_instant)]
_Name = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _priced_resource(key: str) -> str:
    if key in RESOURCES or key == "storage" or not is_resource(key):
        raise PydanticCustomError("unknown_resource", "unknown resource")
    return key


_PricedResource = Annotated[str, AfterValidator(_priced_resource)]


class _Prices(_Model):
    """Prices of one rule; a rule may price one resource only. Besides cpu and memory, a rule
    may price `gpu`, `gpu.<profile>` (a MIG profile or time-sliced replica) and
    `storage.<storage class>`, each under its own key."""

    model_config = ConfigDict(extra="allow", frozen=True)

    cpu: Price | None = None
    memory: Price | None = None

    def get(self, resource: Resource) -> Decimal | None:
        if resource == "cpu":
            return self.cpu
        if resource == "memory":
            return self.memory
        extra = self.model_extra
        return None if extra is None else extra.get(resource)

    def priced(self) -> tuple[Resource, ...]:
        """Every resource this rule prices."""
        return (*(r for r in RESOURCES if self.get(r) is not None), *(self.model_extra or {}))

    __pydantic_extra__: dict[_PricedResource, Price]

    @model_validator(mode="after")
    def _some(self) -> _Prices:
        if not self.priced():
            raise ValueError("needs a price for cpu, memory or both")
        return self


class _Default(_Prices):
    @model_validator(mode="after")
    def _both(self) -> _Default:
        missing = [r for r in RESOURCES if self.get(r) is None]
        if missing:
            raise ValueError(f"the default needs a price for {' and '.join(missing)}")
        return self


class _NamespaceRule(_Prices):
    namespace: _Name
    cluster: _Name | None = None


class _SelectorRule(_Prices):
    match: dict[_Name, str] = Field(min_length=1)


class _Version(_Model):
    id: _Name | None = None
    effective_from: Instant
    effective_until: Instant | None = None
    default: _Default
    clusters: dict[_Name, _Prices] = Field(default_factory=dict)
    namespaces: list[_NamespaceRule] = Field(default_factory=list)
    selectors: list[_SelectorRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _window(self) -> _Version:
        if self.effective_until is not None and self.effective_until <= self.effective_from:
            raise ValueError("effective_until must be after effective_from")
        return self


class _IdleFile(_Model):
    """How idle capacity is distributed to cost centers (docs/pricing.md, "Idle capacity")."""

    distribute: Literal["proportional", "even", "weights"]
    weights: dict[_Name, Price] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _weights(self) -> _IdleFile:
        if self.distribute == "weights":
            if not self.weights:
                raise ValueError("distribute: weights needs weights (cost center: weight)")
            if any(w <= 0 for w in self.weights.values()):
                raise ValueError("weights must be positive")
        elif self.weights:
            raise ValueError(f"weights apply to distribute: weights, not {self.distribute}")
        return self


@dataclass(frozen=True, slots=True)
class IdleRule:
    """The card's rule for idle capacity: `proportional` to the cost centers' charges, `even`
    over them, or fixed `weights` by cost center (exporter.idle.distribute)."""

    method: str
    weights: Mapping[str, Decimal]


class _CardFile(_Model):
    currency: str
    description: str | None = None
    versions: list[_Version] = Field(min_length=1)
    idle: _IdleFile | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if v not in ISO_4217_CODES:
            raise ValueError(f"{v!r} is not an active ISO 4217 currency code (e.g. EUR, USD)")
        return v


# --- Validated, indexed card -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceQuote:
    """The price of one line: version id, unit price and the rule that gave it."""

    version: str
    unit_price: Decimal
    rule: str  # key path in the card, e.g. `versions[1].selectors[0]`


@dataclass(frozen=True, slots=True)
class _Rule:
    path: str
    prices: _Prices
    match: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """One effective-dated version, `[start, end)` in epoch seconds (`end` None: open)."""

    id: str
    start: int
    end: int | None
    default: _Rule
    clusters: Mapping[str, _Rule]
    namespaces: Mapping[tuple[str | None, str], _Rule]
    selectors: tuple[_Rule, ...]

    @property
    def selector_keys(self) -> tuple[str, ...]:
        """Every label the selectors read: with cluster, namespace and resource, all a quote
        depends on."""
        return tuple(sorted({k for s in self.selectors for k, _ in s.match}))

    def quote(self, line: ChargeLine) -> PriceQuote:
        """The unit price for `line` under this version, by precedence (module docstring)."""
        w = line.workload
        return (self.selector_quote(line)
                or self.scope_quote(line.resource, w.cluster, w.namespace))

    def selector_quote(self, line: ChargeLine) -> PriceQuote | None:
        """The quote of the most specific selector that matches `line` and prices its
        resource, if any. Depends only on the resource and the `selector_keys` labels."""
        res = line.resource
        best: _Rule | None = None
        for s in self.selectors:
            # Matching selectors form a chain under inclusion (checked at load): the longest
            # wins (the first of that length, as a stable sort would pick).
            if (s.prices.get(res) is not None and _matches(s, line)
                    and (best is None or len(s.match) > len(best.match))):
                best = s
        if best is None:
            return None
        price = best.prices.get(res)
        assert price is not None
        return PriceQuote(self.id, price, best.path)

    def scope_quote(self, resource: Resource, cluster: str, namespace: str) -> PriceQuote:
        """The quote without selectors: namespace in the cluster, namespace in any cluster,
        cluster, then the default. Raises `PricingError` when none prices `resource` (a GPU
        profile or storage class the card does not know is never charged at zero)."""
        for rule in (self.namespaces.get((cluster, namespace)),
                     self.namespaces.get((None, namespace)), self.clusters.get(cluster),
                     self.default):
            price = None if rule is None else rule.prices.get(resource)
            if price is not None:
                assert rule is not None
                return PriceQuote(self.id, price, rule.path)
        raise PricingError(f"version {self.id} has no price for {resource} (cluster {cluster}, "
                           f"namespace {namespace}); add {resource} to its default")


def _label(line: ChargeLine, key: str) -> str | None:
    """The value a selector compares for `key`: the resolved org value or another label."""
    return line.org.values.get(key) if key in ORG_KEYS else line.labels.get(key)


def _matches(rule: _Rule, line: ChargeLine) -> bool:
    return all(_label(line, key) == value for key, value in rule.match)


def _overlapping(a: _Rule, b: _Rule) -> bool:
    """True when some line could match both selectors and neither is strictly more specific."""
    da, db = dict(a.match), dict(b.match)
    if any(da[k] != db[k] for k in da.keys() & db.keys()):
        return False  # they disagree on a label: no line matches both
    return not (set(a.match) < set(b.match) or set(b.match) < set(a.match))


Problems = list[tuple[Location, str]]
"""What is wrong with a card: key path and message, one entry per problem."""


def _allowed_problem(value: str, allowed: AllowedValues) -> str | None:
    """Why a selector's `value` for an allow-listed key never matches, or None when it can.

    A resolved value is the list's own spelling or a reserved bucket (exporter.org).
    """
    if value in allowed.canonical.values() or value in (UNALLOCATED, INVALID):
        return None
    spelled = allowed.lookup(value)
    hint = f"; the list spells it {spelled!r}" if spelled is not None else ""
    return f"{value!r} is not in the allow-list {allowed.source}, so it never matches{hint}"


def _build_version(v: _Version, i: int, label_keys: frozenset[str] | None,
                   allowed: Mapping[str, AllowedValues], problems: Problems) -> PriceVersion:
    base = ("versions", i)
    path = _loc(base)
    clusters = {c: _Rule(f"{path}.clusters.{c}", p) for c, p in v.clusters.items()}
    namespaces: dict[tuple[str | None, str], _Rule] = {}
    for j, ns in enumerate(v.namespaces):
        scope = (ns.cluster, ns.namespace)
        loc = (*base, "namespaces", j)
        if scope in namespaces:
            problems.append((loc, f"same namespace and cluster as {namespaces[scope].path} "
                                  "(ambiguous price; merge them)"))
            continue
        namespaces[scope] = _Rule(_loc(loc), ns)
    selectors: list[_Rule] = []
    for j, sel in enumerate(v.selectors):
        loc = (*base, "selectors", j)
        if label_keys is not None:
            for key in sel.match:
                if key not in label_keys:
                    problems.append(((*loc, "match", key), (
                        f"unknown label; a selector matches org keys {', '.join(ORG_KEYS)} or a "
                        "label listed in org.other_labels")))
        for key, value in sel.match.items():
            why = _allowed_problem(value, allowed[key]) if key in allowed else None
            if why is not None:
                problems.append(((*loc, "match", key), why))
        rule = _Rule(_loc(loc), sel, tuple(sorted(sel.match.items())))
        for other in selectors:
            both = [r for r in sel.priced() if other.prices.get(r) is not None]
            if both and _overlapping(rule, other):
                problems.append((loc, (
                    f"ties with {other.path} for {' and '.join(both)} (a line can match both and "
                    "neither is more specific); make one a superset of the other")))
        selectors.append(rule)
    return PriceVersion(
        id=v.id or iso(v.effective_from),
        start=v.effective_from,
        end=v.effective_until,
        default=_Rule(f"{path}.default", v.default),
        clusters=clusters,
        namespaces=namespaces,
        selectors=tuple(selectors),
    )


def _loc(loc: Location) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _is_price_rule(loc: Location) -> bool:
    """True when `loc` is a version's default or a cluster's prices (only resources as keys)."""
    return (len(loc) == 3 and loc[2] == "default") or (len(loc) == 4 and loc[2] == "clusters")


_UNKNOWN_RESOURCE = ("unknown resource (a price is for cpu, memory, gpu, gpu.<profile> or "
                     "storage.<storage class>)")


def _pydantic_problems(exc: ValidationError) -> Problems:
    problems: Problems = []
    for err in exc.errors():
        loc = err["loc"]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "unknown_resource":
            loc = loc[:-1] if loc and loc[-1] == "[key]" else loc
            msg = _UNKNOWN_RESOURCE
        elif err["type"] == "extra_forbidden":
            msg = _UNKNOWN_RESOURCE if _is_price_rule(loc[:-1]) else "unknown key"
        problems.append((loc, msg))
    return problems


class RateCard:
    """A validated rate card. Build it with `RateCard.load` (or `RateCard.from_data`)."""

    def __init__(self, currency: str, versions: Sequence[PriceVersion], source: str,
                 idle: IdleRule | None = None) -> None:
        self.currency = currency
        self.versions = tuple(versions)
        self.source = source
        # How idle capacity goes to cost centers; None: it stays on its `__idle__` records.
        self.idle = idle

    @classmethod
    def load(
        cls,
        path: Path,
        period_length: int | None = None,
        other_labels: Iterable[str] | None = None,
        allowed: Mapping[str, AllowedValues] | None = None,
    ) -> RateCard:
        """Read and validate the YAML rate card at `path`.

        `period_length` (seconds), when given, requires every version boundary to be aligned to
        it, so no period can straddle a price change. `other_labels`, when given, restricts
        selector keys to the org keys and these labels (a typo would otherwise never match).
        `allowed` (org key to its allow-list) refuses a selector value that the key can never
        resolve to.
        Raises `PricingError` with one line naming the file and, for each problem, its line
        and column in the file and its key path; `problems` has each on its own.
        """
        data, positions = read_yaml_positions(path, "rate card", PricingError, _CardLoader)
        return cls.from_data(data, str(path), period_length, other_labels, positions, allowed)

    @classmethod
    def from_data(
        cls,
        data: Any,
        source: str = "rate card",
        period_length: int | None = None,
        other_labels: Iterable[str] | None = None,
        positions: Positions | None = None,
        allowed: Mapping[str, AllowedValues] | None = None,
    ) -> RateCard:
        """Validate an already parsed rate card; `source` names it in error messages and
        `positions` (from the parser) places each problem in the file."""
        if not isinstance(data, dict):
            raise PricingError(f"{source}: top level must be a mapping with currency and versions")
        try:
            card = _CardFile.model_validate(data)
        except ValidationError as exc:
            raise _card_error(source, _pydantic_problems(exc), positions) from None
        keys = None if other_labels is None else frozenset((*ORG_KEYS, *other_labels))
        problems: Problems = []
        versions = [_build_version(v, i, keys, allowed or {}, problems)
                    for i, v in enumerate(card.versions)]
        _check_dating(versions, period_length, problems)
        if problems:
            raise _card_error(source, problems, positions)
        idle = None if card.idle is None else IdleRule(card.idle.distribute,
                                                       dict(card.idle.weights))
        return cls(card.currency, versions, source, idle)

    def version_at(self, ts: int) -> PriceVersion:
        """The version in effect at epoch second `ts`; raises PricingError if none is."""
        found: PriceVersion | None = None
        for i, v in enumerate(self.versions):
            end = v.end if v.end is not None else (
                self.versions[i + 1].start if i + 1 < len(self.versions) else None
            )
            if v.start <= ts and (end is None or ts < end):
                found = v
        if found is None:
            raise PricingError(f"{self.source}: no price version is in effect at {iso(ts)}")
        return found

    def quote(self, line: ChargeLine) -> PriceQuote:
        """Version, unit price and rule for `line`; raises PricingError on a straddle or gap."""
        version = self.version_at(line.period.start)
        self._check_straddle(line.period)
        return version.quote(line)

    def price(self, line: ChargeLine) -> PricedLine:
        """`line` priced: cost = quantize_quantity(chargeable) × unit price, quantized to the
        cost scale (ROUND_HALF_EVEN). Raises PricingError when no version covers the period,
        the period straddles a price change, or a value does not fit its record precision."""
        return self.price_lines((line,))[0]

    def price_lines(self, lines: Iterable[ChargeLine]) -> list[PricedLine]:
        """Every line priced (as `price`), in order.

        A period's lines share the version; the selector part of a quote depends only on the
        resource and the labels the selectors read, the rest only on resource, cluster and
        namespace: each is looked up once per distinct input.
        """
        out: list[PricedLine] = []
        append = out.append
        current: Period | None = None
        version: PriceVersion | None = None
        selector_keys: tuple[str, ...] = ()
        by_selector: dict[tuple[str | None, ...], PriceQuote | None] = {}
        by_scope: dict[tuple[str, str, str], PriceQuote] = {}
        currency = self.currency
        source = self.source
        for line in lines:
            if line.period != current:
                version = self.version_at(line.period.start)
                self._check_straddle(line.period)
                current = line.period
                selector_keys = version.selector_keys
                by_selector, by_scope = {}, {}
            assert version is not None
            res = line.resource
            q: PriceQuote | None = None
            if selector_keys:
                skey = (res, *[_label(line, k) for k in selector_keys])
                if skey in by_selector:
                    q = by_selector[skey]
                else:
                    q = by_selector[skey] = version.selector_quote(line)
            if q is None:
                w = line.workload
                key = (res, w.cluster, w.namespace)
                q = by_scope.get(key)
                if q is None:
                    try:
                        q = by_scope[key] = version.scope_quote(res, w.cluster, w.namespace)
                    except PricingError as exc:
                        raise PricingError(f"{source}: {exc}") from None
            # The lambda names the line only on failure (called within this iteration).
            amount = cost(line.chargeable, q.unit_price, _QUANTITY, _COST,
                          lambda: _cost_where(source, line, q), PricingError)  # noqa: B023
            append(PricedLine(line, q.unit_price, amount, currency, q.version))
        return out

    def _check_straddle(self, period: Period) -> None:
        for v in self.versions:
            for edge in (v.start, v.end):
                if edge is not None and period.start < edge < period.end:
                    raise PricingError(
                        f"{self.source}: period {period} straddles the price change at "
                        f"{iso(edge)} (version {v.id}); align price changes to period boundaries"
                    )


def price_lines(lines: Iterable[ChargeLine], card: RateCard | None) -> list[PricedLine]:
    """Every line priced with `card`, or with None prices when there is no rate card."""
    if card is None:
        return [PricedLine(ln, None, None, None, None) for ln in lines]
    return card.price_lines(lines)


def _card_error(source: str, problems: Problems, positions: Positions | None) -> PricingError:
    """One error for every problem: `<source>: line L, column C: <key path>: <message>`."""
    lines = [
        f"{source}: {positions.at(loc) if positions is not None else ''}{_loc(loc) or '(root)'}: {msg}"
        for loc, msg in problems
    ]
    return PricingError.of(lines)


def _check_dating(versions: Sequence[PriceVersion], period_length: int | None,
                  problems: Problems) -> None:
    ids: dict[str, int] = {}
    for i, v in enumerate(versions):
        if v.id in ids:
            problems.append((("versions", i, "id"), f"{v.id!r} is also versions[{ids[v.id]}].id"))
        ids.setdefault(v.id, i)
        if i:
            prev = versions[i - 1]
            if v.start == prev.start:
                problems.append((("versions", i, "effective_from"), (
                    f"overlaps versions[{i - 1}] (both start at {iso(v.start)})")))
            elif v.start < prev.start:
                problems.append((("versions", i, "effective_from"), (
                    f"{iso(v.start)} is before versions[{i - 1}]'s {iso(prev.start)}; list "
                    "versions in ascending effective_from")))
            elif prev.end is not None and prev.end > v.start:
                problems.append((("versions", i - 1, "effective_until"), (
                    f"{iso(prev.end)} overlaps versions[{i}], which starts at {iso(v.start)}")))
        if period_length:
            for name, edge in (("effective_from", v.start), ("effective_until", v.end)):
                if edge is not None and edge % period_length:
                    problems.append((("versions", i, name), (
                        f"{iso(edge)} is not aligned to the {period_length}s period length, so a "
                        "period would straddle it")))


def _cost_where(source: str, line: ChargeLine, q: PriceQuote) -> str:
    return f"{source}: {_describe(line)}: {q.rule}"


def _describe(line: ChargeLine) -> str:
    w = line.workload
    return f"{w.cluster}/{w.namespace}/{w.kind}/{w.name} {line.resource} in {line.period}"
