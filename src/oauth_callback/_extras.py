"""Optional dependencies (the package's extras): one way to fail when one is missing.

A module that cannot work without an optional package imports it inside
:func:`requires_extra`, so the :class:`ImportError` a user sees names the extra
to install (``oauth-callback: error: ... pip install 'oauth-callback[redis]'``
on the command line, which recognises that wording). Pure: imports nothing but
``contextlib``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["requires_extra"]


@contextlib.contextmanager
def requires_extra(what: str, needs: str, extra: str) -> Iterator[None]:
    """Re-raise an :class:`ImportError` from the block as
    ``ImportError("<what> needs <needs>: pip install 'oauth-callback[<extra>]'")``,
    the original chained as its cause; anything else passes through unchanged."""
    try:
        yield
    except ImportError as exc:
        raise ImportError(f"{what} needs {needs}: pip install 'oauth-callback[{extra}]'") from exc
