"""Organisation model: which Sysdig labels give each org key, and how missing values resolve.

Resolution order per key, first non-empty value wins:
1. the workload's own labels, `kube_<kind>_label_<name>`, for each configured workload label
   name and then each alias, in order;
2. the namespace's labels, `kube_namespace_label_<name>`, for each configured namespace label
   name and then each alias, in order;
3. the configured default;
4. `__unallocated__`.
Empty and whitespace-only values count as missing; values are trimmed. Aliases only extend a
level that has at least one label name (an empty `namespace_labels` keeps namespaces off).

Allow-lists: with `allowed_values_file`, a value found at any level that is not in the list is
charged to `__invalid__` (it does not fall through to the next level) and the raw value is kept
in `OrgAssignment.original`; the source stays where it was found. A label value spelled like a
reserved bucket (`__unallocated__`, `__invalid__`) is treated the same way. With
`allowed_values_case_sensitive: false` the list's own spelling is charged, so `CC-1` and `cc-1`
land in one bucket.

Sanitisation hazard: Sysdig (like Prometheus) turns every character outside `[a-zA-Z0-9_]` into
`_`, so `cost-center`, `cost.center` and `cost_center` are the same Sysdig label and Sysdig
reports one value for them, whichever it saw. Listing several of them for one key is harmless;
two different names that collide across two keys are refused at load.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from exporter.config import OrgConfig, OrgKeyConfig
from exporter.errors import ConfigError
from exporter.model import INVALID, ORG_KEYS, UNALLOCATED, OrgAssignment
from exporter.queries import WORKLOAD_KINDS, label_columns

RESERVED_VALUES = frozenset({UNALLOCATED, INVALID})


def sysdig_label_name(name: str) -> str:
    """Sysdig/Prometheus sanitise label names: anything but [a-zA-Z0-9_] becomes `_`."""
    return "".join(ch if (ch.isascii() and ch.isalnum()) or ch == "_" else "_" for ch in name)


@dataclass(frozen=True, slots=True)
class AllowedValues:
    """The allowed values of one org key, as read from its CSV file.

    `canonical` maps the comparison form of each value (itself, or its casefold when the list is
    case-insensitive) to the spelling in the file (the first one when several differ in case).
    """

    key: str
    source: str
    canonical: Mapping[str, str]
    case_sensitive: bool = True

    def lookup(self, value: str) -> str | None:
        """The value to charge for `value`, or None when it is not allowed."""
        return self.canonical.get(value if self.case_sensitive else value.casefold())

    def __len__(self) -> int:
        return len(set(self.canonical.values()))


def load_allowed_values(
    path: Path, key: str, column: str | None = None, case_sensitive: bool = True
) -> AllowedValues:
    """Read an allow-list CSV (for example a CMDB export).

    The first non-blank row is the header. The values are in the column named `column` if given
    (it must exist), else the column named after `key`, else the first column; header names
    compare case-insensitively. Cells are trimmed, blank cells and rows skipped, and a UTF-8
    byte-order mark is accepted. Raises `ConfigError` naming the file and line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read allowed values for {key}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: allowed values for {key} are not UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    index = 0
    canonical: dict[str, str] = {}
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if header is None:
                header = [c.lower() for c in cells]
                wanted = (column or key).strip().lower()
                if wanted in header:
                    index = header.index(wanted)
                elif column is not None:
                    raise ConfigError(
                        f"{path}:{reader.line_num}: no column named {column!r} in the header "
                        f"(columns: {', '.join(cells)})"
                    )
                continue
            if len(cells) <= index:
                raise ConfigError(
                    f"{path}:{reader.line_num}: row has {len(cells)} column(s), the {key} values "
                    f"are in column {index + 1}"
                )
            value = cells[index]
            if not value:
                continue
            if value in RESERVED_VALUES:
                raise ConfigError(f"{path}:{reader.line_num}: {value} is reserved, not a {key}")
            canonical.setdefault(value if case_sensitive else value.casefold(), value)
    except csv.Error as exc:
        raise ConfigError(f"{path}:{reader.line_num}: invalid CSV: {exc}") from None
    if header is None:
        raise ConfigError(f"{path}: allowed values for {key}: empty file (expected a header row)")
    if not canonical:
        raise ConfigError(f"{path}: allowed values for {key}: no values below the header")
    return AllowedValues(key, str(path), canonical, case_sensitive)


def read_allow_lists(config: OrgConfig) -> dict[str, AllowedValues]:
    """Every configured allow-list by key, read with `load_allowed_values`.

    Raises one `ConfigError` whose `problems` name each list that cannot be used.
    """
    allowed: dict[str, AllowedValues] = {}
    problems: list[str] = []
    for key in ORG_KEYS:
        kc = config.keys[key]
        if kc.allowed_values_file is not None:
            try:
                allowed[key] = load_allowed_values(kc.allowed_values_file, key,
                                                   kc.allowed_values_column,
                                                   kc.allowed_values_case_sensitive)
            except ConfigError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ConfigError.of(problems)
    return allowed


@dataclass(frozen=True, slots=True)
class _KeyPlan:
    workload: tuple[str, ...]  # sanitised Sysdig label names, in lookup order
    namespace: tuple[str, ...]
    default: str | None
    allowed: AllowedValues | None


def _names(primary: tuple[str, ...], aliases: tuple[str, ...]) -> tuple[str, ...]:
    if not primary:
        return ()
    return tuple(dict.fromkeys(sysdig_label_name(n.strip()) for n in (*primary, *aliases)))


def _plan(key: str, kc: OrgKeyConfig, allowed: AllowedValues | None) -> _KeyPlan:
    if allowed is None and kc.allowed_values_file is not None:
        allowed = load_allowed_values(
            kc.allowed_values_file, key, kc.allowed_values_column, kc.allowed_values_case_sensitive
        )
    default = kc.default.strip() if kc.default and kc.default.strip() else None
    if default is not None and allowed is not None:
        charged = allowed.lookup(default)
        if charged is None:
            raise ConfigError(
                f"org.keys.{key}.default: {default!r} is not in {allowed.source}"
            )
        default = charged
    return _KeyPlan(
        workload=_names(kc.workload_labels, kc.aliases),
        namespace=_names(kc.namespace_labels, kc.aliases),
        default=default,
        allowed=allowed,
    )


def _check_collisions(config: OrgConfig) -> None:
    """Refuse two different label names of two keys that Sysdig would report as one label."""
    owner: dict[str, tuple[str, str]] = {}
    for key in ORG_KEYS:
        kc = config.keys[key]
        for raw in dict.fromkeys((*kc.workload_labels, *kc.namespace_labels, *kc.aliases)):
            col = sysdig_label_name(raw.strip())
            seen = owner.setdefault(col, (key, raw))
            if seen[0] != key and seen[1] != raw:
                raise ConfigError(
                    f"org.keys.{key}: label {raw!r} and org.keys.{seen[0]} label {seen[1]!r} "
                    f"are both Sysdig label {col!r} (- and . become _); rename one"
                )


# Resolutions kept per OrgModel (distinct label-value combinations, not workloads); past this
# the memo starts over, which bounds memory in a long-running worker at the cost of one cold period.
_MEMO_LIMIT = 1 << 15


class _KindPlan:
    """The label columns one set of workload kinds reads, computed once, and its memo.

    `columns` is every column the resolution reads, so the tuple of their values decides the
    result and keys `memo`.
    """

    __slots__ = ("columns", "keys", "memo")

    def __init__(self, plans: Mapping[str, _KeyPlan], kinds: tuple[str, ...]) -> None:
        self.keys = tuple(
            (
                key,
                tuple(f"kube_{k}_label_{n}" for n in plan.workload for k in kinds),
                tuple(f"kube_namespace_label_{n}" for n in plan.namespace),
                plan,
            )
            for key, plan in plans.items()
        )
        self.columns = tuple(dict.fromkeys(c for _, w, ns, _ in self.keys for c in (*w, *ns)))
        self.memo: dict[tuple[str | None, ...], OrgAssignment] = {}


class OrgModel:
    """Resolves org keys from the label map Sysdig returns for a workload.

    Construction reads the allow-lists (those not given in `allowed`, by key, as read by
    `load_allowed_values`) and validates the model; it raises `ConfigError`.
    Resolutions are memoised: equal label values give the same (immutable) result object, so
    callers must not mutate what `resolve` and `other_labels` return.
    """

    def __init__(self, config: OrgConfig,
                 allowed: Mapping[str, AllowedValues] | None = None) -> None:
        self._config = config
        _check_collisions(config)
        given = allowed or {}
        self._plans = {key: _plan(key, config.keys[key], given.get(key)) for key in ORG_KEYS}
        # A kind Sysdig does not name (e.g. `replicaset`) reads the labels of every kind.
        self._by_kind = {k: _KindPlan(self._plans, (k,)) for k in WORKLOAD_KINDS}
        self._any_kind = _KindPlan(self._plans, WORKLOAD_KINDS)
        self._other_columns = tuple((name, _other_columns(name)) for name in config.other_labels)
        self._other_read = tuple(c for _, cols in self._other_columns for c in cols)
        self._other_memo: dict[tuple[str | None, ...], dict[str, str]] = {}

    def allowed_values(self, key: str) -> AllowedValues | None:
        """The allow-list of `key`, if one is configured."""
        return self._plans[key].allowed

    def label_columns(self) -> tuple[str, ...]:
        """Sysdig label names the source must group by to see every org label."""
        workload: list[str] = []
        namespace: list[str] = []
        for key in ORG_KEYS:
            workload.extend(self._plans[key].workload)
            namespace.extend(self._plans[key].namespace)
        others = [sysdig_label_name(n) for n in self._config.other_labels]
        return label_columns(workload, namespace, others)

    def resolve(self, kind: str, labels: Mapping[str, str | None]) -> OrgAssignment:
        """Resolve every org key for a workload of Sysdig kind `kind` (e.g. `deployment`).

        Equal values of the columns read give the same `OrgAssignment` object; do not mutate it.
        """
        plan = self._by_kind.get(kind, self._any_kind)
        signature = tuple(map(labels.get, plan.columns))
        found = plan.memo.get(signature)
        if found is None:
            found = self._resolve(plan, labels)
            if len(plan.memo) >= _MEMO_LIMIT:
                plan.memo.clear()
            plan.memo[signature] = found
        return found

    def _resolve(self, plan: _KindPlan, labels: Mapping[str, str | None]) -> OrgAssignment:
        values: dict[str, str] = {}
        sources: dict[str, str] = {}
        original: dict[str, str] = {}
        for key, workload_columns, namespace_columns, kp in plan.keys:
            found = _lookup(labels, workload_columns)
            source = "workload"
            if found is None:
                found = _lookup(labels, namespace_columns)
                source = "namespace"
            if found is None and kp.default is not None:
                found, source = kp.default, "default"
            if found is None:
                values[key], sources[key] = UNALLOCATED, "unallocated"
                continue
            sources[key] = source
            charged = found if kp.allowed is None else kp.allowed.lookup(found)
            if charged is None or found in RESERVED_VALUES:
                values[key], original[key] = INVALID, found
            else:
                values[key] = charged
        return OrgAssignment(values=values, sources=sources, original=original)

    def other_labels(self, labels: Mapping[str, str | None]) -> Mapping[str, str]:
        """The configured non-org labels present on the workload (the first non-empty of the
        workload kinds' labels, the namespace's, then the bare label, per name).

        Equal values of the columns read give the same mapping object; do not mutate it.
        """
        signature = tuple(map(labels.get, self._other_read))
        found = self._other_memo.get(signature)
        if found is None:
            found = {}
            for name, cols in self._other_columns:
                for col in cols:
                    v = labels.get(col)
                    if v:
                        found[name] = v
                        break
            if len(self._other_memo) >= _MEMO_LIMIT:
                self._other_memo.clear()
            self._other_memo[signature] = found
        return found


def _other_columns(name: str) -> tuple[str, ...]:
    """Where a non-org label is read, in order: each workload kind's, the namespace's, bare."""
    col = sysdig_label_name(name)
    return (*(f"kube_{k}_label_{col}" for k in (*WORKLOAD_KINDS, "namespace")), col)


def _lookup(labels: Mapping[str, str | None], columns: tuple[str, ...]) -> str | None:
    for col in columns:
        v = (labels.get(col) or "").strip()
        if v:
            return v
    return None
