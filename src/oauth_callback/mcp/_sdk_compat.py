"""Every touch of the ``mcp`` SDK's internals, in one place, checked at import.

:class:`~oauth_callback.mcp.provider.StoreOAuthClientProvider` subclasses the
SDK's ``OAuthClientProvider`` and overrides or calls private parts of it
(listed in :data:`PRIVATE_METHODS` and :data:`PRIVATE_ATTRIBUTES`); it also
re-drives the base ``_auth_flow`` generator, recognizes the registration
request it yields (:func:`registration_url`, to keep the RFC 7592 fields its
``OAuthClientInformationFull`` model drops) and hides one SDK log record
(:func:`hide_logged`). Importing this module fails loudly, naming what is
missing, when an SDK release no longer has one of them, instead of breaking
in the middle of a login; and :func:`check_own_names` refuses an SDK that
grew an attribute of the same name as one of ours, and any name of ours on
the subclass without the :data:`OWN_PREFIX` (``_oc_``) that keeps them apart.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterable

from .._extras import requires_extra

with requires_extra("oauth_callback.mcp", "the MCP SDK", "mcp"):
    from mcp.client.auth import OAuthClientProvider, OAuthFlowError
    from mcp.client.auth.oauth2 import OAuthContext
    from mcp.client.auth.utils import (
        create_client_registration_request,
        extract_field_from_www_auth,
    )
    from mcp.shared.auth import (
        AuthorizationCodeResult,
        OAuthClientInformationFull,
        OAuthClientMetadata,
        OAuthToken,
    )
    from pydantic import AnyUrl, ValidationError

__all__ = [
    "PRIVATE_ATTRIBUTES",
    "OWN_PREFIX",
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
    "registration_url",
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
#: The prefix of every name our subclass adds (attributes and methods), so a
#: future SDK attribute cannot collide with one of ours.
OWN_PREFIX = "_oc_"

_ASSIGNED = re.compile(r"self\.(\w+)\s*(?::[^=]*)?=(?!=)")


def _assigned_attributes(cls: type) -> set[str]:
    """The instance attributes any method of ``cls`` itself assigns (``self.x = ...``)."""
    names: set[str] = set()
    for member in vars(cls).values():
        function = getattr(member, "__func__", member)
        if not inspect.isfunction(function):
            continue
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):  # pragma: no cover - no source (frozen builds)
            continue
        names.update(_ASSIGNED.findall(source))
    return names


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
    """Check the names ``cls`` (a subclass of the SDK's provider) defines itself: its
    methods and the attributes any of its methods assign.

    Refuses (``ImportError``) an SDK whose provider defines one of them, other than
    ``overrides`` and :data:`PRIVATE_ATTRIBUTES`; and (``TypeError``) a name of ours
    without :data:`OWN_PREFIX`, which a later SDK release could take.
    """
    sdk_names = set(dir(OAuthClientProvider)) | _assigned_attributes(OAuthClientProvider)
    ours = {n for n in vars(cls) if not n.startswith("__") and n != "_abc_impl"}
    ours |= _assigned_attributes(cls)
    ours -= set(overrides) | set(PRIVATE_ATTRIBUTES)
    clashes = sorted(ours & sdk_names)
    if clashes:
        raise ImportError(
            f"the mcp SDK's OAuthClientProvider now defines {', '.join(clashes)}, which "
            f"{cls.__name__} defines too; this version of the SDK is not supported yet"
        )
    unprefixed = sorted(n for n in ours if not n.startswith(OWN_PREFIX))
    if unprefixed:
        raise TypeError(
            f"{cls.__name__} defines {', '.join(unprefixed)} on the SDK's provider without "
            f"the {OWN_PREFIX!r} prefix (a later SDK release may use the name)"
        )


def registration_url(context: OAuthContext) -> str:
    """Where the SDK's flow sends its dynamic client registration (RFC 7591) now:
    the request it builds, with its own fallback to ``<origin>/register``."""
    base = context.get_authorization_base_url(context.server_url)
    request = create_client_registration_request(
        context.oauth_metadata, context.client_metadata, base
    )
    return str(request.url)


def hide_logged(exc_type: type[BaseException]) -> None:
    """Drop the SDK's error log records whose exception is an ``exc_type`` (one we
    raise through the SDK's flow and handle ourselves)."""

    class _Hide(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not (record.exc_info and isinstance(record.exc_info[1], exc_type))

    logging.getLogger(SDK_LOGGER).addFilter(_Hide())
