"""Markers set once per folder: a folder's conftest.py marks every test collected below it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest


def mark_below(folder: Path, items: Sequence[pytest.Item], marker: pytest.MarkDecorator) -> None:
    """Add `marker` to every item whose file is in `folder` or below it.

    `pytest_collection_modifyitems` sees every collected item, not only its folder's, hence the
    check of each item's path.
    """
    for item in items:
        if item.path.is_relative_to(folder):
            item.add_marker(marker)
