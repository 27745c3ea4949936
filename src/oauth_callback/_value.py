"""Value classes without :mod:`dataclasses`: what the records on the start-up path use.

``import dataclasses`` loads :mod:`inspect` (with ``ast``, ``dis``, ``tokenize``): several
milliseconds, a third of the interpreter's own start, that every ``oauth-callback token
KEY`` would pay. The classes that command needs (the models, the file store's snapshot
and layout, :class:`~oauth_callback.manager.LogoutResult`) are declared as dataclasses
are, with annotated fields and defaults, under :func:`valueclass`; type checkers treat them
as dataclasses (:pep:`681`). Other modules use :mod:`dataclasses` freely.

What :func:`valueclass` gives a class, as ``@dataclass`` would:

1. ``__init__`` taking the fields in order (positionally or by name), each annotated
   class attribute with a default being optional; :func:`field` gives a
   ``default_factory``. Then ``__post_init__`` runs, if the class has one.
2. ``__eq__``: equal when the other is of the same class with equal fields (in order).
3. ``__repr__`` ``Name(field=value, ...)``, unless ``repr=False``. A ``__repr__`` or
   ``__eq__`` the class defines itself is kept (as by ``@dataclass``).
4. ``frozen=True`` (the default): assigning or deleting an attribute raises
   :class:`dataclasses.FrozenInstanceError` (``__init__`` and ``__post_init__`` set
   fields with ``object.__setattr__``); ``__hash__`` hashes the fields unless the class
   defines its own. ``frozen=False``: unhashable, as a mutable dataclass.
5. ``__match_args__``: the field names; fields after one annotated :data:`KW_ONLY`
   (``_: KW_ONLY``) are keyword-only.
6. ``eq=False``: no ``__eq__`` or ``__hash__`` of its own (identity, as ``object``).

:func:`replace` is ``dataclasses.replace``: a new instance from the fields and the changes.
"""

from __future__ import annotations

from collections.abc import Callable

from ._lazy import TYPE_CHECKING

if TYPE_CHECKING:
    from dataclasses import KW_ONLY as KW_ONLY
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform

    _T = TypeVar("_T")
    _C = TypeVar("_C", bound=type)
else:
    KW_ONLY = "KW_ONLY"  # only ever an annotation (a string, by the __future__ import)

    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda decorated: decorated

__all__ = ["KW_ONLY", "field", "replace", "valueclass"]

_MISSING: Any = object()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], _T]) -> _T:
    """A field whose default is made anew for each instance: ``default_factory()``."""
    return _Factory(default_factory)  # type: ignore[return-value]


def _frozen(name: str) -> AttributeError:
    from dataclasses import FrozenInstanceError  # only on a mistake: its import is the cost

    return FrozenInstanceError(f"cannot assign to field {name!r}")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def valueclass(*, frozen: bool = True, eq: bool = True, repr: bool = True) -> Callable[[_C], _C]:
    """Make the decorated class a value class (see the module docstring)."""

    def make(cls: _C) -> _C:
        annotated = [(name, str(kind)) for name, kind in cls.__annotations__.items()
                     if not str(kind).startswith("ClassVar")]
        kinds = [kind for _, kind in annotated]
        # A field annotated KW_ONLY ends the positional ones (it is not a field itself).
        positional = kinds.index("KW_ONLY") if "KW_ONLY" in kinds else len(kinds)
        names = tuple(name for name, kind in annotated if kind != "KW_ONLY")
        defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
        post_init = getattr(cls, "__post_init__", None)
        setter = object.__setattr__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if len(args) > positional:
                raise TypeError(f"{cls.__name__}() takes {positional} positional arguments "
                                f"but {len(args)} were given")
            for name, arg in zip(names, args, strict=False):
                if name in kwargs:
                    raise TypeError(f"{cls.__name__}() got multiple values for {name!r}")
                kwargs[name] = arg
            for name in names:
                given = kwargs.pop(name, _MISSING)
                if given is _MISSING:
                    given = defaults.get(name, _MISSING)
                    if given is _MISSING:
                        raise TypeError(f"{cls.__name__}() missing argument {name!r}")
                    if isinstance(given, _Factory):
                        given = given.make()
                setter(self, name, given)
            if kwargs:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument "
                                f"{next(iter(kwargs))!r}")
            if post_init is not None:
                post_init(self)

        def __eq__(self: Any, other: object) -> bool:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return _fields(self, names) == _fields(other, names)

        cls.__init__ = __init__  # type: ignore[misc]
        if eq and "__eq__" not in cls.__dict__:  # the class's own is kept, as by dataclass
            cls.__eq__ = __eq__  # type: ignore[assignment,method-assign]
        cls.__match_args__ = names[:positional]  # type: ignore[attr-defined,misc]
        cls.__value_fields__ = names  # type: ignore[attr-defined]  # every field, keyword-only too
        for name, default in defaults.items():
            if isinstance(default, _Factory):
                delattr(cls, name)
        if repr and "__repr__" not in cls.__dict__:  # e.g. one that hides a secret
            def __repr__(self: Any) -> str:
                shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
                return f"{cls.__name__}({shown})"

            cls.__repr__ = __repr__  # type: ignore[assignment,method-assign]
        if frozen:
            def __setattr__(self: Any, name: str, value: Any) -> None:
                raise _frozen(name)

            def __delattr__(self: Any, name: str) -> None:
                raise _frozen(name)

            cls.__setattr__ = __setattr__  # type: ignore[assignment,method-assign]
            cls.__delattr__ = __delattr__  # type: ignore[assignment,method-assign]
            if eq and cls.__dict__.get("__hash__") is None:
                def __hash__(self: Any) -> int:
                    return hash(_fields(self, names))

                cls.__hash__ = __hash__  # type: ignore[assignment,method-assign]
        elif eq:
            cls.__hash__ = None  # type: ignore[assignment]
        return cls

    return make


def _fields(obj: object, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(getattr(obj, n) for n in names)


def replace(obj: _T, **changes: Any) -> _T:
    """A copy of the value ``obj`` with ``changes`` applied (``__post_init__`` runs again)."""
    for name in obj.__value_fields__:  # type: ignore[attr-defined]
        changes.setdefault(name, getattr(obj, name))
    return obj.__class__(**changes)
