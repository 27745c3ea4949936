"""Protected resource metadata (RFC 9728), without I/O: where it is, what it says.

``oauth-callback login URL`` with the URL of an MCP server (or any protected
resource) finds the resource's authorization server this way:
:func:`resource_metadata_flow` yields each metadata URL to ``GET`` (send back
a :class:`~oauth_callback.protocol.RawResponse`, or the transport error as a
:class:`~oauth_callback.errors.DiscoveryError`) and returns the
:class:`ResourceMetadata`, or ``None`` when no URL serves any (the URL is
then no protected resource: perhaps an issuer).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .errors import DiscoveryError
from .keys import default_key
from .protocol import RawResponse

__all__ = ["ResourceMetadata", "resource_metadata_flow", "resource_metadata_urls"]

_WELL_KNOWN = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True)
class ResourceMetadata:
    """What a protected resource says about itself: its identifier (``resource``,
    the RFC 8707 resource indicator to request tokens for) and its authorization
    servers' issuers, in the order it lists them."""

    resource: str
    authorization_servers: tuple[str, ...]


def resource_metadata_urls(url: str) -> list[str]:
    """The metadata URLs of the resource at ``url``, in order: RFC 9728 3.1's
    (the well-known path inserted between the host and the resource's path),
    then the origin's (what MCP clients also try)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise DiscoveryError(f"resource {url!r} must be an absolute https URL")
    path = parts.path.rstrip("/")
    urls = [urlunsplit((parts.scheme, parts.netloc, _WELL_KNOWN + path, "", ""))] if path else []
    urls.append(urlunsplit((parts.scheme, parts.netloc, _WELL_KNOWN, "", "")))
    return urls


def resource_metadata_flow(
    url: str, *, named: str | None = None,
) -> Generator[str, RawResponse | DiscoveryError, ResourceMetadata | None]:
    """Yield each metadata URL of ``url`` to ``GET``; return the first usable metadata.
    ``named``: the metadata URL the resource named (``WWW-Authenticate``'s
    ``resource_metadata``), tried first; its document, as the origin's, must name
    ``url`` or its origin (RFC 9728 3.3; the MCP SDK also accepts a parent resource).

    Usable: a ``200`` JSON object with a non-empty ``authorization_servers``
    list of strings. Its ``resource`` must name ``url`` (RFC 9728 3.3: the
    same key, :func:`~oauth_callback.keys.default_key`) or, from the origin's
    document, the origin; else :class:`DiscoveryError` (a metadata document
    for another resource must not steer the login). Returns ``None`` when no
    URL answers with usable metadata.
    """
    wanted = default_key(url)
    origin = urlunsplit((*urlsplit(url)[:2], "", "", ""))
    urls = resource_metadata_urls(url)
    exact = set(urls[:1]) if len(urls) == 2 else set()  # the path-aware URL's document
    if named and named not in urls:
        urls.insert(0, named)
    for metadata_url in urls:
        outcome = yield metadata_url
        if isinstance(outcome, DiscoveryError) or outcome.status != 200:
            continue
        try:
            data = json.loads(outcome.body)
        except (ValueError, RecursionError):
            continue
        servers = data.get("authorization_servers") if isinstance(data, dict) else None
        if not (isinstance(servers, list) and servers
                and all(isinstance(s, str) and s for s in servers)):
            continue
        resource = data.get("resource")
        if not isinstance(resource, str) or not resource:
            resource = url
        try:
            key = default_key(resource)
        except ValueError:
            key = None
        allowed = {wanted} if metadata_url in exact else {wanted, default_key(origin)}
        if key not in allowed:
            raise DiscoveryError(
                f"the protected resource metadata at {metadata_url} is for "
                f"{resource!r}, not {url!r}"
            )
        return ResourceMetadata(resource, tuple(servers))
    return None
