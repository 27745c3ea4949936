"""The package's loggers, which load :mod:`logging` only when first used.

``import logging`` costs milliseconds (it loads ``traceback``, ``string``...) that
``oauth-callback token KEY`` would pay on every run for loggers it never writes to.
:func:`get_logger` returns a stand-in for ``logging.getLogger(name)``: its first
attribute access (``log.warning``, ``log.isEnabledFor``...) imports :mod:`logging`
and hands over to the real logger, so handlers, levels and filters configured on it
work as on any logger. Every module of the package gets its logger here (a test checks).

:func:`when_used` lets the CLI configure logging at that moment instead of at start-up.
"""

from __future__ import annotations

from collections.abc import Callable

from ._lazy import TYPE_CHECKING

if TYPE_CHECKING:
    from logging import Logger
    from typing import Any

__all__ = ["get_logger", "when_used"]

_setups: list[Callable[[], None]] = []


def get_logger(name: str) -> Logger:
    """``logging.getLogger(name)``, imported at the first use."""
    return _LazyLogger(name)  # type: ignore[return-value]


def when_used(setup: Callable[[], None]) -> Callable[[], None]:
    """Run ``setup`` once, just before a logger of :func:`get_logger` is first used
    (not at all if none is). Returns a function that cancels it if it has not run."""
    _setups.append(setup)

    def cancel() -> None:
        if setup in _setups:
            _setups.remove(setup)

    return cancel


class _LazyLogger:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import logging

        while _setups:
            _setups.pop(0)()
        return getattr(logging.getLogger(self._name), attr)

    def __repr__(self) -> str:
        return f"<logger {self._name} (logging not used yet)>"
