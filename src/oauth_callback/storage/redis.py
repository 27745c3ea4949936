"""RedisStore: tokens in Redis, shared by every process and machine that reaches it.

Layout (``prefix`` defaults to ``oauth-callback``)::

    <prefix>:{<b64>}:tokens        the Tokens record of one store key
    <prefix>:{<b64>}:client        its ClientInfo record
    <prefix>:{<b64>}:session       its OAuthSession record
    <prefix>:{<b64>}:refresh-lock  the refresh lock (SET NX PX, owner token)
    <prefix>:seq                   a counter that orders keys() by creation

``<b64>`` is the unpadded urlsafe base64 of the store key (UTF-8), so every key
maps to a Redis key reversibly and without glob or hash-tag characters. The
``{...}`` hash tag puts all keys of one store key in one Redis Cluster slot.
Each value is ASCII JSON: ``{"key": ..., "seq": n, "record": {...}}`` where
``record`` is the npm-shaped record of :mod:`oauth_callback.models`.

* :meth:`keys` walks ``SCAN MATCH`` (never ``KEYS``) and orders the keys by
  creation (``seq``), as the file store keeps them.
* Every write is one ``MULTI``/``EXEC`` guarded by ``WATCH`` (compare and set):
  ``update`` retries on a conflicting write and gives up with
  :class:`StoreLockTimeout` after ``retry_timeout`` seconds.
* :meth:`clear` deletes with ``SCAN`` + ``DEL`` in batches; it is **not**
  atomic against writers running at the same time.
* Connection failures raise :class:`StoreUnavailableError` naming
  ``host:port`` (never the password); the store works again once Redis is back.

Durability is the server's: an acknowledged write survives a Redis crash only
with ``appendonly yes`` and ``appendfsync always`` (``everysec`` may lose the
last second; RDB snapshots alone lose more). Use ``maxmemory-policy
noeviction`` (the default) so Redis never evicts tokens under memory pressure.
With replication, a failover may lose writes the old primary acknowledged.
The store needs the commands GET, SET, DEL, INCR, WATCH, MULTI, EXEC, SCAN,
EVAL and EVALSHA (for an ACL user restricted to ``~<prefix>:*``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import random
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

try:
    import redis
    import redis.exceptions
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "RedisStore needs redis-py: pip install 'oauth-callback[redis]'"
    ) from _exc

from ..errors import StoreCorruptError, StoreError, StoreLockTimeout, StoreUnavailableError
from ..models import ClientInfo, OAuthSession, Tokens
from .base import Section, TokenStore
from .url import REDIS_PARAMETERS, REDIS_SCHEMES, StoreURL, parse_store_url

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

log = logging.getLogger("oauth_callback.storage")

#: Prefix of every Redis key the store writes.
DEFAULT_PREFIX = "oauth-callback"

_SUFFIX: dict[str, str] = {"tokens": "tokens", "clients": "client", "sessions": "session"}
_SECTION_OF_SUFFIX = {v: k for k, v in _SUFFIX.items()}
_KIND: dict[Section, Any] = {"tokens": Tokens, "clients": ClientInfo, "sessions": OAuthSession}
_LOCK_SUFFIX = "refresh-lock"
_B64 = re.compile(r"[A-Za-z0-9_-]*")
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")
#: Fields of a token response that give the refresh token's life, in seconds.
_REFRESH_LIFE_FIELDS = ("refresh_token_expires_in", "refresh_expires_in")

_BATCH = 500

# KEYS[1] lock key; ARGV[1] owner token; ARGV[2] lease in ms.
# Taking a lock we already own (a retried SET whose reply was lost) counts as success.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2]) return 1
end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


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


def _client_options(url: StoreURL) -> dict[str, Any]:
    """redis-py keyword arguments for the connection parameters of ``url``."""
    options: dict[str, Any] = {}
    for name, value in url.params.items():
        if name not in REDIS_PARAMETERS:
            raise ValueError(
                f"parameter {name!r} of store URL {url.display!r} is not RedisStore's: "
                "open the URL with open_store(), which applies it"
            )
        if name in ("prefix",):
            continue
        if name == "socket_timeout":
            seconds = _seconds(name, value)
            options["socket_timeout"] = options["socket_connect_timeout"] = seconds
        elif name == "ssl_check_hostname":
            options[name] = _flag(name, value)
        elif name == "db":
            if not value.isdigit():
                raise ValueError(f"store URL parameter db={value!r} must be a database number")
            options["db"] = int(value)
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
    return options


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
        url_or_client: str | StoreURL | redis.Redis,
        *,
        prefix: str | None = None,
        ttl: float | None = None,
        ttl_from_refresh: bool = False,
        socket_timeout: float = 5.0,
        lock_lease: float = 30.0,
        retry_timeout: float = 10.0,
    ) -> None:
        if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
            raise ValueError("ttl must be a positive number of seconds or None")
        if not (math.isfinite(lock_lease) and lock_lease > 0):
            raise ValueError("lock_lease must be a positive number of seconds")
        url_prefix: str | None = None
        if isinstance(url_or_client, (str, StoreURL)):
            url = (
                url_or_client if isinstance(url_or_client, StoreURL)
                else parse_store_url(url_or_client, schemes=REDIS_SCHEMES)
            )
            if url.scheme not in REDIS_SCHEMES:
                raise ValueError(f"store URL {url.display!r} is not a Redis URL")
            url_prefix = url.params.get("prefix")
            options = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_timeout,
                **_client_options(url),
            }
            self._owns_client = True
            try:
                self._client: redis.Redis = redis.Redis.from_url(
                    f"{url.scheme}:{url.body}",
                    retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3),
                    **options,
                )
            except ValueError as exc:
                raise ValueError(f"invalid Redis URL {url.display!r}: {exc}") from None
        else:
            self._client = url_or_client
            self._owns_client = False
        self.prefix = prefix if prefix is not None else (url_prefix or DEFAULT_PREFIX)
        if not self.prefix:
            raise ValueError("prefix must not be empty")
        self.ttl = ttl
        self.ttl_from_refresh = ttl_from_refresh
        self.lock_lease = lock_lease
        self.retry_timeout = retry_timeout
        self.location = self._describe_location()
        self._secrets = self._connection_secrets()
        self._pattern_prefix = _GLOB_SPECIAL.sub(r"\\\1", self.prefix)
        self._seq_key = f"{self.prefix}:seq"
        self._acquire_script = self._client.register_script(_ACQUIRE)
        self._renew_script = self._client.register_script(_RENEW)
        self._release_script = self._client.register_script(_RELEASE)

    def _describe_location(self) -> str:
        """``host:port/db`` (or the socket path) of the server; never credentials."""
        try:
            kwargs = self._client.connection_pool.connection_kwargs
        except AttributeError:
            return "redis"
        db = kwargs.get("db", 0)
        if kwargs.get("path"):
            return f"{kwargs['path']}/{db}"
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"

    def _connection_secrets(self) -> tuple[str, ...]:
        """The passwords the client authenticates with (never shown in a message)."""
        try:
            kwargs = self._client.connection_pool.connection_kwargs
        except AttributeError:
            return ()
        password = kwargs.get("password")
        return (str(password),) if password else ()

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
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict) or not isinstance(payload.get("record"), dict):
                raise ValueError("not a store payload")
            seq = payload.get("seq", 0)
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise ValueError("'seq' is not an integer")
            return _KIND[section].from_record(payload["record"]), seq
        except ValueError as exc:
            raise StoreCorruptError(
                f"Redis key {rkey} at {self.location} holds an unreadable value ({exc}); "
                f"nothing was changed. Delete that Redis key to drop it",
                path=self.location,
            ) from None

    def _encode(self, key: str, seq: int, value: Any) -> str:
        payload = {"key": key, "seq": seq, "record": value.to_record()}
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
            raw = self._client.get(rkey)
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

    def _modify(self, section: Section, key: str, fn: Callable[[Any], Any]) -> Any:
        rkey = self.redis_key(section, key)
        deadline = time.monotonic() + self.retry_timeout
        conflicts = 0
        delay = 0.001
        while True:
            try:
                with self._client.pipeline(transaction=True) as pipe:
                    pipe.watch(rkey)  # type: ignore[no-untyped-call]
                    current, seq = self._decode(rkey, section, pipe.get(rkey))
                    new = fn(current)
                    if new is current:
                        return current
                    if new is not None and current is None:
                        seq = int(self._client.incr(self._seq_key))
                    pipe.multi()
                    if new is None:
                        pipe.delete(rkey)
                    else:
                        pipe.set(rkey, self._encode(key, seq, new), px=self._ttl_ms(section, new))
                    pipe.execute()
                    return new
            except redis.exceptions.WatchError as exc:
                cause = exc.__context__
                if isinstance(cause, _CONNECTION_ERRORS) or "occurred" in str(exc):
                    # The connection died while the key was watched: the write may
                    # or may not have happened, so do not run ``fn`` again.
                    failure = cause if isinstance(cause, Exception) else exc
                    raise self._unavailable(failure) from None
                conflicts += 1
                if time.monotonic() >= deadline:
                    raise StoreLockTimeout(
                        f"gave up updating {key!r} in Redis at {self.location} after "
                        f"{conflicts} conflicting writes in {self.retry_timeout:g}s",
                        path=self.location,
                    ) from None
                time.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, 0.05)
            except redis.exceptions.RedisError as exc:
                raise self._failed(exc) from None

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


class _LocalHold:
    __slots__ = ("__weakref__", "depth", "lock", "renewer", "stop", "token")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.depth = 0
        self.token = ""
        self.stop = threading.Event()
        self.renewer: threading.Thread | None = None


class RedisRefreshLock:
    """The context manager :meth:`RedisStore.refresh_lock` returns."""

    def __init__(self, store: RedisStore, key: str, timeout: float) -> None:
        self.store = store
        self.key = key
        self.timeout = timeout
        self.redis_key = store.redis_key(_LOCK_SUFFIX, key)
        ident = f"{store.location}|{self.redis_key}"
        with _registry_lock:
            hold = _local_locks.get(ident)
            if hold is None:
                hold = _LocalHold()
                _local_locks[ident] = hold
        self._hold = hold

    def __enter__(self) -> RedisRefreshLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _timed_out(self, why: str) -> StoreLockTimeout:
        return StoreLockTimeout(
            f"timed out after {self.timeout:g}s waiting for the refresh lock of {self.key!r} "
            f"in Redis at {self.store.location} ({why})",
            path=self.store.location,
        )

    def acquire(self) -> None:
        """Take the lock, waiting at most ``timeout`` seconds."""
        hold = self._hold
        deadline = time.monotonic() + max(self.timeout, 0.0)
        if not hold.lock.acquire(timeout=max(self.timeout, 0.0)):
            raise self._timed_out("held by another thread")
        try:
            if hold.depth == 0:
                hold.token = secrets.token_hex(16)
                self._acquire_remote(hold.token, deadline)
                hold.stop = threading.Event()
                hold.renewer = threading.Thread(
                    target=self._renew, args=(hold.token, hold.stop),
                    name=f"oauth-callback-redis-lock-renewer-{self.key}", daemon=True,
                )
                hold.renewer.start()
            hold.depth += 1
        except BaseException:
            hold.lock.release()
            raise

    def _acquire_remote(self, token: str, deadline: float) -> None:
        store = self.store
        lease_ms = max(1, math.ceil(store.lock_lease * 1000))
        delay = 0.005
        while True:
            try:
                if store._acquire_script(keys=[self.redis_key], args=[token, lease_ms]):
                    return
            except redis.exceptions.RedisError as exc:
                raise store._failed(exc) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out("held by another process")
            time.sleep(min(remaining, random.uniform(delay / 2, delay)))  # noqa: S311
            delay = min(delay * 1.5, 0.1)

    def _renew(self, token: str, stop: threading.Event) -> None:
        store = self.store
        lease_ms = max(1, math.ceil(store.lock_lease * 1000))
        while not stop.wait(store.lock_lease / 3):
            try:
                if not store._renew_script(keys=[self.redis_key], args=[token, lease_ms]):
                    log.warning(
                        "the refresh lock of %r in Redis at %s expired while held "
                        "(another holder may have taken it)", self.key, store.location,
                    )
                    return
            except redis.exceptions.RedisError as exc:
                log.debug("could not renew the refresh lock of %r: %s", self.key, exc)

    def release(self) -> None:
        """Release one level; the last one deletes the Redis key if this holder still owns it."""
        hold = self._hold
        try:
            if hold.depth == 1:
                hold.stop.set()
                if hold.renewer is not None and hold.renewer is not threading.current_thread():
                    hold.renewer.join()
                hold.renewer = None
                try:
                    owned = self.store._release_script(keys=[self.redis_key], args=[hold.token])
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
            hold.depth -= 1
        finally:
            hold.lock.release()

    @property
    def is_locked(self) -> bool:
        """True while a thread of this process holds the lock."""
        return self._hold.depth > 0

    def __repr__(self) -> str:
        return f"RedisRefreshLock({self.key!r}, store={self.store!r}, locked={self.is_locked})"
