"""Reading one YAML file with one-line errors, shared by the config file and the rate card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from exporter.errors import ExporterError


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
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error_type(f"{path}: cannot read {what}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise error_type(f"{path}: {what} is not UTF-8 (byte {exc.start})") from exc
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - loader is a SafeLoader (subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        # `problem` is the parser's short reason; the full str() spans several lines
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise error_type(f"{path}: {where}{problem}") from exc
