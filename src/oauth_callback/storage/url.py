"""Open a store from a string: what the CLI's ``--store`` and config files accept.

* ``PATH`` (no scheme), or ``file:PATH``: :class:`FileStore` at ``PATH`` (``~`` expanded)
* ``file:`` alone or ``None``: :class:`FileStore` at its default path
* ``memory:``: a new :class:`MemoryStore`
* ``sqlite:PATH`` (or ``sqlite://PATH``): :class:`SQLiteStore` at ``PATH`` (``~`` expanded)
* ``keyring:SERVICE`` (or ``keyring://SERVICE``; ``keyring:`` alone: service
  ``oauth-callback``): :class:`~oauth_callback.storage.keyring.KeyringStore`, the OS
  keychain (needs ``oauth-callback[keyring]``)
* ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS): one Redis server
* ``redis+cluster://[user:password@]HOST:PORT[,HOST:PORT...]``, ``rediss+cluster://...``:
  a Redis Cluster (any reachable nodes; the others are discovered)
* ``redis+sentinel://[user:password@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``,
  ``rediss+sentinel://...``: the primary that the Sentinels at ``HOST:PORT...`` call
  ``SERVICE``, found again after a failover (the password is the primary's; the
  Sentinels' own is ``sentinel_password=``)

  (every Redis form: :class:`~oauth_callback.storage.redis.RedisStore`, needs
  ``oauth-callback[redis]``; parameters: :data:`REDIS_PARAMETERS`)

Every scheme takes ``encryption=keyring|env:NAME|file:PATH``: the store is
wrapped in an :class:`~oauth_callback.storage.encrypted.EncryptedStore` with the
key from that source (needs ``oauth-callback[encryption]``), e.g.
``file:~/.mcp/tokens.json?encryption=env:OAUTH_CALLBACK_KEY``,
``sqlite:PATH?encryption=keyring``, ``redis://host/0?encryption=file:/run/secrets/oc.key``.

The grammar, exactly:

1. A string that starts with ``SCHEME:`` (a letter, then two or more characters
   in total of letters, digits, ``+``, ``-``, ``.``; before any ``/``) is a URL.
   Its scheme must be one of :data:`SCHEMES`, else :class:`ValueError` lists them
   (``redis+clustr://...`` is never taken for a directory). A one-letter "scheme"
   is a Windows drive (``C:\\tokens.json``): a path.
2. Anything else is a path, taken literally (``?``, ``%`` and ``#`` included).
   A path that looks like a URL is written ``file:PATH`` (or ``./PATH``).
3. In a URL, ``?`` starts the query: ``name=value`` pairs joined by ``&``,
   percent-decoded. Each scheme takes the parameters listed in its
   :class:`Scheme`; parameters registered with :func:`register_parameter` without
   schemes apply to every scheme. An unknown or repeated parameter is a
   :class:`ValueError` naming it. In ``file:``, ``sqlite:`` and ``keyring:``
   the part before the query is percent-decoded too (``%3F`` for a ``?`` in a
   path, ``%25`` for ``%``).

Adding a parameter for every store (e.g. ``encryption=``) is one
:func:`register_parameter` call whose ``wrap`` turns the opened store into the
final one; backends never see it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from .base import TokenStore
from .file import ENV_VAR, FileStore, url_scheme
from .memory import MemoryStore

__all__ = [
    "REDIS_PARAMETERS",
    "REDIS_SCHEMES",
    "SCHEMES",
    "Parameter",
    "Scheme",
    "StoreURL",
    "open_store",
    "parse_store_url",
    "register_parameter",
    "url_scheme",
]

_USERINFO = re.compile(r"(//[^/@?#]*?:)[^/@?#]*@")
_SECRET_PARAM = re.compile(r"([?&][^=&]*password=)[^&]*")


@dataclass(frozen=True)
class StoreURL:
    """A store URL split into its parts (query validated, nothing opened yet).

    ``body`` is what follows ``SCHEME:`` up to the query (for a bare path: the
    whole string). ``params`` maps each parameter to its percent-decoded value.
    ``display`` is the URL with any password replaced by ``***``: use it, not
    the original, in messages.
    """

    scheme: str
    body: str
    params: Mapping[str, str]
    display: str
    #: A bare path (no scheme written): taken literally.
    literal: bool = False

    def path(self) -> str:
        """The body of a path-like URL: ``//`` dropped, percent-decoded (bare paths: as given)."""
        if self.literal:
            return self.body
        body = self.body[2:] if self.body.startswith("//") else self.body
        return unquote(body, errors="surrogateescape")


@dataclass(frozen=True)
class Parameter:
    """A query parameter a store URL may carry.

    ``schemes``: the schemes that take it (``None``: every scheme). ``wrap``,
    for a parameter of every scheme: ``wrap(store, value, url)`` returns the
    store :func:`open_store` hands out (the backend never sees the parameter).
    A scheme-specific parameter has no ``wrap``: the scheme's opener reads it.
    """

    name: str
    description: str
    schemes: frozenset[str] | None = None
    wrap: Callable[[TokenStore, str, StoreURL], TokenStore] | None = None


@dataclass(frozen=True)
class Scheme:
    """A store URL scheme: its syntax (for messages) and the function that opens it."""

    name: str
    syntax: str
    open: Callable[[StoreURL, bool], TokenStore] = field(repr=False)


#: Parameters of every ``redis*`` URL; ``RedisStore`` reads them. (The TLS ones
#: only mean something with ``rediss``.)
REDIS_PARAMETERS: dict[str, str] = {
    "prefix": "prefix of every Redis key the store writes (default oauth-callback)",
    "db": "database number (also written as the URL's /DB)",
    "socket_timeout": "seconds, bound on every network wait (default 5)",
    "client_name": "CLIENT SETNAME of the connections",
    "ssl_ca_certs": "CA bundle that verifies the server (rediss)",
    "ssl_certfile": "client certificate (rediss)",
    "ssl_keyfile": "client certificate's key (rediss)",
    "ssl_cert_reqs": "none, optional or required (default required; rediss)",
    "ssl_check_hostname": "true or false (default true; rediss)",
    "replicas": "replicas that must acknowledge (WAIT) every write and refresh-lock "
                "acquisition (default 1 with Sentinel, else 0)",
    "replicas_timeout": "seconds to wait for those acknowledgements (default 1)",
    "sentinel_username": "user for the Sentinels (sentinel; default none)",
    "sentinel_password": "password for the Sentinels (sentinel; default none)",
}
#: The schemes :class:`~oauth_callback.storage.redis.RedisStore` opens.
REDIS_SCHEMES = frozenset(
    {"redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"}
)

_PARAMETERS: dict[str, Parameter] = {
    name: Parameter(name, description, REDIS_SCHEMES)
    for name, description in REDIS_PARAMETERS.items()
}


def register_parameter(parameter: Parameter) -> None:
    """Make ``parameter`` known to :func:`parse_store_url` and :func:`open_store`.

    Registering a name twice is an error (one meaning per name).
    """
    if parameter.name in _PARAMETERS:
        raise ValueError(f"store URL parameter {parameter.name!r} is already registered")
    if parameter.schemes is not None and parameter.wrap is not None:
        raise ValueError("a parameter with a wrap applies to every scheme (schemes=None)")
    _PARAMETERS[parameter.name] = parameter


def _open_file(url: StoreURL, durable: bool) -> TokenStore:
    path = url.path()
    return FileStore(path or None, durable=durable)


def _open_memory(url: StoreURL, durable: bool) -> TokenStore:
    if url.body:
        raise ValueError(f"store URL {url.display!r}: memory: takes nothing after the colon")
    return MemoryStore()


def _open_sqlite(url: StoreURL, durable: bool) -> TokenStore:
    path = url.path()
    if not path:
        raise ValueError(f"store URL {url.display!r} names no database file; use sqlite:PATH")
    from .sqlite import SQLiteStore  # imports sqlite3: only when asked for

    return SQLiteStore(path, durable=durable)


def _open_keyring(url: StoreURL, durable: bool) -> TokenStore:
    from .keyring import DEFAULT_SERVICE, KeyringStore  # optional dependency

    return KeyringStore(url.path() or DEFAULT_SERVICE)


def _open_redis(url: StoreURL, durable: bool) -> TokenStore:
    from .redis import RedisStore  # optional dependency: imported only when asked for

    return RedisStore(url)


_NODES = "[user:password@]HOST:PORT[,HOST:PORT...]"
#: Every scheme :func:`open_store` knows, by name.
SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("file", "file:PATH (or a plain path)", _open_file),
        Scheme("sqlite", "sqlite:PATH", _open_sqlite),
        Scheme("keyring", "keyring:SERVICE", _open_keyring),
        Scheme("memory", "memory:", _open_memory),
        Scheme("redis", "redis://[user:password@]HOST[:PORT][/DB]", _open_redis),
        Scheme("rediss", "rediss://... (redis:// over TLS)", _open_redis),
        Scheme("redis+cluster", f"redis+cluster://{_NODES}", _open_redis),
        Scheme("rediss+cluster", "rediss+cluster://... (over TLS)", _open_redis),
        Scheme("redis+sentinel", f"redis+sentinel://{_NODES}/SERVICE[/DB]", _open_redis),
        Scheme("rediss+sentinel", "rediss+sentinel://... (over TLS)", _open_redis),
    )
}
_HINTS = {
    "redis+tls": "rediss", "redis+ssl": "rediss", "redis-cluster": "redis+cluster",
    "redis-sentinel": "redis+sentinel", "sqlite3": "sqlite", "unix": "redis",
}


def _mask(url: str) -> str:
    """``url`` with the password of its ``//user:password@`` part replaced by ``***``."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def _unknown_scheme(scheme: str, display: str) -> ValueError:
    known = ", ".join(f"{s.name}:" for s in SCHEMES.values())
    hint = _HINTS.get(scheme.lower())
    extra = f" (did you mean {hint}:?)" if hint in SCHEMES else ""
    return ValueError(
        f"unknown store URL scheme {scheme!r} in {display!r}{extra}; known schemes: {known} "
        "(a path that looks like a URL is written file:PATH or ./PATH)"
    )


def parse_store_url(url: str, *, schemes: frozenset[str] | None = None) -> StoreURL:
    """Split ``url`` into scheme, body and validated parameters (see the module docstring).

    Raises :class:`ValueError` naming the scheme or parameter for an unknown
    scheme (or one outside ``schemes``), an unknown or repeated parameter, or
    a malformed query. Never opens anything.
    """
    display = _mask(url)
    written = url_scheme(url)
    if written is None:
        return StoreURL("file", url, {}, url, literal=True)  # a path, taken literally
    scheme = written.lower()
    if scheme not in SCHEMES or (schemes is not None and scheme not in schemes):
        if scheme in SCHEMES:
            raise ValueError(f"store URL {display!r}: expected one of {sorted(schemes or ())}")
        raise _unknown_scheme(written, display)
    body, sep, query = url[len(written) + 1:].partition("?")
    params: dict[str, str] = {}
    if sep and query:
        for item in query.split("&"):
            if not item:
                continue
            if "=" not in item:
                raise ValueError(
                    f"store URL {display!r}: query item {unquote(item)!r} is not NAME=VALUE"
                )
            raw_name, _, raw_value = item.partition("=")
            name, value = unquote(raw_name), unquote(raw_value)  # "+" stays "+"
            parameter = _PARAMETERS.get(name)
            if parameter is None or (
                parameter.schemes is not None and scheme not in parameter.schemes
            ):
                raise ValueError(
                    f"unknown parameter {name!r} in store URL {display!r}; "
                    f"{scheme}: takes {_parameters_of(scheme)}"
                )
            if name in params:
                raise ValueError(f"parameter {name!r} is given twice in store URL {display!r}")
            params[name] = value
    return StoreURL(scheme, body, params, display)


def _parameters_of(scheme: str) -> str:
    names = sorted(
        p.name for p in _PARAMETERS.values() if p.schemes is None or scheme in p.schemes
    )
    return ", ".join(names) if names else "no parameters"


def _wrap_encryption(store: TokenStore, value: str, url: StoreURL) -> TokenStore:
    from .key_sources import parse_key_source

    try:
        source = parse_key_source(value)
        from .encrypted import EncryptedStore  # optional dependency: cryptography
    except (ValueError, ImportError) as exc:
        store.close()
        raise type(exc)(f"store URL {url.display!r}: encryption={value}: {exc}") from None
    return EncryptedStore(store, source)


register_parameter(Parameter(
    "encryption",
    "keyring, env:NAME or file:PATH: encrypt every record with the key from there "
    "(EncryptedStore; needs oauth-callback[encryption])",
    wrap=_wrap_encryption,
))


def open_store(url: str | None = None, *, durable: bool = True) -> TokenStore:
    """Return the store that ``url`` names.

    ``None`` or ``""``: the store ``$OAUTH_CALLBACK_STORE`` names (a path or any
    store URL), else the default :class:`FileStore`. Raises :class:`ValueError`
    for an unknown scheme or parameter (never opens a file store by mistake).
    ``durable`` applies to the file and SQLite stores.
    """
    if url is None or url == "":
        url = os.environ.get(ENV_VAR) or None
    if url is None:
        return FileStore(durable=durable)
    parsed = parse_store_url(url)
    own = {
        name: value for name, value in parsed.params.items()
        if _PARAMETERS[name].wrap is None
    }
    backend_url = StoreURL(parsed.scheme, parsed.body, own, parsed.display, parsed.literal)
    store = SCHEMES[parsed.scheme].open(backend_url, durable)
    for name, value in parsed.params.items():
        wrap = _PARAMETERS[name].wrap
        if wrap is not None:
            store = wrap(store, value, parsed)
    return store
