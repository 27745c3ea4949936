"""The store API every backend follows.

A store maps string keys to :class:`~oauth_callback.models.Tokens`, and keeps
per key a client registration (:class:`~oauth_callback.models.ClientInfo`) and
an authorization in progress (:class:`~oauth_callback.models.OAuthSession`).

Sync and async: every method has an ``_async`` twin (``get`` / ``get_async``)
that runs the blocking work in a worker thread, so an event loop is never
blocked by ``fsync``, a lock wait or a network round trip. Cancelling the
awaiting task does not abort an operation already started in the thread: it
completes or fails atomically all the same.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import threading
from collections.abc import Callable

from .._lazy import TYPE_CHECKING
from ..models import ClientInfo, OAuthSession, Tokens

__all__ = ["SECTIONS", "Section", "TokenStore", "Updater", "validate_key"]

if TYPE_CHECKING:
    from typing import Any, Literal, TypeVar

    T = TypeVar("T")
    #: A function from the stored value (or ``None``) to the new one (``None``: delete).
    Updater = Callable[[T | None], T | None]
    #: The name of a store's section.
    Section = Literal["tokens", "clients", "sessions"]
else:  # for annotations only (strings at run time); names kept importable
    Updater = Callable
    Section = str
#: Every section of a store, in the order records of one key are best written.
SECTIONS: tuple[Section, ...] = ("tokens", "clients", "sessions")


#: The field of an encrypted record that holds its ciphertext
#: (:data:`oauth_callback.storage.encrypted.ENVELOPE_FIELD`).
ENCRYPTED_FIELD = "$encrypted"
_NOUNS = {"tokens": "tokens", "clients": "client", "sessions": "session"}


def validate_key(key: object, *, reserved: frozenset[str] = frozenset()) -> str:
    """Return ``key`` if it is usable as a store key, else raise ``ValueError``/``TypeError``."""
    if not isinstance(key, str):
        raise TypeError(f"store key must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError("store key must not be empty")
    if key in reserved:
        raise ValueError(f"store key {key!r} is reserved")
    if key.isascii():  # the common case, and cheap: get() is a hot path
        return key
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"store key {key!r} is not valid Unicode text") from None
    return key


class TokenStore(abc.ABC):
    """Abstract token store. Subclasses implement :meth:`_read` and :meth:`_modify`.

    Guarantees every backend gives:

    * ``update(key, fn)`` is an atomic read-modify-write: ``fn`` sees the latest
      committed value and no other writer, in any thread or process sharing the
      store, commits in between. It may be called more than once (backends that
      retry on conflict), so it must have no side effects.
    * A write that returned is visible to every later read of the same store.
    * ``get`` of a missing key returns ``None``; ``delete`` of one is a no-op.
    """

    #: Keys a caller may not use (backends with reserved names extend it).
    reserved_keys: frozenset[str] = frozenset()

    # -- what a backend implements -------------------------------------

    @abc.abstractmethod
    def _read(self, section: Section, key: str) -> Any:
        """Return the value stored under ``key`` in ``section``, or ``None``."""

    @abc.abstractmethod
    def _keys(self, section: Section) -> list[str]:
        """Return the keys of ``section``."""

    @abc.abstractmethod
    def _modify(self, section: Section, key: str, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace ``section[key]`` with ``fn(current)``; ``None`` deletes.

        When ``fn`` returns its argument unchanged (the same object), nothing is
        written. Returns what was stored.
        """

    @abc.abstractmethod
    def clear(self) -> None:
        """Remove every token, client registration and session, atomically."""

    # -- tokens -------------------------------------------------------------

    def get(self, key: str) -> Tokens | None:
        """The tokens stored under ``key``, or ``None``."""
        key = self._check(key)
        value: Tokens | None = self._plain("tokens", key, self._read("tokens", key))
        return value

    def set(self, key: str, tokens: Tokens) -> None:
        """Store ``tokens`` under ``key``, replacing what was there.

        A store opened without encryption does not replace an encrypted record
        (:class:`~oauth_callback.errors.StoreEncryptedError`; nothing is written):
        tokens written in clear over encrypted ones would be a silent downgrade.
        """
        if not isinstance(tokens, Tokens):
            raise TypeError(f"tokens must be a Tokens, not {type(tokens).__name__}")
        key = self._check(key)
        self._modify("tokens", key, self._replacing("tokens", key, tokens))

    def delete(self, key: str) -> None:
        """Remove the tokens stored under ``key`` (client and session stay).

        An encrypted record is removed even by a store opened without its key
        (logging out needs no key)."""
        self._modify("tokens", self._check(key), lambda _current: None)

    def keys(self, section: Section = "tokens") -> list[str]:
        """The keys that have a record in ``section`` (default: tokens), in storage order.

        ``"clients"`` lists the keys with a client registration, ``"sessions"``
        those with an authorization in progress (a key may be in any of them).
        """
        if section not in SECTIONS:
            raise ValueError(f"unknown store section {section!r}; use one of {SECTIONS}")
        return self._keys(section)

    def update(self, key: str, fn: Updater[Tokens]) -> Tokens | None:
        """Atomically replace the tokens under ``key`` with ``fn(current)``.

        ``fn`` receives the current :class:`Tokens` (or ``None``) and returns
        the new value, ``None`` to delete, or its argument to leave the store
        untouched (no write happens). Returns what is stored afterwards.
        Exceptions raised by ``fn`` propagate and nothing is written.
        """
        key = self._check(key)
        return self._modify("tokens", key, self._checked("tokens", key, fn, Tokens))  # type: ignore[no-any-return]

    # -- OAuthStore extras --------------------------------------------------------

    def get_client(self, key: str) -> ClientInfo | None:
        """The client registration stored for ``key``, or ``None``."""
        key = self._check(key)
        value: ClientInfo | None = self._plain("clients", key, self._read("clients", key))
        return value

    def set_client(self, key: str, client: ClientInfo) -> None:
        """Store the client registration for ``key`` (an encrypted one only through
        encryption, as :meth:`set`)."""
        if not isinstance(client, ClientInfo):
            raise TypeError(f"client must be a ClientInfo, not {type(client).__name__}")
        key = self._check(key)
        self._modify("clients", key, self._replacing("clients", key, client))

    def delete_client(self, key: str) -> None:
        """Remove the client registration for ``key``."""
        self._modify("clients", self._check(key), lambda _current: None)

    def update_client(self, key: str, fn: Updater[ClientInfo]) -> ClientInfo | None:
        """Atomic read-modify-write of the client registration (as :meth:`update`)."""
        key = self._check(key)
        return self._modify("clients", key, self._checked("clients", key, fn, ClientInfo))  # type: ignore[no-any-return]

    def get_session(self, key: str) -> OAuthSession | None:
        """The authorization in progress for ``key``, or ``None``."""
        key = self._check(key)
        value: OAuthSession | None = self._plain("sessions", key, self._read("sessions", key))
        return value

    def set_session(self, key: str, session: OAuthSession) -> None:
        """Store the authorization in progress for ``key`` (an encrypted one only
        through encryption, as :meth:`set`)."""
        if not isinstance(session, OAuthSession):
            raise TypeError(f"session must be an OAuthSession, not {type(session).__name__}")
        key = self._check(key)
        self._modify("sessions", key, self._replacing("sessions", key, session))

    def delete_session(self, key: str) -> None:
        """Remove the authorization in progress for ``key``."""
        self._modify("sessions", self._check(key), lambda _current: None)

    def update_session(self, key: str, fn: Updater[OAuthSession]) -> OAuthSession | None:
        """Atomic read-modify-write of the authorization in progress (as :meth:`update`)."""
        key = self._check(key)
        return self._modify("sessions", key, self._checked("sessions", key, fn, OAuthSession))  # type: ignore[no-any-return]

    # -- async twins ----------------------------------------------------------

    async def get_async(self, key: str) -> Tokens | None:
        """Async :meth:`get`."""
        return await _in_thread(self.get, key)

    async def set_async(self, key: str, tokens: Tokens) -> None:
        """Async :meth:`set`."""
        await _in_thread(self.set, key, tokens)

    async def delete_async(self, key: str) -> None:
        """Async :meth:`delete`."""
        await _in_thread(self.delete, key)

    async def clear_async(self) -> None:
        """Async :meth:`clear`."""
        await _in_thread(self.clear)

    async def keys_async(self, section: Section = "tokens") -> list[str]:
        """Async :meth:`keys`."""
        return await _in_thread(self.keys, section)

    async def update_async(self, key: str, fn: Updater[Tokens]) -> Tokens | None:
        """Async :meth:`update`; ``fn`` runs in the worker thread."""
        return await _in_thread(self.update, key, fn)

    async def get_client_async(self, key: str) -> ClientInfo | None:
        """Async :meth:`get_client`."""
        return await _in_thread(self.get_client, key)

    async def set_client_async(self, key: str, client: ClientInfo) -> None:
        """Async :meth:`set_client`."""
        await _in_thread(self.set_client, key, client)

    async def delete_client_async(self, key: str) -> None:
        """Async :meth:`delete_client`."""
        await _in_thread(self.delete_client, key)

    async def update_client_async(
        self, key: str, fn: Updater[ClientInfo]
    ) -> ClientInfo | None:
        """Async :meth:`update_client`."""
        return await _in_thread(self.update_client, key, fn)

    async def get_session_async(self, key: str) -> OAuthSession | None:
        """Async :meth:`get_session`."""
        return await _in_thread(self.get_session, key)

    async def set_session_async(self, key: str, session: OAuthSession) -> None:
        """Async :meth:`set_session`."""
        await _in_thread(self.set_session, key, session)

    async def delete_session_async(self, key: str) -> None:
        """Async :meth:`delete_session`."""
        await _in_thread(self.delete_session, key)

    async def update_session_async(
        self, key: str, fn: Updater[OAuthSession]
    ) -> OAuthSession | None:
        """Async :meth:`update_session`."""
        return await _in_thread(self.update_session, key, fn)

    # -- refresh coordination ---------------------------------------------------

    def refresh_lock(
        self, key: str, *, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        """An exclusive lock for refreshing ``key``, separate from the store's write lock.

        Holding it never blocks readers, writers or other keys. It spans every
        holder that shares the store: the threads of this process for
        :class:`MemoryStore` (this default), every process on the machine for
        :class:`FileStore`, every machine for a networked store. Raises
        :class:`~oauth_callback.errors.StoreLockTimeout` after ``timeout``
        seconds (``None``: wait as long as the backend's default allows).
        """
        self._check(key)
        with _refresh_registry_lock:
            locks: dict[str, threading.RLock] = self.__dict__.setdefault("_refresh_locks", {})
            lock = locks.setdefault(key, threading.RLock())
        return _ThreadLockContext(lock, key, timeout)

    def reserve_write(self, key: str) -> contextlib.AbstractContextManager[Any]:
        """Set aside what the next write of ``key`` needs, before an
        irreversible step: :class:`TokenManager` enters it before each refresh
        request, so a refresh token is never spent unless its successor can be
        stored. Raises :class:`~oauth_callback.errors.StoreWriteError` when it
        cannot (e.g. the disk is full); nothing was changed then.

        :class:`FileStore` allocates the write's temp file; this default (and
        backends without a way to reserve, see their docs) reserves nothing.
        """
        self._check(key)
        return contextlib.nullcontext()

    # -- helpers ------------------------------------------------------------------

    def describe(self) -> str:
        """Where this store keeps its data, for messages: a path, URL or name, never a secret."""
        return type(self).__name__

    def check_key(self, key: str) -> str:
        """``key`` if this store can hold it, else :class:`ValueError` (empty, not valid
        Unicode, or one of :attr:`reserved_keys`) or :class:`TypeError` (not a str):
        what every method checks first, for callers that keep a key for later."""
        return validate_key(key, reserved=self.reserved_keys)

    def _check(self, key: str) -> str:  # what the backends call
        return self.check_key(key)

    def _plain(self, section: Section, key: str, value: Any, *, writing: bool = False) -> Any:
        """``value`` as read, unless it is an encrypted record this store cannot open
        (it was opened without encryption): then :class:`StoreEncryptedError`
        (``writing``: its message says a plaintext record would have replaced it)."""
        if value is None:
            return None
        envelope = value.extra.get(ENCRYPTED_FIELD)
        if envelope is None:
            return value
        from ..errors import StoreEncryptedError

        kid = envelope.get("kid") if isinstance(envelope, dict) else None
        kid = kid if isinstance(kid, str) else None
        where = self.describe()
        raise StoreEncryptedError(
            f"{_NOUNS[section]} record {key!r} in token store {where} is encrypted"
            + (f" (key id {kid})" if kid else "")
            + ", but the store was opened without encryption"
            + ("; it is not replaced by a plaintext record" if writing else "")
            + "; nothing was changed. Open "
            "it with its key: the store URL with ?encryption=SOURCE (keyring, env:NAME or "
            "file:PATH), or EncryptedStore(store, SOURCE)",
            path=where, key=key, section=section, key_id=kid,
        )

    def _replacing(self, section: Section, key: str, value: Any) -> Callable[[Any], Any]:
        """``fn`` for :meth:`_modify` of the ``set`` methods: ``value``, unless the
        current record is encrypted and this store cannot open it. Checked inside
        the backend's atomic read-modify-write, so no encrypted record written
        meanwhile is replaced by a plaintext one either."""
        def replace(current: Any) -> Any:
            self._plain(section, key, current, writing=True)
            return value

        return replace

    def _checked(
        self, section: Section, key: str, fn: Callable[[Any], Any], kind: type
    ) -> Callable[[Any], Any]:
        """``fn`` for :meth:`_modify`: it sees only what :meth:`_plain` lets through and
        must return a ``kind`` or ``None``."""
        def wrapper(current: Any) -> Any:
            new = fn(self._plain(section, key, current))
            if new is not None and not isinstance(new, kind):
                raise TypeError(f"update function must return {kind.__name__} or None, "
                                f"not {type(new).__name__}")
            return new

        return wrapper

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections). The store is unusable afterwards."""

    def __enter__(self) -> TokenStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_refresh_registry_lock = threading.Lock()


class _ThreadLockContext:
    def __init__(self, lock: Any, key: str, timeout: float | None) -> None:
        self._lock = lock
        self._key = key
        self._timeout = timeout

    def __enter__(self) -> None:
        from ..errors import StoreLockTimeout

        wait = -1 if self._timeout is None else self._timeout
        if not self._lock.acquire(timeout=wait):
            raise StoreLockTimeout(f"timed out waiting for the refresh lock of {self._key!r}")

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


async def _in_thread(func: Callable[..., T], *args: Any) -> T:
    import anyio.to_thread  # here, not at import: sync users never load anyio

    return await anyio.to_thread.run_sync(functools.partial(func, *args))
