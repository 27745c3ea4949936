"""RedisStore: tokens in Redis, shared by every process and machine that reaches it.

One server (``redis://``), a Redis Cluster (``redis+cluster://``) or a primary
found through Sentinel (``redis+sentinel://``); see :mod:`oauth_callback.storage.url`
for the URLs and ``docs/redis.md`` for deployment settings and the failover
guarantee.

Layout (``prefix`` defaults to ``oauth-callback``)::

    <prefix>:{<b64>}:tokens          the Tokens record of one store key
    <prefix>:{<b64>}:client          its ClientInfo record
    <prefix>:{<b64>}:session         its OAuthSession record
    <prefix>:{<b64>}:refresh-lock    the refresh lock (SET NX PX, owner token)
    <prefix>:{<b64>}:refresh-events  pub/sub channel: "released", "changed"
    <prefix>:seq                     a counter that orders keys() by creation

``<b64>`` is the unpadded urlsafe base64 of the store key (UTF-8), so every key
maps to a Redis key reversibly and without glob or hash-tag characters. The
``{...}`` hash tag puts all keys of one store key in one Redis Cluster slot, so
every write and the refresh lock of a key run on one node, atomically.
Each value is ASCII JSON: ``{"key": ..., "seq": n, "w": <nonce>, "record": {...}}``
where ``record`` is the npm-shaped record of :mod:`oauth_callback.models` and
``w`` identifies the write (a write retried after a lost reply is recognised).

* :meth:`keys` walks ``SCAN MATCH`` (never ``KEYS``; on a cluster, every
  primary) and orders the keys by creation (``seq``), as the file store keeps them.
* Every write is an optimistic transaction on the key's slot: read, run the
  update function, then one Lua compare-and-set that writes only if the value
  is still the one read. ``update`` retries on a conflicting write and gives up
  with :class:`StoreLockTimeout` after ``retry_timeout`` seconds.
* With ``replicas=N`` every write and every refresh-lock acquisition waits
  (``WAIT``) until ``N`` replicas acknowledged it; fewer acknowledgements make
  the write raise :class:`StoreUnavailableError` (it reached the primary and
  may or may not survive a failover).
* :meth:`clear` deletes with ``SCAN`` + ``DEL`` in batches; it is **not**
  atomic against writers running at the same time.
* Connection failures raise :class:`StoreUnavailableError` naming the
  location (never a password; every error is scrubbed of the passwords in any
  form); the store works again once Redis (or a new primary) is back.

Durability is the server's: an acknowledged write survives a Redis crash only
with ``appendonly yes`` and ``appendfsync always`` (``everysec`` may lose the
last second; RDB snapshots alone lose more). Use ``maxmemory-policy
noeviction`` (the default) so Redis never evicts tokens under memory pressure.
The store needs the commands GET, SET, DEL, INCR, SCAN, EVAL, EVALSHA, PUBLISH,
SUBSCRIBE and WAIT (an ACL user restricted to ``~<prefix>:*`` and ``&<prefix>:*``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import math
import os
import random
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from .._extras import requires_extra

with requires_extra("RedisStore", "redis-py", "redis"):
    import redis
    import redis.exceptions
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

from .._log import get_logger
from ..errors import StoreCorruptError, StoreError, StoreLockTimeout, StoreUnavailableError
from ..models import Tokens
from .base import Section, TokenStore
from .records import corrupt, decode_record, load_json
from .url import REDIS_PARAMETERS, REDIS_SCHEMES, StoreURL, parse_store_url

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

log = get_logger("oauth_callback.storage")

#: Prefix of every Redis key the store writes.
DEFAULT_PREFIX = "oauth-callback"

_SUFFIX: dict[str, str] = {"tokens": "tokens", "clients": "client", "sessions": "session"}
_SECTION_OF_SUFFIX = {v: k for k, v in _SUFFIX.items()}
_LOCK_SUFFIX = "refresh-lock"
_EVENTS_SUFFIX = "refresh-events"
_B64 = re.compile(r"[A-Za-z0-9_-]*")
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")
#: Fields of a token response that give the refresh token's life, in seconds.
_REFRESH_LIFE_FIELDS = ("refresh_token_expires_in", "refresh_expires_in")

_BATCH = 500

# KEYS[1] lock key; ARGV[1] owner token; ARGV[2] lease in ms. Returns 0 when taken,
# else the milliseconds until the current holder's lease ends (when to try again).
# Taking a lock we already own (a retried call whose reply was lost) counts as success.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2]) return 0
end
local left = redis.call('pttl', KEYS[1])
if left < 1 then return 1000 end
return left
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS[1] lock key; ARGV[1] owner token, ARGV[2] the events channel. (A channel is
# not a key: declaring it would make the script fail while its slot migrates.)
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('publish', ARGV[2], 'released')
  return 1
end
return 0
"""
# Compare-and-set of one record. KEYS[1] the record; KEYS[2], only when the writer
# holds the refresh lock of its store key, that lock (same slot). ARGV[1] '1' if a
# value was read, ARGV[2] the value read, ARGV[3] the new value ('' deletes),
# ARGV[4] TTL in ms ('0': none), ARGV[5] the writer's lock owner token (or ''),
# ARGV[6] the events channel to announce the change on (or '').
# Returns 0: the value changed since it was read (nothing written); 1: written;
# 2: written, but the writer's refresh lock is no longer its own (lease expired or
# lost in a failover): the caller reports it.
_CAS = """
local cur = redis.call('get', KEYS[1])
local new = ARGV[3]
if new ~= '' and cur == new then
  redis.call('set', KEYS[1], cur, 'KEEPTTL')
  return 1
end
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if new == '' then
  redis.call('del', KEYS[1])
elseif ARGV[4] ~= '0' then
  redis.call('set', KEYS[1], new, 'PX', ARGV[4])
else
  redis.call('set', KEYS[1], new)
end
if ARGV[6] ~= '' then redis.call('publish', ARGV[6], 'changed') end
if ARGV[5] ~= '' and redis.call('get', KEYS[2]) ~= ARGV[5] then return 2 end
return 1
"""

# Transient: the server (or a cluster slot, during a failover or resharding) is unreachable.
_CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)


def _encode_key(key: str) -> str:
    raw = key.encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_key(text: str) -> str | None:
    if not text or not _B64.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return raw.decode("utf-8", "surrogatepass")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _flag(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"store URL parameter {name}={value!r} must be true or false")


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"store URL parameter {name}={value!r} must be a positive number")
    return seconds


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"store URL parameter {name}={value!r} must be a whole number")
    return int(value)


#: Parameters that are the store's, not the connection's.
_STORE_PARAMETERS = frozenset({"prefix", "replicas", "replicas_timeout"})


def _client_options(url: StoreURL) -> dict[str, Any]:
    """redis-py keyword arguments for the connection parameters of ``url``."""
    options: dict[str, Any] = {}
    for name, value in url.params.items():
        if name not in REDIS_PARAMETERS:
            raise ValueError(
                f"parameter {name!r} of store URL {url.display!r} is not RedisStore's: "
                "open the URL with open_store(), which applies it"
            )
        if name in _STORE_PARAMETERS:
            continue
        if name == "socket_timeout":
            seconds = _seconds(name, value)
            options["socket_timeout"] = options["socket_connect_timeout"] = seconds
        elif name == "ssl_check_hostname":
            options[name] = _flag(name, value)
        elif name == "db":
            options["db"] = _count(name, value)
        elif name == "ssl_cert_reqs":
            if value not in ("none", "optional", "required"):
                raise ValueError(
                    f"store URL parameter ssl_cert_reqs={value!r} must be none, optional "
                    "or required"
                )
            options[name] = value
        else:
            options[name] = value
    if not url.scheme.startswith("rediss"):
        tls = [name for name in options if name.startswith("ssl_")]
        if tls:
            raise ValueError(
                f"store URL {url.display!r}: {', '.join(tls)} need TLS (rediss://)"
            )
    if "db" in options and not url.scheme.endswith(("redis", "rediss")):
        raise ValueError(f"store URL {url.display!r}: db= is for redis:// and rediss:// only")
    return options


def _nodes(url: StoreURL, default_port: int) -> tuple[list[tuple[str, int]], str, dict[str, str]]:
    """``([(host, port), ...], path, auth)`` of a ``SCHEME://[user:pass@]H:P[,H:P...]/path`` URL."""
    if not url.body.startswith("//"):
        raise ValueError(f"store URL {url.display!r}: expected {url.scheme}://HOST:PORT[,...]")
    netloc, _, path = url.body[2:].partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    auth: dict[str, str] = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            auth["username"] = unquote(user)
        if colon:
            auth["password"] = unquote(password)
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else rest
        else:
            host, _, port_text = item.partition(":")
        if not host or (port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536)):
            raise ValueError(
                f"store URL {url.display!r}: {item!r} is not HOST[:PORT] "
                f"(nodes are separated by commas)"
            )
        nodes.append((host, int(port_text) if port_text else default_port))
    return nodes, path, auth


def _retry(attempts: int) -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), attempts)


class _Connection:
    """What :func:`_connect` opens: the client, where it is (for messages) and its secrets."""

    def __init__(
        self, client: Any, location: str, secrets: tuple[str, ...], kind: str
    ) -> None:
        self.client = client
        self.location = location
        self.secrets = secrets
        self.kind = kind  # "single", "cluster" or "sentinel"


@functools.lru_cache(maxsize=1)
def _driver_info() -> dict[str, Any]:
    """``driver_info=`` for the clients the store opens: made once, shared by every connection.

    Without it, redis-py versions that have ``DriverInfo`` build one per
    connection, reading their version from the installed package metadata
    (~0.3 ms of CPU each): a fleet whose 8 threads per process open their pools
    at once paid that 8 times per process, on the refresher's critical path.
    The connections identify as ``redis-py(oauth-callback_v<version>)`` in
    ``CLIENT LIST``. Older redis-py versions keep their import-time default.
    """
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # pragma: no cover - redis-py without DriverInfo
        return {}
    from .. import __version__

    return {"driver_info": DriverInfo().add_upstream_driver("oauth-callback", __version__)}


def _connect(url: StoreURL, socket_timeout: float) -> _Connection:
    """Open the redis-py client ``url`` names (no network traffic yet)."""
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        **_driver_info(),
        **_client_options(url),
    }
    tls = url.scheme.startswith("rediss")
    kind = url.scheme.partition("+")[2] or "single"
    client: Any
    if kind == "single":
        try:
            client = redis.Redis.from_url(
                f"{url.scheme}:{url.body}", retry=_retry(3), **options
            )
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL {url.display!r}: {exc}") from None
        return _given_client(client)
    if tls:
        options["ssl"] = True
    if kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        nodes, path, auth = _nodes(url, 6379)
        if path not in ("", "0"):
            raise ValueError(
                f"store URL {url.display!r}: a Redis Cluster has one database; "
                "drop the /DB part"
            )
        cluster_options: dict[str, Any] = {**auth, **options}
        where = ",".join(f"{host}:{port}" for host, port in nodes)
        secrets = tuple(v for k, v in auth.items() if k == "password" and v)
        try:  # redis-py asks the nodes for the slot layout now
            client = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in nodes],  # type: ignore[no-untyped-call]
                retry=_retry(3), **cluster_options,
            )
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
            detail = str(exc)
            for secret in secrets:
                detail = detail.replace(secret, "***").replace(quote(secret, safe=""), "***")
            raise StoreUnavailableError(
                f"Redis at cluster {where} is unavailable ({type(exc).__name__}: {detail})",
                path=f"cluster {where}",
            ) from None
        return _Connection(client, f"cluster {where}", secrets, kind)
    # Sentinel
    from redis.sentinel import Sentinel

    nodes, path, auth = _nodes(url, 26379)
    service, _, db_text = path.partition("/")
    if not service:
        raise ValueError(
            f"store URL {url.display!r} names no service: "
            f"{url.scheme}://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"
        )
    service = unquote(service)
    db = _count("/DB", db_text) if db_text else 0
    sentinel_options: dict[str, Any] = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
    }
    for name in ("username", "password"):
        value = url.params.get(f"sentinel_{name}")
        if value:
            sentinel_options[name] = value
    for name, value in options.items():
        if name.startswith("ssl"):
            sentinel_options[name] = value
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    # A failover takes seconds: retry a connection error for a few of them.
    client = sentinel.master_for(  # type: ignore[no-untyped-call]
        service, db=db, retry=_retry(8), **auth, **options
    )
    where = ",".join(f"{host}:{port}" for host, port in nodes)
    secrets = tuple(
        value for value in (auth.get("password"), sentinel_options.get("password")) if value
    )
    return _Connection(client, f"sentinel {where}/{service}/{db}", secrets, kind)


def _given_client(client: Any) -> _Connection:
    """Describe a client the caller made (``redis.Redis`` or ``RedisCluster``)."""
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        kwargs = client.nodes_manager.connection_kwargs
        nodes = ",".join(
            f"{node.host}:{node.port}" for node in client.get_primaries()  # type: ignore[no-untyped-call]
        ) if client.nodes_manager.nodes_cache else "?"
        password = kwargs.get("password")
        return _Connection(client, f"cluster {nodes}", (password,) if password else (), "cluster")
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return _Connection(client, "redis", (), "single")
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        location = f"{kwargs['path']}/{db}"
    else:
        location = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"
    password = kwargs.get("password")
    return _Connection(client, location, (str(password),) if password else (), "single")


class _Script:
    """One Lua script of the store, run in one round trip whatever the server's script cache.

    ``EVALSHA``; ``EVAL`` (the server caches the script) the first time this
    process runs it and whenever the server lost its cache (``NOSCRIPT``: a
    restart, a failover, ``SCRIPT FLUSH``, a cluster node that never ran it).
    redis-py's ``register_script`` takes three round trips then (``EVALSHA``,
    ``SCRIPT LOAD``, ``EVALSHA``: the first refresh after a restart paid them
    for the lock, and again for the release), and one more (``SCRIPT EXISTS``)
    every time it runs in a pipeline. In a pipeline (the ``WAIT`` of
    ``replicas``) it is always ``EVAL``: an error only comes back at ``execute()``.
    """

    def __init__(self, client: Any, text: str) -> None:
        self._client = client
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Redis's script name
        self._cached = False

    def __call__(
        self, *, keys: Sequence[str], args: Sequence[Any], client: Any = None
    ) -> Any:
        if client is not None:
            return client.eval(self.text, len(keys), *keys, *args)
        if self._cached:
            try:
                return self._client.evalsha(self.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                pass
        result = self._client.eval(self.text, len(keys), *keys, *args)
        self._cached = True
        return result


class _Flight:
    """One ``GET`` that several threads wait for."""

    __slots__ = ("done", "ok", "raw", "sent", "started")

    def __init__(self, sent: float = math.inf) -> None:
        self.started = threading.Event()  # set when this flight's GET may be sent
        self.done = threading.Event()
        self.sent = sent  # when it was let go (its GET is sent after): inf until then
        self.ok = False
        self.raw: Any = None


class _SharedReads:
    """``GET`` of one key by threads of this process at the same time, sent once.

    A read joins only a ``GET`` sent *after* it began, so it sees every write
    completed before it (reads stay linearizable): a thread that finds a
    ``GET`` of its key in flight waits for the next one, which the first
    thread arriving during the flight sends, for all of them, once that flight
    landed. When a fleet's threads find the same expired token at once (and
    again when they are woken by its replacement), a process sends two
    ``GET`` instead of one per thread and opens two connections instead of one
    per thread: CPU and round trips saved on the critical path of the one
    refresh. Each thread decodes the value itself (no mutable record is
    shared); when the shared ``GET`` failed, each sends its own (and gets its
    own error).

    Inside :meth:`since` a read may also join the ``GET`` in flight when it was
    sent after the given time: a waiter of the refresh lock checks the record
    when it heard of a change (or was handed the slot) on behalf of a call that
    began before, so any ``GET`` sent after that moment sees the change and is
    linearizable for the call: the first woken waiter's ``GET`` serves every
    waiter of the process.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._forked()
        _all_shared_reads.add(self)

    def _forked(self) -> None:
        """Start empty (also in a child process: the GETs in flight are the parent's)."""
        self._lock = threading.Lock()
        self._flying: dict[str, _Flight] = {}  # the GET in flight, per Redis key
        self._next: dict[str, _Flight] = {}  # the one to send when it lands
        self._since = threading.local()

    @contextlib.contextmanager
    def since(self, began: float) -> Iterator[None]:
        """Reads of this thread in the block may use a ``GET`` sent after ``began``
        (``time.monotonic()``): the caller's operation began before that."""
        before = getattr(self._since, "value", None)
        self._since.value = began
        try:
            yield
        finally:
            self._since.value = before

    def get(self, rkey: str) -> Any:
        since = getattr(self._since, "value", None)
        with self._lock:
            flight = self._flying.get(rkey)
            if flight is None:
                flight = self._flying[rkey] = _Flight(time.monotonic())
                flight.started.set()
                send = True
            elif since is not None and flight.sent >= since:
                send = False  # in flight, sent after what the caller's operation saw
            else:
                send = rkey not in self._next
                flight = self._next.setdefault(rkey, _Flight())
        if not send:
            flight.done.wait()
            return flight.raw if flight.ok else self._client.get(rkey)
        flight.started.wait()  # the flight before it landed
        try:
            flight.raw = self._client.get(rkey)
            flight.ok = True
            return flight.raw
        finally:
            with self._lock:
                following = self._next.pop(rkey, None)
                if following is None:
                    del self._flying[rkey]
                else:
                    self._flying[rkey] = following
                    following.sent = time.monotonic()
                    following.started.set()
            flight.done.set()


_all_shared_reads: weakref.WeakSet[_SharedReads] = weakref.WeakSet()


def _after_fork() -> None:
    for reads in list(_all_shared_reads):
        reads._forked()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork)


class RedisStore(TokenStore):
    """Tokens in Redis (redis-py, synchronous client).

    ``url_or_client`` is a ``redis://`` / ``rediss://`` (TLS) URL, e.g.
    ``rediss://user:password@host:6380/0?prefix=myapp`` (the parameters of
    :data:`~oauth_callback.storage.url.REDIS_PARAMETERS` may be given in the URL;
    any other is a ``ValueError``), or a ready ``redis.Redis`` client (not closed by
    :meth:`close`). ``socket_timeout`` bounds every network wait of a client
    the store creates.

    Expiry of token records (clients and sessions never expire):

    * ``ttl``: seconds a token record lives after its last write;
    * ``ttl_from_refresh=True``: a record whose ``extra`` carries
      ``refresh_token_expires_in`` or ``refresh_expires_in`` (seconds, as the
      token response sent them) expires that many seconds after it is written
      (never before its ``expires_at``). The clock restarts at every write, so
      a record may outlive its refresh token, never the reverse. Records
      without the field fall back to ``ttl``.

    Without either, records never expire (a write removes an earlier TTL).

    ``refresh_lock`` is a Redis lock with a ``lock_lease``-second lease that a
    background thread renews while it is held, so a crashed holder's lock
    expires by itself within the lease. ``retry_timeout`` bounds how long an
    update retries after conflicting writes.
    """

    def __init__(
        self,
        url_or_client: str | StoreURL | redis.Redis | redis.RedisCluster,
        *,
        prefix: str | None = None,
        ttl: float | None = None,
        ttl_from_refresh: bool = False,
        socket_timeout: float = 5.0,
        lock_lease: float = 30.0,
        retry_timeout: float = 10.0,
        replicas: int | None = None,
        replicas_timeout: float | None = None,
    ) -> None:
        if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
            raise ValueError("ttl must be a positive number of seconds or None")
        if not (math.isfinite(lock_lease) and lock_lease > 0):
            raise ValueError("lock_lease must be a positive number of seconds")
        params: Mapping[str, str] = {}
        if isinstance(url_or_client, (str, StoreURL)):
            url = (
                url_or_client if isinstance(url_or_client, StoreURL)
                else parse_store_url(url_or_client, schemes=REDIS_SCHEMES)
            )
            if url.scheme not in REDIS_SCHEMES:
                raise ValueError(f"store URL {url.display!r} is not a Redis URL")
            params = url.params
            connection = _connect(url, socket_timeout)
            self._owns_client = True
        else:
            connection = _given_client(url_or_client)
            self._owns_client = False
        self._client: Any = connection.client
        self.kind = connection.kind
        self.location = connection.location
        self._secrets = connection.secrets
        self.prefix = prefix if prefix is not None else (params.get("prefix") or DEFAULT_PREFIX)
        if not self.prefix:
            raise ValueError("prefix must not be empty")
        if replicas is None:
            replicas = (
                _count("replicas", params["replicas"]) if "replicas" in params
                else (1 if self.kind == "sentinel" else 0)
            )
        if replicas_timeout is None:
            replicas_timeout = (
                _seconds("replicas_timeout", params["replicas_timeout"])
                if "replicas_timeout" in params else 1.0
            )
        if replicas < 0 or not (math.isfinite(replicas_timeout) and replicas_timeout > 0):
            raise ValueError("replicas must be >= 0 and replicas_timeout a positive number")
        #: Replica acknowledgements (``WAIT``) every write and lock acquisition needs.
        self.replicas = replicas
        self.replicas_timeout = replicas_timeout
        self.ttl = ttl
        self.ttl_from_refresh = ttl_from_refresh
        self.lock_lease = lock_lease
        self.retry_timeout = retry_timeout
        self._pattern_prefix = _GLOB_SPECIAL.sub(r"\\\1", self.prefix)
        self._seq_key = f"{self.prefix}:seq"
        self._acquire_script = _Script(self._client, _ACQUIRE)
        self._renew_script = _Script(self._client, _RENEW)
        self._release_script = _Script(self._client, _RELEASE)
        self._cas_script = _Script(self._client, _CAS)
        self._reads = _SharedReads(self._client)

    def describe(self) -> str:
        """The Redis location (``host:port/db``, never the password) and key prefix."""
        return f"Redis {self.location} (prefix {self.prefix})"

    def __repr__(self) -> str:
        return f"RedisStore({self.location!r}, prefix={self.prefix!r})"

    # -- naming -------------------------------------------------------------

    def redis_key(self, section: Section | str, key: str) -> str:
        """The Redis key holding ``section`` (or ``"refresh-lock"``) of store key ``key``."""
        suffix = _SUFFIX.get(section, section)
        return f"{self.prefix}:{{{_encode_key(key)}}}:{suffix}"

    def _parse_redis_key(self, rkey: str) -> tuple[str, str] | None:
        """``(store key, suffix)`` of a Redis key this store names, else ``None``."""
        head = f"{self.prefix}:{{"
        if not rkey.startswith(head):
            return None
        tag, sep, suffix = rkey[len(head):].partition("}:")
        if not sep:
            return None
        key = _decode_key(tag)
        return None if key is None else (key, suffix)

    def _scan(self, suffix: str) -> Iterator[str]:
        match = f"{self._pattern_prefix}:{{*}}:{suffix}"
        for raw in self._client.scan_iter(match=match, count=1000):
            yield _text(raw)

    # -- errors -------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """``text`` with every secret of the connection (as given, percent-encoded or
        quoted) replaced by ``***``: servers and proxies may echo the ``AUTH``/``HELLO``
        arguments in their errors."""
        for secret in self._secrets:
            for form in {secret, quote(secret, safe=""), repr(secret)[1:-1]}:
                text = text.replace(form, "***")
        return text

    def _unavailable(self, exc: Exception) -> StoreUnavailableError:
        detail = self._scrub(str(exc))
        return StoreUnavailableError(
            f"Redis at {self.location} is unavailable ({type(exc).__name__}: {detail})",
            path=self.location,
        )

    def _failed(self, exc: redis.exceptions.RedisError) -> StoreError:
        if isinstance(exc, _CONNECTION_ERRORS):
            return self._unavailable(exc)
        return StoreError(
            f"Redis at {self.location} refused the operation "
            f"({type(exc).__name__}: {self._scrub(str(exc))})",
            path=self.location,
        )

    # -- values -------------------------------------------------------------

    def _decode(self, rkey: str, section: Section, raw: bytes | str | None) -> tuple[Any, int]:
        """``(value, seq)`` of a stored payload; ``(None, 0)`` when missing."""
        if raw is None:
            return None, 0
        what = f"Redis key {rkey} at {self.location}"
        hint = "Delete that Redis key to drop it"
        try:
            payload = load_json(raw)
            if not isinstance(payload, dict) or not isinstance(payload.get("record"), dict):
                raise ValueError("not a store payload")
            seq = payload.get("seq", 0)
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise ValueError("'seq' is not an integer")
        except ValueError as exc:
            raise corrupt(what, f"an unreadable value: {exc}", path=self.location,
                          hint=hint) from None
        return decode_record(section, payload["record"], what=what, path=self.location,
                             hint=hint), seq

    def _encode(self, key: str, seq: int, value: Any) -> str:
        # "w" tells this write from any other (a retry after a lost reply finds it).
        payload = {"key": key, "seq": seq, "w": secrets.token_hex(6), "record": value.to_record()}
        # ASCII JSON: any str key (even a lone surrogate) round-trips, whatever the
        # client's encoding settings.
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)

    def _ttl_ms(self, section: Section, value: Any) -> int | None:
        if section != "tokens":
            return None
        seconds = self.ttl
        if self.ttl_from_refresh and isinstance(value, Tokens):
            for name in _REFRESH_LIFE_FIELDS:
                life = value.extra.get(name)
                if (
                    isinstance(life, (int, float))
                    and not isinstance(life, bool)
                    and math.isfinite(life)
                    and life > 0
                ):
                    seconds = float(life)
                    remaining = value.expires_in()
                    if remaining is not None and remaining > seconds:
                        seconds = remaining
                    break
        return None if seconds is None else max(1, math.ceil(seconds * 1000))

    # -- TokenStore -----------------------------------------------------------

    def _read(self, section: Section, key: str) -> Any:
        rkey = self.redis_key(section, key)
        try:
            if section == "tokens" and _held_token(self, key):
                # The refresher's read under the lock: never queued behind other
                # threads' GET in flight (it is on the path to the token request).
                raw = self._client.get(rkey)
            else:
                raw = self._reads.get(rkey)
        except redis.exceptions.RedisError as exc:
            raise self._failed(exc) from None
        return self._decode(rkey, section, raw)[0]

    def _keys(self, section: Section) -> list[str]:
        found: dict[str, str] = {}  # redis key -> store key (SCAN may repeat keys)
        try:
            for rkey in self._scan(_SUFFIX[section]):
                parsed = self._parse_redis_key(rkey)
                if parsed is not None and parsed[1] == _SUFFIX[section]:
                    found[rkey] = parsed[0]
            order: list[tuple[float, str]] = []
            names = list(found)
            for start in range(0, len(names), _BATCH):
                batch = names[start:start + _BATCH]
                pipe = self._client.pipeline(transaction=False)
                for rkey in batch:
                    pipe.get(rkey)
                for rkey, raw in zip(batch, pipe.execute(), strict=True):
                    if raw is None:
                        continue  # deleted since the scan saw it
                    try:
                        seq: float = self._decode(rkey, section, raw)[1]
                    except StoreCorruptError:
                        seq = math.inf  # listed (so it can be deleted), last
                    order.append((seq, found[rkey]))
        except redis.exceptions.RedisError as exc:
            raise self._failed(exc) from None
        order.sort()
        return [key for _, key in order]

    def _run(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, int | None]:
        """Run ``script``; with ``replicas`` > 0 also ``WAIT`` on the same connection.

        Returns the script's result and how many replicas acknowledged it
        (``None`` when no acknowledgement is asked for).
        """
        if not self.replicas:
            return script(keys=keys, args=args), None
        if self.kind == "cluster":  # WAIT counts the replicas of the node that ran it
            target = self._client.get_redis_connection(self._client.get_node_from_key(keys[0]))
        else:
            target = self._client
        ms = max(1, math.ceil(self.replicas_timeout * 1000))
        pipe = target.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.execute_command("WAIT", self.replicas, ms)
        result, acks = pipe.execute()
        return result, int(acks)

    def _follow_primary(self) -> None:
        """Behind Sentinel, after a write or lock the replicas did not acknowledge: make
        the next attempt go to the primary the Sentinels name now.

        A planned failover leaves the old primary a primary, accepting writes with no
        replica left, until Sentinel demotes it (8 s or more later); the pool's
        connections still reach it, so every resend would land there, unacknowledged,
        until ``retry_timeout`` ran out. Asking the Sentinels (redis-py's
        ``SentinelConnectionPool.get_master_address``) moves the pool to a new primary:
        its idle connections are closed at once, those in use when they are given back,
        so no later attempt reaches the old node. While the Sentinels still name the
        old primary (the failover is under way) nothing changes and the resend waits
        as before, within ``retry_timeout``. Once the old primary is demoted nothing
        here is needed: Sentinel's demotion closes its client connections (redis-py
        reconnects through the Sentinels), and on a READONLY reply redis-py's Sentinel
        connection disconnects and its retry asks the Sentinels itself.
        """
        if self.kind != "sentinel":
            return
        try:
            self._client.connection_pool.get_master_address()
        except redis.exceptions.RedisError as exc:  # no Sentinel answers: the next try says
            log.debug("Redis at %s: no primary from the Sentinels (%s)", self.location,
                      type(exc).__name__)

    def _run_cas(
        self, keys: Sequence[str], args: Sequence[Any], deadline: float
    ) -> tuple[Any, int | None]:
        """The compare-and-set, sent again (same arguments, so a write that did happen
        is recognised) while a cluster slot is mid-migration (``TRYAGAIN``: the lock
        and the record of a fenced save are moved in different batches)."""
        delay = 0.01
        while True:
            try:
                return self._run(self._cas_script, keys, args)
            except (redis.exceptions.TryAgainError, redis.exceptions.ClusterError):
                if len(keys) < 2 or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _modify(self, section: Section, key: str, fn: Callable[[Any], Any]) -> Any:
        rkey = self.redis_key(section, key)
        announce = self.redis_key(_EVENTS_SUFFIX, key) if section == "tokens" else ""
        deadline = time.monotonic() + self.retry_timeout
        conflicts = 0
        delay = 0.001
        while True:
            try:
                raw = self._client.get(rkey)
                current, seq = self._decode(rkey, section, raw)
                new = fn(current)
                if new is current and not self.replicas:
                    return current
                if new is current:
                    # "Nothing to change" is decided on the primary too: after a
                    # failover a pooled connection may still read the demoted one,
                    # whose data can hold a write the new primary never got (a save
                    # whose acknowledgement failed). Writing back the value read
                    # fails there (READONLY), conflicts on a primary holding another
                    # value, and is waited for like any write.
                    payload = b"" if raw is None else raw
                    keys, owner, ttl = [rkey], "", None
                else:
                    if new is not None and current is None:
                        seq = int(self._client.incr(self._seq_key))
                    payload = "" if new is None else self._encode(key, seq, new)
                    ttl = None if new is None else self._ttl_ms(section, new)
                    owner = _held_token(self, key) if section == "tokens" else ""
                    keys = [rkey, self.redis_key(_LOCK_SUFFIX, key)] if owner else [rkey]
                args = [
                    "0" if raw is None else "1", b"" if raw is None else raw, payload,
                    str(ttl or 0), owner, "" if new is current else announce,
                ]
                result, acks = self._run_cas(keys, args, deadline)
                pause = 0.05
                while result and acks is not None and acks < self.replicas:
                    # Not on enough replicas (yet): send the same write again. On
                    # the same primary it is recognised and only waited for again;
                    # after a failover it lands on the new primary (or conflicts).
                    if time.monotonic() >= deadline:
                        break
                    self._follow_primary()
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
                    result, acks = self._run_cas(keys, args, deadline)
            except (redis.exceptions.MovedError, redis.exceptions.AskError):
                # Only from a node client (replicas > 0 on a cluster): the slot
                # moved and nothing ran there. Learn the new layout and go again.
                self._client.nodes_manager.initialize()
                result, acks = 0, None
            except redis.exceptions.RedisError as exc:
                raise self._failed(exc) from None
            if result == 0:
                conflicts += 1
                if time.monotonic() >= deadline:
                    raise StoreLockTimeout(
                        f"gave up updating {key!r} in Redis at {self.location} after "
                        f"{conflicts} conflicting writes in {self.retry_timeout:g}s",
                        path=self.location,
                    ) from None
                time.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, 0.05)
                continue
            if result == 2:
                log.error(
                    "the refresh lock of %r in Redis at %s was lost (its lease expired or a "
                    "failover dropped it) before these tokens were saved; another process may "
                    "have refreshed meanwhile. Saved all the same: they are what the provider "
                    "issued last to this process", key, self.location,
                )
            if acks is not None and acks < self.replicas:
                raise StoreUnavailableError(
                    f"the write of {key!r} to Redis at {self.location} was acknowledged by "
                    f"{acks} of the {self.replicas} replicas required (tried for "
                    f"{self.retry_timeout:g}s): it is on the primary and may be lost by a "
                    "failover",
                    path=self.location,
                )
            return new

    def clear(self) -> None:
        """Delete every token, client and session under the prefix (``SCAN`` + ``DEL``).

        Not atomic: a write that runs during ``clear`` may survive it. Refresh
        locks and the ordering counter are kept.
        """
        try:
            batch: list[str] = []
            for rkey in self._scan("*"):
                parsed = self._parse_redis_key(rkey)
                if parsed is None or parsed[1] not in _SECTION_OF_SUFFIX:
                    continue
                batch.append(rkey)
                if len(batch) >= _BATCH:
                    self._delete(batch)
                    batch = []
            if batch:
                self._delete(batch)
        except redis.exceptions.RedisError as exc:
            raise self._failed(exc) from None

    def _delete(self, rkeys: list[str]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for rkey in rkeys:  # one key per DEL: keys of a batch are in different slots
            pipe.delete(rkey)
        pipe.execute()

    def close(self) -> None:
        """Close the connections of a client the store created."""
        if self._owns_client:
            self._client.close()

    # -- refresh coordination -----------------------------------------------------

    def refresh_lock(self, key: str, *, timeout: float | None = None) -> RedisRefreshLock:
        """A lock on ``key`` shared by every client of this Redis (default timeout 60 s).

        ``SET <prefix>:{<key>}:refresh-lock <random token> NX PX <lease>``; it
        is released (compare-and-delete) only by its owner, renewed every
        third of the lease while held, and expires by itself within
        ``lock_lease`` seconds when its holder dies. Re-entrant within a thread.
        """
        self._check(key)
        return RedisRefreshLock(self, key, 60.0 if timeout is None else timeout)


# Holders in this process of one Redis lock share a thread lock, so threads
# queue locally (and a thread may re-enter) instead of polling Redis.
_registry_lock = threading.Lock()
_local_locks: weakref.WeakValueDictionary[str, _LocalHold] = weakref.WeakValueDictionary()
#: Longest sleep between two tries when no pub/sub notification can arrive.
_POLL_CAP = 0.1


def _held_token(store: RedisStore, key: str) -> str:
    """The owner token of ``key``'s refresh lock if the calling thread holds it, else ``""``."""
    hold = _local_locks.get(f"{store.location}|{store.redis_key(_LOCK_SUFFIX, key)}")
    if hold is not None and hold.depth > 0 and hold.owner == threading.get_ident():
        return hold.token
    return ""


class _LocalHold:
    """What the threads of this process share about one Redis lock.

    One thread at a time has the *slot* (``busy``): it is taking the Redis lock
    or holds it. The others wait on ``cv``; when the slot is given back
    (``generation`` moves on) they all wake at once and check, side by side,
    whether the record changed (``acquire_unless``) before queueing again.
    """

    __slots__ = (
        "__weakref__", "busy", "cv", "depth", "generation", "nudges", "owner", "renewer", "since",
        "stop", "token",
    )

    def __init__(self) -> None:
        self.cv = threading.Condition(threading.Lock())
        self.busy = 0  # ident of the thread that has the slot, 0 when free
        self.generation = 0
        self.nudges = 0  # moves on when the thread waiting in Redis hears of a change
        self.since = 0.0  # when the slot was last given back or a change last heard of
        self.depth = 0
        self.token = ""
        self.owner = 0  # ident of the thread holding the Redis lock (the save's fence)
        self.stop = threading.Event()
        self.renewer: threading.Thread | None = None


class RedisRefreshLock:
    """The context manager :meth:`RedisStore.refresh_lock` returns.

    Waiting: threads of one process queue on a thread lock; the first of them
    tries ``SET NX PX`` and, when the lock is taken, subscribes to the key's
    ``refresh-events`` channel and sleeps until the holder's release (or a
    change of the tokens record, see :meth:`acquire_unless`) is announced
    there, or the holder's lease ends (a crashed holder announces nothing).
    Polling is only the fallback when the subscription fails.
    """

    def __init__(self, store: RedisStore, key: str, timeout: float) -> None:
        self.store = store
        self.key = key
        self.timeout = timeout
        self.redis_key = store.redis_key(_LOCK_SUFFIX, key)
        self.channel = store.redis_key(_EVENTS_SUFFIX, key)
        ident = f"{store.location}|{self.redis_key}"
        with _registry_lock:
            hold = _local_locks.get(ident)
            if hold is None:
                hold = _LocalHold()
                _local_locks[ident] = hold
        self._hold = hold
        self._unreplicated = 0

    def __enter__(self) -> RedisRefreshLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _timed_out(self, why: str) -> StoreLockTimeout:
        return StoreLockTimeout(
            f"timed out after {self.timeout:g}s waiting for the refresh lock of {self.key!r} "
            f"in Redis at {self.store.location} ({why})",
            path=self.store.location,
        )

    def acquire(self) -> None:
        """Take the lock, waiting at most ``timeout`` seconds."""
        self._acquire(None)

    def acquire_unless(self, changed: Callable[[], bool]) -> bool:
        """Take the lock (``True``), or give up waiting as soon as ``changed()`` is true
        (``False``, the lock is not held).

        ``changed`` is called when another thread of this process that had the
        lock (or was waiting for it) lets go, and each time the key's tokens
        record is announced as changed (or a fallback poll comes round) while
        another process holds it: a
        waiter that sees the token it found expired replaced returns at once,
        without queueing for the lock only to find the work done.
        """
        return self._acquire(changed)

    def _acquire(self, changed: Callable[[], bool] | None) -> bool:
        hold = self._hold
        me = threading.get_ident()
        deadline = time.monotonic() + max(self.timeout, 0.0)
        while True:
            with hold.cv:
                if hold.busy == me:  # re-entry
                    hold.depth += 1
                    return True
                if hold.busy == 0:
                    hold.busy = me
                    break
                generation, nudges = hold.generation, hold.nudges
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out("held by another thread")
                hold.cv.wait(remaining)
                moved = hold.generation != generation or hold.nudges != nudges
                since = hold.since
            # Another thread of this process gave the slot back (it may have just
            # refreshed, or seen the record change), or the thread waiting in Redis
            # heard of a change. Checked by all waiters at once, with one GET.
            if moved and changed is not None and self._changed_since(changed, since):
                return False
        taken = False
        try:
            token = secrets.token_hex(16)
            if not self._acquire_remote(token, deadline, changed):
                return False
            hold.token = token
            hold.owner = me
            hold.stop = threading.Event()
            hold.renewer = threading.Thread(
                target=self._renew, args=(token, hold.stop),
                name=f"oauth-callback-redis-lock-renewer-{self.key}", daemon=True,
            )
            hold.renewer.start()
            hold.depth = 1
            taken = True
            return True
        finally:
            if not taken:
                self._give_back()

    def _changed_since(self, changed: Callable[[], bool], since: float) -> bool:
        """``changed()``, whose store reads may share a ``GET`` sent after ``since``: the
        moment the caller learned of a possible change (that change is older, and the
        caller's operation began before it), so one ``GET`` serves every woken waiter."""
        with self.store._reads.since(since):
            return changed()

    def _nudge(self, heard: float) -> None:
        """Wake this process's other waiters to check the record (a change was heard of
        at ``heard``)."""
        hold = self._hold
        with hold.cv:
            hold.nudges += 1
            hold.since = heard
            hold.cv.notify_all()

    def _give_back(self) -> None:
        hold = self._hold
        with hold.cv:
            hold.busy = 0
            hold.generation += 1
            hold.since = time.monotonic()
            hold.cv.notify_all()

    def _try(self, token: str, lease_ms: int) -> int:
        """One attempt: 0 when the lock is ours (and acknowledged), else ms until the next."""
        store = self.store
        try:
            result, acks = store._run(store._acquire_script, [self.redis_key], [token, lease_ms])
        except (redis.exceptions.MovedError, redis.exceptions.AskError):
            store._client.nodes_manager.initialize()
            return 10
        except redis.exceptions.RedisError as exc:
            raise store._failed(exc) from None
        if result:
            return int(result)
        if acks is not None and acks < store.replicas:
            # Only on the primary: a failover now could promote a replica without
            # it. Give it back and try again (a replica may be catching up).
            self._unreplicated += 1
            try:
                store._release_script(keys=[self.redis_key], args=[token, self.channel])
            except redis.exceptions.RedisError as exc:
                raise store._failed(exc) from None
            store._follow_primary()
            return 100
        return 0

    def _acquire_remote(
        self, token: str, deadline: float, changed: Callable[[], bool] | None
    ) -> bool:
        store = self.store
        lease_ms = max(1, math.ceil(store.lock_lease * 1000))
        events: Any = None  # the pub/sub subscription, once the lock was found taken
        poll = 0.005
        try:
            while True:
                wait_ms = self._try(token, lease_ms)
                if wait_ms == 0:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    why = "held by another process"
                    if self._unreplicated:
                        why += (
                            f"; taken {self._unreplicated} times but not acknowledged by "
                            f"{store.replicas} replicas"
                        )
                    raise self._timed_out(why)
                if events is None:
                    events = self._subscribe()
                    if events is not False:
                        continue  # a release just before the subscription is not missed
                if events is False:  # no subscription: poll
                    time.sleep(min(remaining, wait_ms / 1000, random.uniform(poll / 2, poll)))  # noqa: S311
                    poll = min(poll * 1.5, _POLL_CAP)
                    event = "poll"
                else:
                    got = self._next_event(events, min(remaining, wait_ms / 1000))
                    if got is None:
                        events.close()
                        events = False
                    event = got or "poll"
                heard = time.monotonic()
                if event == "changed":
                    self._nudge(heard)
                if (
                    changed is not None and event != "released"
                    and self._changed_since(changed, heard)
                ):
                    return False
        finally:
            if events:
                with contextlib.suppress(Exception):
                    events.close()

    def _subscribe(self) -> Any:
        """A pub/sub subscription to the key's events, or ``False`` (then: poll)."""
        try:
            events = self.store._client.pubsub(ignore_subscribe_messages=True)
            events.subscribe(self.channel)
            return events
        except redis.exceptions.RedisError as exc:
            log.debug("refresh lock of %r: no pub/sub (%s); polling", self.key, type(exc).__name__)
            return False

    def _next_event(self, events: Any, timeout: float) -> str | None:
        """The next event (``released``, ``changed``), ``timeout`` when none came in
        time, ``None`` when the subscription broke."""
        end = time.monotonic() + timeout
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return "timeout"
                message = events.get_message(timeout=left)
                if message is not None and message.get("type") == "message":
                    return _text(message["data"])
        except redis.exceptions.RedisError as exc:
            log.debug("refresh lock of %r: pub/sub failed (%s); polling", self.key,
                      type(exc).__name__)
            return None

    def _renew(self, token: str, stop: threading.Event) -> None:
        store = self.store
        lease_ms = max(1, math.ceil(store.lock_lease * 1000))
        while not stop.wait(store.lock_lease / 3):
            try:
                renewed, acks = store._run(store._renew_script, [self.redis_key], [token, lease_ms])
            except redis.exceptions.RedisError as exc:
                log.debug("could not renew the refresh lock of %r: %s", self.key, exc)
                continue
            if not renewed:
                log.warning(
                    "the refresh lock of %r in Redis at %s expired while held "
                    "(another holder may have taken it)", self.key, store.location,
                )
                return
            if acks is not None and acks < store.replicas:
                log.warning(
                    "the renewal of the refresh lock of %r in Redis at %s was acknowledged "
                    "by %d of %d replicas", self.key, store.location, acks, store.replicas,
                )

    def release(self) -> None:
        """Release one level; the last one deletes the Redis key if this holder still owns it
        and announces the release to the waiters."""
        hold = self._hold
        if hold.busy != threading.get_ident() or hold.depth == 0:
            raise RuntimeError(f"the refresh lock of {self.key!r} is not held by this thread")
        if hold.depth > 1:
            hold.depth -= 1
            return
        try:
            hold.stop.set()
            if hold.renewer is not None and hold.renewer is not threading.current_thread():
                hold.renewer.join()
            hold.renewer = None
            hold.owner = 0
            try:
                owned = self.store._release_script(
                    keys=[self.redis_key], args=[hold.token, self.channel]
                )
            except redis.exceptions.RedisError as exc:
                log.warning(
                    "could not release the refresh lock of %r in Redis at %s (%s); "
                    "it expires within %gs", self.key, self.store.location,
                    type(exc).__name__, self.store.lock_lease,
                )
            else:
                if not owned:
                    log.warning(
                        "the refresh lock of %r in Redis at %s had expired before its "
                        "release; left the current holder's lock alone",
                        self.key, self.store.location,
                    )
        finally:
            hold.depth = 0
            self._give_back()

    @property
    def is_locked(self) -> bool:
        """True while a thread of this process holds the lock."""
        return self._hold.depth > 0

    def __repr__(self) -> str:
        return f"RedisRefreshLock({self.key!r}, store={self.store!r}, locked={self.is_locked})"
