"""Every touch of the ``mcp`` SDK's internals, in one place, checked at import.

:class:`~oauth_callback.mcp.provider.StoreOAuthClientProvider` subclasses the
SDK's ``OAuthClientProvider`` and overrides or calls private parts of it
(listed in :data:`PRIVATE_METHODS` and :data:`PRIVATE_ATTRIBUTES`); it also
re-drives the base ``_auth_flow`` generator and hides one SDK log record
(:func:`hide_logged`). Importing this module fails loudly, naming what is
missing, when an SDK release no longer has one of them, instead of breaking
in the middle of a login; and :func:`check_own_names` refuses an SDK that
grew an attribute of the same name as one of ours.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterable

from .._extras import requires_extra

with requires_extra("oauth_callback.mcp", "the MCP SDK", "mcp"):
    from mcp.client.auth import OAuthClientProvider, OAuthFlowError
    from mcp.client.auth.utils import extract_field_from_www_auth
    from mcp.shared.auth import (
        AuthorizationCodeResult,
        OAuthClientInformationFull,
        OAuthClientMetadata,
        OAuthToken,
    )
    from pydantic import AnyUrl, ValidationError

__all__ = [
    "PRIVATE_ATTRIBUTES",
    "PRIVATE_METHODS",
    "AnyUrl",
    "AuthorizationCodeResult",
    "OAuthClientInformationFull",
    "OAuthClientMetadata",
    "OAuthClientProvider",
    "OAuthFlowError",
    "OAuthToken",
    "ValidationError",
    "check_own_names",
    "extract_field_from_www_auth",
    "hide_logged",
]

#: Private methods of ``OAuthClientProvider`` the provider overrides or calls.
PRIVATE_METHODS = (
    "_initialize",
    "_refresh_token",
    "_auth_flow",
    "_add_auth_header",
    "_handle_refresh_response",
)
#: Instance attributes the SDK's ``__init__`` sets that the provider reads or sets.
PRIVATE_ATTRIBUTES = ("_initialized", "context")
#: The SDK logger whose records :func:`hide_logged` filters.
SDK_LOGGER = "mcp.client.auth.oauth2"

_ASSIGNED = re.compile(r"self\.(\w+)\s*(?::[^=]*)?=(?!=)")


def _assigned_attributes(cls: type) -> set[str]:
    try:
        source = inspect.getsource(vars(cls)["__init__"])
    except (KeyError, OSError, TypeError):  # pragma: no cover - no source (frozen builds)
        return set()
    return set(_ASSIGNED.findall(source))


def _check_sdk() -> None:
    missing = [
        name for name in PRIVATE_METHODS
        if not callable(getattr(OAuthClientProvider, name, None))
    ]
    assigned = _assigned_attributes(OAuthClientProvider)
    if assigned:
        missing += [name for name in PRIVATE_ATTRIBUTES if name not in assigned]
    if missing:
        raise ImportError(
            "oauth_callback.mcp does not support this version of the mcp SDK: "
            f"OAuthClientProvider no longer has {', '.join(missing)}; "
            "install a supported version (pip install 'oauth-callback[mcp]')"
        )


_check_sdk()


def check_own_names(cls: type, overrides: Iterable[str] = PRIVATE_METHODS) -> None:
    """Refuse (``ImportError``) an SDK whose provider defines a name ``cls`` defines
    itself (a method or an attribute its ``__init__`` sets), other than ``overrides``."""
    sdk_names = set(dir(OAuthClientProvider)) | _assigned_attributes(OAuthClientProvider)
    ours = {n for n in vars(cls) if not n.startswith("__") and n != "_abc_impl"}
    ours |= _assigned_attributes(cls)
    clashes = sorted((ours & sdk_names) - set(overrides) - set(PRIVATE_ATTRIBUTES))
    if clashes:
        raise ImportError(
            f"the mcp SDK's OAuthClientProvider now defines {', '.join(clashes)}, which "
            f"{cls.__name__} defines too; this version of the SDK is not supported yet"
        )


def hide_logged(exc_type: type[BaseException]) -> None:
    """Drop the SDK's error log records whose exception is an ``exc_type`` (one we
    raise through the SDK's flow and handle ourselves)."""

    class _Hide(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not (record.exc_info and isinstance(record.exc_info[1], exc_type))

    logging.getLogger(SDK_LOGGER).addFilter(_Hide())
