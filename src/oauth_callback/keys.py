"""The one key scheme: the store key of a server URL (pure: no I/O is imported).

Every part of oauth-callback that chooses a store key on its own derives it
here: ``oauth-callback login`` (from the URL it is given, the ``--issuer``, or
the origin of ``--authorize-url`` / ``--token-url``), and the MCP helpers
:func:`~oauth_callback.mcp.browser_auth`,
:func:`~oauth_callback.mcp.client_credentials_auth` and
:func:`~oauth_callback.mcp.identity_assertion_auth` (from the MCP server URL).
So ``oauth-callback login https://mcp.example.com/mcp`` and
``browser_auth("https://mcp.example.com/mcp")`` use one key,
``mcp.example.com/mcp``, and see each other's tokens.

:func:`default_key` -- the rules, applied in this order:

1. The URL must be absolute ``http`` or ``https`` with a valid host (no
   space, control character, quote, angle or curly bracket, ``|``, ``^``,
   backslash or backtick) and port (:class:`ValueError` otherwise). Leading
   and trailing whitespace is ignored.
2. Scheme and host are compared without case (lower-cased). A non-ASCII host
   is written in its IDNA 2008 (punycode) form, as the HTTP client encodes it
   (kept as written when it has none: no request can reach it). An IPv6 address keeps its brackets
   (``[::1]``), lower-cased.
3. The port is kept unless it is the scheme's default (443 for ``https``, 80
   for ``http``), whether given or not: ``https://h:443`` is ``https://h``.
4. The path is kept as written (case and percent-escapes included: servers
   may tell them apart), without its trailing ``/`` (``/mcp/`` is ``/mcp``,
   ``/`` is nothing).
5. User info (``user:password@``), the query and the fragment are ignored:
   they never name another server, and a secret in them never reaches a key.
6. The key is ``host[:port][path]`` for ``https``, and
   ``http://host[:port][path]`` for ``http``: a plaintext URL never shares the
   tokens of its ``https`` namesake.

So ``HTTPS://Example.COM:443/mcp/?x=1#f`` is ``example.com/mcp``,
``https://accounts.example.com`` is ``accounts.example.com``,
``http://127.0.0.1:8000/mcp`` is ``http://127.0.0.1:8000/mcp`` and
``https://[::1]:8443/`` is ``[::1]:8443``.

What a key may contain: a store accepts any non-empty, valid Unicode text
except its reserved names (:meth:`TokenStore.check_key
<oauth_callback.storage.base.TokenStore.check_key>`; ``$oauth_callback`` for
the file and SQLite stores). A derived key is such a text: it is never empty,
and a store refuses one that is a reserved name (a host named
``$oauth_callback``) with a typed error. A key given explicitly (``--key``, ``key=``) is
used as it is.

Keys written by earlier versions (:func:`legacy_keys`): ``oauth-callback
login`` used ``host[:port]`` (the port only when written in the URL), the MCP
helpers ``"mcp:" + scheme://host[:port]path``. :func:`resolve_key` keeps
using such a key where it holds the login: a record is never copied or
moved to the new key, so no two copies of one login can drift apart, a
process of an earlier version sharing the store keeps working on the same
record, and scripts that name the old key (``oauth-callback token
127.0.0.1:8080``) keep working. Reads by a key of this scheme find such a
record too (:func:`find_key`: ``oauth-callback token example.com/mcp``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

if TYPE_CHECKING:
    from .models import ClientInfo
    from .storage.base import TokenStore

__all__ = ["default_key", "find_key", "key_url", "legacy_keys", "origin_key", "resolve_key"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Characters no host name (RFC 3986 reg-name or IP literal) may hold.
_NOT_IN_HOSTS = frozenset('<>"{}|\\^`')
#: The ClientInfo.extra field where the MCP helpers record the server URL.
_SERVER_URL_FIELD = "mcpServerUrl"
#: The prefix of the keys the MCP helpers derived before this scheme.
_LEGACY_MCP_PREFIX = "mcp:"


def _split(url: str) -> tuple[SplitResult, str, str, int | None]:
    """``(parts, scheme, host, port)`` of an absolute http(s) URL, else ValueError."""
    if not isinstance(url, str):
        raise TypeError(f"a server URL must be a str, not {type(url).__name__}")
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError for a port out of range or not a number
    except ValueError as exc:
        raise ValueError(f"cannot derive a store key from {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(
            f"cannot derive a store key from {url!r}: not an absolute http(s) URL"
        )
    if any(c.isspace() or not c.isprintable() or c in _NOT_IN_HOSTS for c in parts.hostname):
        raise ValueError(f"cannot derive a store key from {url!r}: not a valid host name")
    return parts, scheme, parts.hostname.lower(), port


def _host(hostname: str) -> str:
    if ":" in hostname:  # an IPv6 address (urlsplit removed the brackets)
        return f"[{hostname}]"
    if hostname.isascii():
        return hostname
    # IDNA 2008, as the HTTP client (httpx) encodes the host it connects to. Not the
    # stdlib's IDNA 2003 codec: it maps names onto other hosts' (faß.de -> fass.de,
    # full-width letters -> ASCII), which would hand one server's tokens to another.
    import idna  # a dependency of httpx; here: only a non-ASCII host needs it

    try:
        return str(idna.encode(hostname).decode("ascii"))
    except (idna.IDNAError, UnicodeError):
        return hostname  # not encodable (no HTTP request can reach it): kept as written


def default_key(url: str) -> str:
    """The store key of the server at ``url`` (see the module docstring for the rules).

    ``default_key("HTTPS://Example.COM:443/mcp/")`` is ``"example.com/mcp"``;
    ``default_key("http://127.0.0.1:8000/mcp?x=1")`` is ``"http://127.0.0.1:8000/mcp"``.
    Raises :class:`ValueError` for a URL that is not absolute http(s).
    """
    parts, scheme, hostname, port = _split(url)
    netloc = _host(hostname)
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    key = netloc + parts.path.rstrip("/")
    return key if scheme == "https" else f"{scheme}://{key}"


def origin_key(url: str) -> str:
    """:func:`default_key` of ``url``'s origin (its path dropped): the key of a login
    given only endpoint URLs (``--authorize-url``, ``--token-url``), so a browser
    login and a machine login of one provider share it."""
    parts, scheme, _, _ = _split(url)
    return default_key(f"{scheme}://{parts.netloc}")


def legacy_keys(url: str) -> tuple[str, ...]:
    """The keys earlier versions derived from ``url``, other than :func:`default_key`'s.

    ``oauth-callback login``: the host, plus ``:port`` when the URL wrote one
    (any scheme, any path). The MCP helpers: ``"mcp:"`` + the lower-cased
    scheme and host, the port unless the default, the path without its
    trailing ``/``.
    """
    parts, scheme, hostname, port = _split(url)
    cli = f"{hostname}:{port}" if port else hostname
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    mcp = f"{_LEGACY_MCP_PREFIX}{scheme}://{netloc}{parts.path.rstrip('/')}"
    new = default_key(url)
    return tuple(dict.fromkeys(k for k in (mcp, cli) if k != new))


def _names(client: ClientInfo, key: str) -> bool:
    """Whether the client registration ``client`` was made for the server whose key is ``key``."""
    urls = [client.issuer, client.extra.get(_SERVER_URL_FIELD)]
    origins = [client.authorization_endpoint, client.token_endpoint]
    for derive, candidates in ((default_key, urls), (origin_key, origins)):
        for url in candidates:
            if not isinstance(url, str):
                continue
            try:
                if derive(url) == key:
                    return True
            except ValueError:
                continue
    return False


def resolve_key(store: TokenStore, url: str) -> str:
    """The key to use in ``store`` for the server at ``url``.

    :func:`default_key` of ``url``, unless ``store`` holds nothing there (no
    tokens, no client registration) and holds this server's login under one of
    its :func:`legacy_keys`: then that legacy key, which is used from then on
    for reads and writes alike (the record stays where it is; see the module
    docstring). An ``mcp:`` legacy key names exactly one server URL, so it is
    taken as it is; a ``host[:port]`` one was shared by every URL of the host,
    so it is taken only when its client registration names this server (its
    issuer, MCP server URL or endpoints' origin).

    The only function here that reads a store (through the ``store`` given).
    Store errors propagate; a key the store cannot hold is skipped.
    """
    key = default_key(url)
    if _holds(store, key):
        return key
    for legacy in legacy_keys(url):
        try:
            store.check_key(legacy)
        except ValueError:
            continue
        client = store.get_client(legacy)
        if legacy.startswith(_LEGACY_MCP_PREFIX):
            if client is not None or store.get(legacy) is not None:
                return legacy
        elif client is not None and _names(client, key):
            return legacy
    return key


def key_url(key: str) -> str | None:
    """The URL a key of this scheme was derived from (``https://`` unless the key says
    ``http://``), or ``None`` when ``key`` is not such a key (then no URL derives it)."""
    url = key if key.startswith("http://") else f"https://{key}"
    try:
        return url if default_key(url) == key else None
    except ValueError:
        return None


def find_key(store: TokenStore, key: str) -> str:
    """The key under which ``store`` holds what ``key`` names: ``key`` itself, unless
    nothing is stored there and ``key`` is a key of this scheme whose server's login an
    earlier version stored under its old key (:func:`resolve_key` of :func:`key_url`).
    So ``oauth-callback token example.com/mcp`` finds tokens stored under
    ``mcp:https://example.com/mcp``."""
    if _holds(store, key):
        return key
    url = key_url(key)
    return key if url is None else resolve_key(store, url)


def _holds(store: TokenStore, key: str) -> bool:
    return store.get_client(key) is not None or store.get(key) is not None
