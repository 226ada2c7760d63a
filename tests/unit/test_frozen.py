"""`fast_init` keeps every behaviour of the dataclass-generated constructor."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from exporter.frozen import fast_init


def _pair(**kw: object) -> tuple[type, type]:
    def make() -> type:
        @dataclass(frozen=True, slots=True, **kw)  # type: ignore[call-overload]
        class Item:
            name: str
            count: int = 3
            tags: list[str] = field(default_factory=list)

            def __post_init__(self) -> None:
                object.__setattr__(self, "name", self.name.strip())

        return Item

    stock, fast = make(), fast_init(make())
    return stock, fast


@pytest.mark.parametrize("args,kwargs", [
    (("  a ",), {}), (("b", 5), {}), (("c",), {"tags": ["x"]}), ((), {"name": "d", "count": 0}),
])
def test_same_values_as_the_generated_init(args: tuple, kwargs: dict) -> None:
    stock, fast = _pair()
    a, b = stock(*args, **kwargs), fast(*args, **kwargs)
    assert dataclasses.astuple(a) == dataclasses.astuple(b)
    assert b.name == b.name.strip()  # __post_init__ ran


def test_default_factory_gives_a_new_object_each_time() -> None:
    _, fast = _pair()
    one, two = fast("a"), fast("b")
    assert one.tags == [] and one.tags is not two.tags


def test_still_frozen_hashable_and_ordered() -> None:
    _, fast = _pair(order=True)
    item = fast("a", 1, ["t"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.count = 2
    assert fast("a", 1) == fast("a", 1) and fast("a", 1) < fast("a", 2)
    assert hash(fast("a", 1, ())) == hash(fast("a", 1, ()))
    assert dataclasses.replace(item, count=9).count == 9


def test_argument_errors_match_a_normal_call() -> None:
    _, fast = _pair()
    with pytest.raises(TypeError):
        fast()
    with pytest.raises(TypeError):
        fast("a", 1, [], 4)
    with pytest.raises(TypeError):
        fast("a", nope=1)


def test_refuses_what_it_does_not_support() -> None:
    @dataclass(slots=True)
    class Mutable:
        x: int

    @dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclass(frozen=True, slots=True)
    class Computed:
        x: int
        y: int = field(init=False, default=0)

    for cls in (Mutable, NoSlots, Computed):
        with pytest.raises(TypeError):
            fast_init(cls)
