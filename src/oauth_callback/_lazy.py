"""Lazy module attributes (PEP 562): names imported from their module on first access.

The one implementation behind ``oauth_callback`` and ``oauth_callback.storage``,
which keep ``import`` cheap (no HTTP client, ``sqlite3``, ``redis`` or
``keyring`` until a name that needs them is used).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

#: ``typing.TYPE_CHECKING`` without importing :mod:`typing` (milliseconds every start of
#: the CLI would pay): ``False`` at run time; type checkers take any ``TYPE_CHECKING`` as
#: true. The modules ``oauth-callback token KEY`` loads import this one.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = ["TYPE_CHECKING", "import_module", "lazy_exports"]


def import_module(name: str, package: str | None = None) -> ModuleType:
    """:func:`importlib.import_module` for an absolute ``name`` or one relative to
    ``package`` (``.sub``), without importing :mod:`importlib` (and :mod:`warnings`)."""
    if name.startswith("."):
        name = f"{package}{name}"
    __import__(name)
    return sys.modules[name]


def lazy_exports(
    package: str, namespace: dict[str, Any], names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``(__getattr__, __dir__)`` serving ``names`` (name -> relative module).

    The first access imports the module and caches the value in ``namespace``
    (the module's ``globals()``), so later accesses cost nothing.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
