"""Extract the Cost and Usage column definitions from FOCUS specification column pages.

Reads the Markdown pages of the FinOps FOCUS specification (github.com/FinOps-Open-Cost-and-
Usage-Spec/FOCUS_Spec) and prints, per column, what `tests/rigs/focus_spec.py` checks: the
column ID, feature level, whether nulls are allowed, the data type, the value format, the
allowed values when the format is "Allowed values", the version that introduced it, and the
normative nullability sentences, quoted. Nothing here comes from the exporter's own code.

    python tests/rigs/focus-spec/extract.py SPEC_CHECKOUT REF > columns.json   # pages at a git ref
    python tests/rigs/focus-spec/extract.py --files PAGE.md ...                 # loose pages

The conditional nullability rules (`conditions` in columns.json) are not extracted: they are
written by hand from the quoted sentences, because the spec states them in prose.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

_ROW = re.compile(r"^\|\s*([^|]+?)\s*\|\s*(.*?)\s*\|\s*$")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def _plain(text: str) -> str:
    text = _LINK.sub(r"\1", text).replace("\\<", "<").replace("*", "").strip()
    return re.sub(r"\s+", " ", text)


def _section(lines: list[str], title: str) -> list[str]:
    out: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("## ") or line.startswith("### "):
            inside = line.lstrip("#").strip().lower() == title.lower()
            continue
        if inside:
            out.append(line)
    return out


def parse(page: str, source: str) -> dict[str, Any] | None:
    """The column definition in one page, or None when the page defines no column."""
    lines = page.splitlines()
    ident = next((ln.strip() for ln in _section(lines, "Column ID") if ln.strip()), None)
    if ident is None:
        return None
    constraints: dict[str, str] = {}
    body = _section(lines, "Content Constraints")
    for line in body:
        m = _ROW.match(line)
        if m and not set(m.group(1)) <= set(":- "):
            constraints[m.group(1).strip().lower()] = _plain(m.group(2))
    allowed: list[str] | None = None
    parents: list[str] | None = None
    if constraints.get("value format", "").lower().startswith("allowed values"):
        allowed = []
        table = False
        for line in body:
            if line.lower().startswith("allowed values"):
                table = True
                continue
            m = _ROW.match(line) if table else None
            if m and not set(m.group(1)) <= set(":- "):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                allowed.append(cells)  # type: ignore[arg-type]
        parents = _parents(allowed)  # type: ignore[arg-type]
        allowed = _values(allowed)  # type: ignore[arg-type]
    introduced = next((ln.strip() for ln in _section(lines, "Introduced (version)")
                       + _section(lines, "Version Introduced") if ln.strip()), None)
    nullability = [_plain(ln.strip()[1:]) for ln in lines
                   if re.match(r"^\s*\*\s", ln) and re.search(r"\bnull\b", ln)
                   and ident in ln]
    return {
        "id": ident,
        "feature_level": constraints.get("feature level"),
        "allows_nulls": {"true": True, "false": False}[constraints["allows nulls"].lower()],
        "data_type": constraints.get("data type"),
        "value_format": constraints.get("value format"),
        "allowed_values": allowed,
        **({"allowed_parent_values": parents} if parents else {}),
        "introduced": introduced,
        "source_file": source,
        "nullability": nullability,
    }


def _values(rows: list[list[str]]) -> list[str]:
    """Allowed values from the table under "Allowed values:": the first column, or for a
    (Category, Subcategory, ...) table the second, as the spec lays it out."""
    header, *rest = rows
    col = 1 if len(header) > 1 and "subcategory" in header[1].lower() else 0
    return [r[col] for r in rest]


def _parents(rows: list[list[str]]) -> list[str] | None:
    """For a (Category, Subcategory, ...) table, the category of each allowed value."""
    header, *rest = rows
    if len(header) > 1 and "subcategory" in header[1].lower():
        return [r[0] for r in rest]
    return None


def main(argv: list[str]) -> int:
    pages: list[tuple[str, str]] = []
    if argv[:1] == ["--files"]:
        pages = [(Path(p).name, Path(p).read_text(encoding="utf-8")) for p in argv[1:]]
    else:
        repo, ref = argv
        names = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", ref],
                               check=True, capture_output=True, text=True).stdout.split()
        for name in names:
            if "/columns/" in name and name.startswith("specification/") and name.endswith(".md"):
                text = subprocess.run(["git", "-C", repo, "show", f"{ref}:{name}"], check=True,
                                      capture_output=True, text=True).stdout
                pages.append((name, text))
    columns = [c for name, text in sorted(pages) if (c := parse(text, name)) is not None]
    json.dump(columns, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
