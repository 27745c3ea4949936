"""EncryptedStore: encryption at rest for any :class:`~oauth_callback.storage.base.TokenStore`.

Needs ``oauth-callback[encryption]`` (the ``cryptography`` package)::

    from oauth_callback.storage import FileStore
    from oauth_callback.storage.encrypted import EncryptedStore

    store = EncryptedStore(FileStore("~/.mcp/tokens.json"), "env:OAUTH_CALLBACK_KEY")

or, as a store URL, ``file:~/.mcp/tokens.json?encryption=env:OAUTH_CALLBACK_KEY``.
The key sources (``keyring``, ``env:NAME``, ``file:PATH``) are described in
:mod:`oauth_callback.storage.key_sources`.

What is encrypted: every record of every section, whole: tokens (access,
refresh and id tokens, every ``extra`` field), client registrations (client
secrets) and sessions (PKCE verifiers, ``state``). What stays readable: the
key names (so ``keys()``, ``status`` and ``doctor`` work without the key), a
token record's ``expiresAt`` and the refresh-token lifetime fields
(``refresh_token_expires_in``, ``refresh_expires_in``) that
:class:`~oauth_callback.storage.redis.RedisStore` derives record expiry from,
and the key id of each record.

Record format (version 1). The inner store keeps, in place of each record, a
record of the same kind that carries the ciphertext in the field
``"$encrypted"``::

    tokens:   {"accessToken": "$encrypted", "expiresAt": 1767225600000,
               "$encrypted": {"v": 1, "alg": "A256GCM", "kid": "3f2a...",
                              "nonce": "<base64url, 12 bytes>",
                              "ct": "<base64url ciphertext and 16-byte tag>"}}
    clients:  {"clientId": "$encrypted", "$encrypted": {...}}
    sessions: {"$encrypted": {...}}

So it sits wherever the backend keeps a record: a top-level member of the
``FileStore`` JSON (clients and sessions under ``$oauth_callback``), the
``record`` column of SQLite, the ``record`` of a Redis value, a keychain entry.
Every other record and field of those stores is left as the backend keeps it,
and fields another program adds beside ``"$encrypted"`` survive rewrites.

* ``ct`` is AES-256-GCM (``cryptography``'s ``AESGCM``) of the UTF-8 JSON of
  the value's whole ``to_record()`` (the npm shape, ``extra`` included, so
  unknown fields survive encryption), under a fresh random 96-bit nonce per
  write (safe for far more writes than a store sees: NIST's bound for random
  nonces is 2**32 messages per key).
* The associated data is ``b"oauth-callback encrypted record\\0" + b"v1\\0" +
  section + b"\\0" + kid + b"\\0" + key name`` (UTF-8): a ciphertext copied
  under another key name or section, or relabelled with another key id,
  fails to decrypt.
* ``kid`` is :func:`~oauth_callback.storage.key_sources.key_id` of the key, so
  a record written under another key is recognised at once
  (:class:`~oauth_callback.errors.StoreWrongKeyError`) and ``doctor`` can
  report records under an old key.
* The npm ``oauth-callback`` package cannot read encrypted records: it sees an
  access token ``"$encrypted"``. Share a file with it only unencrypted.

Behaviour:

* ``update()`` stays atomic: the decryption, ``fn`` and the encryption all run
  inside the inner store's own atomic read-modify-write.
* A record under another key, one that fails to authenticate (modified,
  moved) or one in an unknown format raises a typed error naming the store and
  the key source, never the key, on reads **and writes** of that record: a
  wrong key never overwrites what it cannot read. The first write through an
  ``EncryptedStore`` object also checks that the store's records are under its
  key, so a wrong key does not start a second set of records beside them.
  ``clear()`` removes every record whatever its key.
* A plaintext record in an encrypted store (written before encryption was
  turned on, or by the npm package) is read as it is, logged once as a
  warning, listed by :meth:`EncryptedStore.audit` (and ``doctor``), and
  encrypted by the next write of that key, even an ``update()`` that changes
  nothing (which is how ``tokens migrate`` encrypts a store in place).
* Reads decrypt a record once: the value is cached against the inner
  record it came from (the same object, or an equal ciphertext), so a warm
  ``get()`` costs the inner store's read and a comparison.

What it does not protect against: anyone who can use the key. A process
running as the user with the key at hand (the environment variable set, the
key file readable, the keychain unlocked) reads every token, as the program
itself does. It protects the bytes at rest: backups, disk images, copied
volumes, a file or Redis dump read without the key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .._extras import requires_extra

with requires_extra("EncryptedStore", "the cryptography package", "encryption"):
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._log import get_logger
from ..errors import StoreCorruptError, StoreDecryptError, StoreKeyError, StoreWrongKeyError
from ..models import ClientInfo, OAuthSession, Tokens
from .base import Section, TokenStore
from .key_sources import KeySource, key_id, parse_key_source

__all__ = [
    "ALGORITHM",
    "ENVELOPE_FIELD",
    "FORMAT_VERSION",
    "MARKER",
    "EncryptedStore",
    "RecordState",
    "RecordStatus",
]

log = get_logger("oauth_callback.storage")

#: The record format this version writes (``"v"`` of the envelope).
FORMAT_VERSION = 1
#: The record field holding the envelope.
ENVELOPE_FIELD = "$encrypted"
#: What an encrypted record shows where a required field (accessToken, clientId) must be.
MARKER = "$encrypted"
#: The AEAD of format version 1.
ALGORITHM = "A256GCM"

_NONCE_BYTES = 12
_KINDS: dict[Section, Any] = {"tokens": Tokens, "clients": ClientInfo, "sessions": OAuthSession}
_NOUN: dict[Section, str] = {"tokens": "tokens", "clients": "client", "sessions": "session"}
#: Token fields left readable beside the ciphertext (not secret; backends use them).
_CLEAR_TOKEN_EXTRA = ("refresh_token_expires_in", "refresh_expires_in")
_SECTIONS: tuple[Section, ...] = ("tokens", "clients", "sessions")

RecordState = Literal["encrypted", "plaintext", "other-key", "undecryptable"]


@dataclass(frozen=True)
class RecordStatus:
    """What :meth:`EncryptedStore.audit` found about one record. Holds no secret.

    ``state``: ``encrypted`` (under the store's key), ``plaintext`` (not
    encrypted; the next write encrypts it), ``other-key`` (encrypted under the
    key ``key_id``, not the store's) or ``undecryptable`` (``reason`` says why).
    """

    section: Section
    key: str
    state: RecordState
    key_id: str | None = None
    reason: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _aad(section: str, kid: str, key: str) -> bytes:
    return (
        b"oauth-callback encrypted record\0v1\0"
        + section.encode("ascii") + b"\0"
        + kid.encode("ascii", "replace") + b"\0"
        + key.encode("utf-8", "surrogatepass")
    )


def _envelope_of(value: Any) -> Any:
    """The envelope field of an inner record, or ``None`` for a plaintext one."""
    extra = getattr(value, "extra", None)
    if extra is None:
        return None
    return extra.get(ENVELOPE_FIELD)


class EncryptedStore(TokenStore):
    """``store`` with every record encrypted under the key from ``key_source``.

    ``key_source``: ``"keyring"``, ``"env:NAME"``, ``"file:PATH"`` or a
    :class:`~oauth_callback.storage.key_sources.KeySource`. The key is loaded
    on first need (the first read of an encrypted record or the first write)
    and kept for the life of the object; a ``keyring`` key is created by the
    first write. See the module docstring for the format and the guarantees.
    """

    def __init__(self, store: TokenStore, key_source: str | KeySource) -> None:
        if not isinstance(store, TokenStore):
            raise TypeError(f"store must be a TokenStore, not {type(store).__name__}")
        if isinstance(store, EncryptedStore):
            raise TypeError("store is already an EncryptedStore")
        self.store = store
        self.key_source = parse_key_source(key_source)
        self.reserved_keys = store.reserved_keys
        self._mutex = threading.Lock()
        self._aead: AESGCM | None = None
        self._kid: str | None = None
        self._checked_store = False
        # (section, key) -> (inner record, its envelope, decrypted value)
        self._cache: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._warned: set[tuple[str, str]] = set()

    # -- naming ----------------------------------------------------------------

    def describe(self) -> str:
        """The inner store's description and the key source (never the key)."""
        return f"{self.store.describe()} (encrypted, key from {self.key_source.description})"

    def __repr__(self) -> str:
        return f"EncryptedStore({self.store!r}, key_source={self.key_source.description!r})"

    @property
    def key_id(self) -> str | None:
        """The id of the store's key (loads it); ``None`` while a ``keyring`` key does not exist."""
        self._key(create=False)
        return self._kid

    # -- the key ----------------------------------------------------------------

    def _key(self, *, create: bool) -> AESGCM | None:
        if self._aead is not None:
            return self._aead
        with self._mutex:
            if self._aead is None:
                try:
                    key = self.key_source.load(create=create)
                except StoreKeyError as exc:
                    raise StoreKeyError(
                        f"token store {self.store.describe()}: {exc}",
                        path=self.store.describe(), key_source=self.key_source.description,
                    ) from None
                if key is None:
                    return None
                self._kid = key_id(key)
                self._aead = AESGCM(key)
        return self._aead

    def _where(self, section: Section, key: str) -> str:
        return f"{_NOUN[section]} record {key!r} in token store {self.store.describe()}"

    # -- records -----------------------------------------------------------------

    def _open(self, section: Section, key: str, inner: Any) -> Any:
        """The value an inner record holds: decrypted, or as it is when plaintext."""
        envelope = _envelope_of(inner)
        if envelope is None:
            if (section, key) not in self._warned:
                self._warned.add((section, key))
                log.warning(
                    "%s is not encrypted; it will be encrypted on its next write",
                    self._where(section, key),
                )
            return inner
        cached = self._cache.get((section, key))
        if cached is not None and (cached[0] is inner or cached[1] == envelope):
            return cached[2]
        value = self._decrypt(section, key, envelope)
        self._cache[(section, key)] = (inner, envelope, value)
        return value

    def _parse_envelope(
        self, section: Section, key: str, envelope: Any
    ) -> tuple[str, bytes, bytes]:
        source = self.key_source.description
        if not isinstance(envelope, dict):
            raise StoreDecryptError(
                f"{self._where(section, key)} has a malformed '{ENVELOPE_FIELD}' field "
                f"(key from {source}); nothing was changed",
                path=self.store.describe(), key_source=source,
            )
        version = envelope.get("v")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise StoreDecryptError(
                f"{self._where(section, key)} is in encrypted format {version!r}, which this "
                f"version does not know (it writes {FORMAT_VERSION}); upgrade oauth-callback. "
                "Nothing was changed",
                path=self.store.describe(), key_source=source,
            )
        kid = envelope.get("kid")
        try:
            if envelope.get("alg") != ALGORITHM or not isinstance(kid, str):
                raise ValueError("bad header")
            nonce = _unb64(envelope.get("nonce"))  # type: ignore[arg-type]
            ciphertext = _unb64(envelope.get("ct"))  # type: ignore[arg-type]
            if len(nonce) != _NONCE_BYTES:
                raise ValueError("bad nonce")
        except (ValueError, binascii.Error):
            raise StoreDecryptError(
                f"{self._where(section, key)} has a malformed '{ENVELOPE_FIELD}' field "
                f"(key from {source}); nothing was changed",
                path=self.store.describe(), key_source=source,
            ) from None
        return kid, nonce, ciphertext

    def _decrypt(self, section: Section, key: str, envelope: Any) -> Any:
        kid, nonce, ciphertext = self._parse_envelope(section, key, envelope)
        source = self.key_source.description
        aead = self._key(create=False)
        if aead is None or kid != self._kid:
            raise StoreWrongKeyError(
                f"{self._where(section, key)} is encrypted under key id {kid}, not under the "
                f"key from {source}"
                + (f" (key id {self._kid})" if self._kid else " (the keychain holds no key)")
                + "; nothing was changed. Use the key it was written with",
                path=self.store.describe(), key_source=source, key_id=kid,
                expected_key_id=self._kid,
            )
        try:
            plaintext = aead.decrypt(nonce, ciphertext, _aad(section, kid, key))
        except InvalidTag:
            raise StoreDecryptError(
                f"{self._where(section, key)} does not decrypt with the key from {source} "
                f"(key id {kid}): it was modified, or copied from another key name or section; "
                "nothing was changed",
                path=self.store.describe(), key_source=source,
            ) from None
        try:
            return _KINDS[section].from_record(json.loads(plaintext))
        except (ValueError, RecursionError) as exc:
            reason = "not JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise StoreDecryptError(
                f"{self._where(section, key)} decrypts to an unreadable record ({reason})",
                path=self.store.describe(), key_source=source,
            ) from None

    def _seal(self, section: Section, key: str, value: Any, previous: Any = None) -> Any:
        """The inner record that stores ``value`` encrypted.

        Fields another program added beside the envelope of ``previous`` (an
        encrypted record) are kept; a plaintext ``previous`` keeps nothing.
        """
        aead = self._key(create=True)
        assert aead is not None
        assert self._kid is not None
        plaintext = json.dumps(value.to_record(), separators=(",", ":")).encode("ascii")
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = aead.encrypt(nonce, plaintext, _aad(section, self._kid, key))
        envelope = {
            "v": FORMAT_VERSION,
            "alg": ALGORITHM,
            "kid": self._kid,
            "nonce": _b64(nonce),
            "ct": _b64(ciphertext),
        }
        outer: dict[str, Any] = {}
        if previous is not None and _envelope_of(previous) is not None:
            outer = {k: v for k, v in previous.extra.items()
                     if k != ENVELOPE_FIELD and k not in _CLEAR_TOKEN_EXTRA}
        if section == "tokens":
            outer.update((n, value.extra[n]) for n in _CLEAR_TOKEN_EXTRA if n in value.extra)
            outer[ENVELOPE_FIELD] = envelope
            return Tokens(MARKER, expires_at=value.expires_at, extra=outer)
        outer[ENVELOPE_FIELD] = envelope
        if section == "clients":
            return ClientInfo(MARKER, extra=outer)
        return OAuthSession(extra=outer)

    def _first_key_id(self) -> str | None:
        """The key id of the first encrypted record found, ``None`` when there is none."""
        for section in _SECTIONS:
            for key in self.store._keys(section):
                try:
                    inner = self.store._read(section, key)
                except StoreCorruptError:
                    continue  # the inner store reports it on its own reads and writes
                envelope = _envelope_of(inner)
                kid = envelope.get("kid") if isinstance(envelope, dict) else None
                if isinstance(kid, str):
                    return kid
        return None

    def _check_store_key(self) -> None:
        """Before the first write: refuse if the store's records are under another key.

        A ``keyring`` key is created only for a store holding no encrypted record.
        """
        if self._checked_store:
            return
        found = self._first_key_id()
        self._key(create=found is None)
        if found is not None and found != self._kid:
            ours = f"key id {self._kid}" if self._kid else "the keychain holds no key"
            raise StoreWrongKeyError(
                f"token store {self.store.describe()} holds records encrypted under key "
                f"id {found}, not under the key from {self.key_source.description} "
                f"({ours}); nothing was written. Use the store's key, or "
                "migrate the store to the new key ('oauth-callback tokens migrate')",
                path=self.store.describe(), key_source=self.key_source.description,
                key_id=found, expected_key_id=self._kid,
            )
        self._checked_store = True

    # -- TokenStore -----------------------------------------------------------------

    def _read(self, section: Section, key: str) -> Any:
        inner = self.store._read(section, key)
        if inner is None:
            return None
        cached = self._cache.get((section, key))
        if cached is not None and cached[0] is inner:
            return cached[2]
        return self._open(section, key, inner)

    def _keys(self, section: Section) -> list[str]:
        return self.store._keys(section)

    def _modify(self, section: Section, key: str, fn: Callable[[Any], Any]) -> Any:
        self._check_store_key()
        committed: list[tuple[Any, Any]] = []  # (inner record stored, value) of the last run

        def change(inner: Any) -> Any:
            current = None if inner is None else self._open(section, key, inner)
            new = fn(current)
            if new is current and (inner is None or _envelope_of(inner) is not None):
                committed[:] = [(inner, current)]
                return inner  # unchanged: nothing is written
            sealed = None if new is None else self._seal(section, key, new, inner)
            committed[:] = [(sealed, new)]
            return sealed

        # The cache stays: an entry only ever answers for the inner record it came from.
        self.store._modify(section, key, change)
        sealed, value = committed[0]
        if sealed is not None and value is not None:
            self._cache[(section, key)] = (sealed, _envelope_of(sealed), value)
        else:
            self._cache.pop((section, key), None)
        return value

    def clear(self) -> None:
        """Remove every record of the inner store, whatever key it is under."""
        self._cache.clear()
        self.store.clear()

    def refresh_lock(
        self, key: str, *, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        """The inner store's refresh lock."""
        return self.store.refresh_lock(key, timeout=timeout)

    def reserve_write(self, key: str) -> contextlib.AbstractContextManager[Any]:
        """The inner store's reservation (a refresh's save goes through it)."""
        return self.store.reserve_write(key)

    def close(self) -> None:
        """Close the inner store and forget the decrypted records."""
        self._cache.clear()
        self.store.close()

    # -- inspection ---------------------------------------------------------------

    def audit(self) -> list[RecordStatus]:
        """The encryption state of every record (for ``doctor``); decrypts each one.

        Needs the key (:class:`~oauth_callback.errors.StoreKeyError` otherwise,
        unless the store holds no encrypted record). Changes nothing.
        """
        statuses: list[RecordStatus] = []
        for section in _SECTIONS:
            for key in self.store._keys(section):
                try:
                    inner = self.store._read(section, key)
                except StoreCorruptError as exc:
                    statuses.append(RecordStatus(section, key, "undecryptable", reason=str(exc)))
                    continue
                if inner is None:
                    continue
                envelope = _envelope_of(inner)
                if envelope is None:
                    statuses.append(RecordStatus(section, key, "plaintext"))
                    continue
                kid = envelope.get("kid") if isinstance(envelope, dict) else None
                kid = kid if isinstance(kid, str) else None
                try:
                    self._decrypt(section, key, envelope)
                except StoreWrongKeyError:
                    statuses.append(RecordStatus(section, key, "other-key", key_id=kid))
                except StoreDecryptError as exc:
                    statuses.append(
                        RecordStatus(section, key, "undecryptable", key_id=kid, reason=str(exc))
                    )
                else:
                    statuses.append(RecordStatus(section, key, "encrypted", key_id=kid))
        return statuses
