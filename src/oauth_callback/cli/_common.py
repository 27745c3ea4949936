"""What every command module of the CLI shares: exit codes, error type, output, store access.

Imports nothing heavy: a command module adds what it needs itself.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time

from .._lazy import TYPE_CHECKING
from .._log import get_logger
from ._exit import *  # noqa: F403 - the exit statuses, used by every command module
from ._exit import EXIT_FAILURE, EXIT_USAGE
from ._exit import __all__ as _EXIT_STATUSES

if TYPE_CHECKING:
    from ..models import Tokens
    from ..storage.base import TokenStore

__all__ = [
    *_EXIT_STATUSES,
    "PROG",
    "SECRET_ENV_VAR",
    "STORE_ENV_VAR",
    "CliError",
    "err",
    "human_duration",
    "human_expiry",
    "info",
    "iso",
    "local_time",
    "mode_line",
    "opened_stores",
    "require_tokens",
    "store_from_args",
    "store_from_url",
]

PROG = "oauth-callback"

SECRET_ENV_VAR = "OAUTH_CALLBACK_CLIENT_SECRET"
#: The environment variable naming the default store (``--store``); the same name as
#: :data:`oauth_callback.storage.file.ENV_VAR` (a test checks), kept here so that
#: ``--help`` needs no store module.
STORE_ENV_VAR = "OAUTH_CALLBACK_STORE"

log = get_logger("oauth_callback.cli")


class CliError(Exception):
    """A failure to report as ``oauth-callback: error: <message>`` with exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- output


def err(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def human_duration(seconds: float) -> str:
    """``42 s``, ``59 min``, ``3 h``, ``12 d`` (rounded down)."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s} s"
    if s < 90 * 60:
        return f"{s // 60} min"
    if s < 48 * 3600:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def human_expiry(expires_at: float | None, now: float | None = None) -> str:
    """``in 59 min``, ``expired 3 h ago`` or ``never`` (no expiry known)."""
    if expires_at is None:
        return "never"
    delta = expires_at - (time.time() if now is None else now)
    if delta > 0:
        return f"in {human_duration(delta)}"
    return f"expired {human_duration(delta)} ago"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    import datetime

    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).isoformat(
        timespec="seconds"
    ).replace("+00:00", "Z")


def local_time(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def mode_line(path: str) -> str:
    st = os.stat(path)
    return f"{stat.filemode(st.st_mode)} ({stat.S_IMODE(st.st_mode):04o}) {path}"


# --------------------------------------------------------------------------- store access


opened_stores: list[TokenStore] = []  # closed when main() returns


def store_from_args(args: argparse.Namespace) -> TokenStore:
    """The store of ``--store`` (else ``$OAUTH_CALLBACK_STORE``, else the default file)."""
    url: str | None = getattr(args, "store", None)
    return store_from_url(url if url is not None else os.environ.get(STORE_ENV_VAR) or None)


def store_from_url(url: str | None, option: str | None = None) -> TokenStore:
    """Open the store ``url`` names (closed when :func:`main` returns); a bad URL is a
    usage error, prefixed with ``option`` (``--from``) when given."""
    try:
        store = _open_store(url)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}" if option else str(exc), EXIT_USAGE) from None
    opened_stores.append(store)
    return store


def _open_store(url: str | None) -> TokenStore:
    """:func:`~oauth_callback.storage.url.open_store`, loading the URL parser only for a URL:
    a path (or nothing: the default file) opens its :class:`FileStore` directly."""
    from ..storage.file import FileStore, url_scheme

    text = url or os.environ.get(STORE_ENV_VAR) or None  # as open_store() reads them
    if text is None:
        return FileStore()
    if url_scheme(text) is None:
        return FileStore(text)  # a bare path is taken literally (rule 2 of the grammar)
    from ..storage.url import open_store

    return open_store(text)


def require_tokens(store: TokenStore, key: str) -> Tokens:
    tokens = store.get(key)
    if tokens is None:
        raise CliError(f"no tokens stored under {key!r} in {store.describe()}", EXIT_FAILURE)
    return tokens
