"""``_value.valueclass``: the dataclass-like value classes of the start-up path behave as
the dataclasses they replace (``__init__``, ``__eq__``, ``__hash__``, frozen, replace)."""

from __future__ import annotations

import dataclasses

import pytest

from oauth_callback._value import KW_ONLY, field, replace, valueclass


@valueclass()
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x must not be negative")


@valueclass()
class Pair:
    a: int
    b: str


@valueclass(frozen=False, eq=False, repr=False)
class Settings:
    name: str
    _: KW_ONLY
    retries: int = 3


def test_init_binds_positional_then_keyword_with_defaults() -> None:
    assert (Point(1).x, Point(1).y, Point(1, 2).y, Point(x=1, y=5).y) == (1, 0, 2, 5)
    assert Point(1).tags == [] and Point(1).tags is not Point(1).tags  # a new list each
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Point(1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for 'x'"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="takes 3 positional"):
        Point(1, 2, [], 4)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="negative"):
        Point(-1)


def test_eq_hash_repr_and_frozen() -> None:
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(2, 1)
    with pytest.raises(TypeError, match="unhashable"):
        hash(Point(1, 2))  # a list field, as in a dataclass
    assert hash(Pair(1, "a")) == hash(Pair(1, "a")) == hash((1, "a"))
    assert Point(1, 2) != (1, 2, [])
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"
    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.x  # type: ignore[misc]
    assert Point.__match_args__ == ("x", "y", "tags")  # type: ignore[attr-defined]


def test_replace_makes_a_new_checked_value() -> None:
    p = Point(1, 2)
    assert replace(p, y=7) == Point(1, 7) and p.y == 2
    with pytest.raises(ValueError, match="negative"):
        replace(p, x=-1)


def test_keyword_only_and_identity_classes() -> None:
    s = Settings("a", retries=5)
    assert (s.name, s.retries, Settings("b").retries) == ("a", 5, 3)
    with pytest.raises(TypeError, match="takes 1 positional"):
        Settings("a", 5)  # type: ignore[misc]
    s.retries = 1  # not frozen
    assert s.retries == 1
    assert s != Settings("a", retries=1) and s == s  # eq=False: identity
    assert hash(s) == object.__hash__(s)
    assert "Settings object" in repr(s)  # repr=False: object's


def test_mutable_value_is_unhashable_and_compares_by_fields() -> None:
    @valueclass(frozen=False)
    class Box:
        v: int

    box = Box(1)
    box.v = 2
    assert box == Box(2)
    with pytest.raises(TypeError, match="unhashable"):
        hash(box)


def test_replace_keeps_keyword_only_fields() -> None:
    """``replace`` copies every field, the keyword-only ones too (as ``dataclasses.replace``)."""
    s = Settings("a", retries=5)
    r = replace(s, name="b")
    assert (r.name, r.retries) == ("b", 5)


def test_a_class_own_repr_and_eq_are_kept_as_a_dataclass_keeps_them() -> None:
    """A value class that hides a secret in its own ``__repr__`` (or compares in its own
    ``__eq__``) keeps it under ``@valueclass()``, as under ``@dataclass``: the
    decorator's field-by-field repr would show the secret."""

    def declare(decorate: object) -> type:
        class Credential:
            name: str
            secret: str

            def __repr__(self) -> str:
                return f"Credential(name={self.name!r}, secret=<hidden>)"

            def __eq__(self, other: object) -> bool:
                return isinstance(other, Credential) and other.name == self.name

        return decorate(Credential)  # type: ignore[operator, no-any-return]

    for decorate in (dataclasses.dataclass(frozen=True), valueclass()):
        cls = declare(decorate)
        shown = repr(cls("api", "s3cr3t"))
        assert shown == "Credential(name='api', secret=<hidden>)", decorate
        assert cls("api", "one") == cls("api", "two"), decorate
