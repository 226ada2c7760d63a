"""`gc_paused`: the collector is off inside, restored after, re-entrant across threads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from exporter.gcpause import gc_paused


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_paused_inside_and_restored_after_even_on_error() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_nested_blocks_restore_only_at_the_outermost() -> None:
    gc.enable()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_blocks_in_two_threads() -> None:
    gc.enable()
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        with gc_paused():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(10)
    with gc_paused():
        pass
    assert not gc.isenabled(), "the other thread's block is still open"
    release.set()
    t.join(10)
    assert gc.isenabled()


def test_cycles_made_inside_are_collected_after() -> None:
    gc.enable()
    gc.collect()

    class Node:
        ref: object = None

    with gc_paused():
        a, b = Node(), Node()
        a.ref, b.ref = b, a
        alive = len([o for o in gc.get_objects() if isinstance(o, Node)])
        del a, b
    assert alive == 2
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, Node)]
