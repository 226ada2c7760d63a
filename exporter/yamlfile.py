"""Reading one YAML file with one-line errors, shared by the config file and the rate card."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.errors import ExporterError

Location = Sequence[str | int]
"""A key path into a document: mapping keys and sequence indexes, e.g. ("versions", 0, "id")."""


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor`; explicit keys may override merged ones
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        if isinstance(key, str | int):
            seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True, slots=True)
class Positions:
    """Where each part of a parsed document is in its file."""

    root: yaml.Node | None

    def at(self, loc: Location) -> str:
        """`line L, column C: ` of the deepest part of `loc` the document has ("" for none).

        A mapping entry is where its key is, a sequence item where the item starts. Merged keys
        (`<<: *anchor`) are where the anchor's key is; a repeated key is its last occurrence.
        """
        node, mark = self.root, None
        for part in loc:
            found: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        found, mark = value, key.start_mark
            elif (isinstance(node, yaml.SequenceNode) and isinstance(part, int)
                  and 0 <= part < len(node.value)):
                found = node.value[part]
                mark = found.start_mark
            if found is None:
                break
            node = found
        return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def read_yaml(
    path: Path,
    what: str,
    error_type: type[ExporterError],
    loader: type[yaml.SafeLoader] = yaml.SafeLoader,
) -> Any:
    """Parse the UTF-8 YAML document at `path` with `loader` (a `SafeLoader` or a subclass).

    Returns what the loader builds (None for an empty document); its shape is the caller's to
    check. `what` names the file in messages ("config file", "rate card"). Every failure raises
    `error_type` with one line starting with the path:
    `<path>: cannot read <what>: <reason>`, `<path>: <what> is not UTF-8 (byte <n>)` or
    `<path>: line <l>, column <c>: <problem>` (no position when the parser gives none).
    """
    return read_yaml_positions(path, what, error_type, loader)[0]


def read_yaml_positions(
    path: Path,
    what: str,
    error_type: type[ExporterError],
    loader: type[yaml.SafeLoader] = yaml.SafeLoader,
) -> tuple[Any, Positions]:
    """As `read_yaml`, and where each part of the document is (to name a problem's position)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error_type(f"{path}: cannot read {what}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise error_type(f"{path}: {what} is not UTF-8 (byte {exc.start})") from exc
    parser = None
    try:
        # What `yaml.load` does, keeping the node tree for the positions.
        parser = loader(text)  # the reader checks the characters here already
        node = parser.get_single_node()
        data = parser.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        # `problem` is the parser's short reason; the full str() spans several lines
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise error_type(f"{path}: {where}{problem}") from exc
    finally:
        if parser is not None:
            parser.dispose()
    return data, Positions(node)
