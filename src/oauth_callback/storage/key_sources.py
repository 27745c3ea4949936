"""Where the key of an :class:`~oauth_callback.storage.encrypted.EncryptedStore` comes from.

A key is 32 random bytes (AES-256). Its text form, in an environment
variable or a key file, is the base64url encoding of those bytes (43
characters, ``=`` padding optional, surrounding whitespace ignored).

* ``env:NAME``: the environment variable ``NAME`` (:class:`EnvKey`).
* ``file:PATH``: a key file (:class:`FileKey`) that must be a regular file
  owned by the user running the process and readable by nobody else (no group
  or other permission bits: ``0600`` or ``0400``). Create one with
  ``oauth-callback tokens keygen PATH`` (:func:`write_key_file`).
* ``keyring``: a random key generated on first use and kept in the OS keychain
  (:class:`KeyringKey`; needs ``oauth-callback[keyring]``), service
  ``oauth-callback-encryption``, entry ``default``.

Every failure raises :class:`~oauth_callback.errors.StoreKeyError` naming the
source (``env:NAME``...), never the key. A key's *id*
(:func:`key_id`) is a one-way fingerprint stored with every record, so a
record written under another key is recognised without trying to decrypt it.
"""

from __future__ import annotations

import abc
import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import threading
from typing import Any

from ..errors import StoreKeyError, StoreWriteError
from ..fs import ensure_private_directory, fsync_directory

__all__ = [
    "KEY_BYTES",
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "EnvKey",
    "FileKey",
    "KeySource",
    "KeyringKey",
    "StaticKey",
    "decode_key",
    "encode_key",
    "generate_key",
    "key_id",
    "parse_key_source",
    "write_key_file",
]

#: Length of a key in bytes (AES-256).
KEY_BYTES = 32
#: The keychain entry of the ``keyring`` key source.
KEYRING_SERVICE = "oauth-callback-encryption"
KEYRING_USERNAME = "default"

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_MAX_KEY_FILE = 4096


def generate_key() -> bytes:
    """32 bytes from the OS's cryptographic random source."""
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """The text form of ``key``: unpadded base64url (what ``env:`` and ``file:`` hold)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"an encryption key is {KEY_BYTES} bytes, not {len(key)}")
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def decode_key(text: str) -> bytes:
    """Parse the text form of a key. Raises ``ValueError`` (never quoting ``text``)."""
    text = text.strip()
    if not text:
        raise ValueError("it is empty")
    if any(c not in _B64URL for c in text.rstrip("=")):
        raise ValueError(f"it is not base64url text (the form of a {KEY_BYTES}-byte key)")
    try:
        raw = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("it is not valid base64url") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"it decodes to {len(raw)} bytes, not {KEY_BYTES}")
    return raw


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def key_id(key: bytes) -> str:
    """A short public id of ``key`` (HMAC-SHA-256 of a fixed label, 16 hex digits).

    One-way: it identifies a key without revealing it.
    """
    return hmac.new(key, b"oauth-callback key id v1", hashlib.sha256).hexdigest()[:16]


class KeySource(abc.ABC):
    """Gives the key of an encrypted store. ``description`` names it, never the key."""

    description: str

    @abc.abstractmethod
    def load(self, *, create: bool = False) -> bytes | None:
        """The key, or ``None`` when none exists yet and ``create`` is false.

        Sources that cannot create a key (``env:``, ``file:``) raise
        :class:`~oauth_callback.errors.StoreKeyError` when it is missing.
        """

    def _error(self, reason: str) -> StoreKeyError:
        return StoreKeyError(
            f"encryption key from {self.description}: {reason}", key_source=self.description
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


class StaticKey(KeySource):
    """A key given as bytes (for programs that manage keys themselves, and tests)."""

    def __init__(self, key: bytes, *, description: str = "a key passed in") -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ValueError(f"an encryption key is {KEY_BYTES} bytes")
        self._key = key
        self.description = description

    def load(self, *, create: bool = False) -> bytes:
        """The key."""
        return self._key


class EnvKey(KeySource):
    """``env:NAME``: the base64url key in the environment variable ``NAME``."""

    def __init__(self, name: str) -> None:
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"invalid environment variable name {name!r} for an encryption key")
        self.name = name
        self.description = f"env:{name}"

    def load(self, *, create: bool = False) -> bytes:
        """The key in ``$NAME``; :class:`StoreKeyError` when unset or malformed."""
        value = os.environ.get(self.name)
        if value is None:
            raise self._error(
                f"the environment variable {self.name} is not set "
                "(set it to a key made by 'oauth-callback tokens keygen')"
            )
        try:
            return decode_key(value)
        except ValueError as exc:
            raise self._error(f"the value of {self.name} is not a key: {exc}") from None


class FileKey(KeySource):
    """``file:PATH``: a key file owned by the user and readable by nobody else."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        raw = os.fspath(path)
        if not raw:
            raise ValueError("file: key source needs a path (file:PATH)")
        self.path = os.path.abspath(os.path.expanduser(raw))
        self.description = f"file:{self.path}"

    def load(self, *, create: bool = False) -> bytes:
        """The key in the file; :class:`StoreKeyError` when missing, loose or malformed."""
        try:
            fd = os.open(self.path, os.O_RDONLY | _O_CLOEXEC)
        except FileNotFoundError:
            raise self._error(
                f"no key file at {self.path} (create one with 'oauth-callback tokens keygen "
                f"{self.path}')"
            ) from None
        except OSError as exc:
            raise self._error(f"cannot open {self.path}: [Errno {exc.errno}] {exc.strerror}") \
                from None
        try:
            st = os.fstat(fd)  # the file opened, not whatever the path names later
            if not stat.S_ISREG(st.st_mode):
                raise self._error(f"{self.path} is not a regular file")
            euid = os.geteuid() if hasattr(os, "geteuid") else None
            if euid is not None and st.st_uid != euid:
                raise self._error(
                    f"{self.path} is owned by uid {st.st_uid}, not by you (uid {euid}); "
                    "a key file must belong to the user who runs the program"
                )
            mode = stat.S_IMODE(st.st_mode)
            if euid is not None and mode & 0o077:
                raise self._error(
                    f"{self.path} has mode {mode:04o}; a key file must be readable by its "
                    f"owner only (chmod 600 {self.path})"
                )
            data = os.read(fd, _MAX_KEY_FILE + 1)
        except OSError as exc:
            raise self._error(f"cannot read {self.path}: [Errno {exc.errno}] {exc.strerror}") \
                from None
        finally:
            os.close(fd)
        try:
            if len(data) > _MAX_KEY_FILE:
                raise ValueError("it is far too long")
            return decode_key(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            reason = exc if isinstance(exc, ValueError) and not isinstance(
                exc, UnicodeDecodeError) else "it is not ASCII text"
            raise self._error(f"{self.path} does not hold a key: {reason}") from None


class KeyringKey(KeySource):
    """``keyring``: a random key generated once and kept in the OS keychain.

    The key is created on the first write to an encrypted store (never by a
    read), under an inter-process lock so two processes starting at once
    agree on one key. Needs ``oauth-callback[keyring]`` and a usable keychain
    (the same rules as :class:`~oauth_callback.storage.keyring.KeyringStore`).
    """

    description = "keyring"

    def __init__(
        self,
        service: str = KEYRING_SERVICE,
        username: str = KEYRING_USERNAME,
        *,
        keyring_backend: object | None = None,
    ) -> None:
        self.service = service
        self.username = username
        self.description = "keyring"
        if (service, username) != (KEYRING_SERVICE, KEYRING_USERNAME):
            self.description = f"keyring ({service}/{username})"
        self._given = keyring_backend
        self._mutex = threading.Lock()

    def _backend(self) -> Any:
        try:
            import keyring
        except ImportError:
            raise self._error(
                "the keyring package is not installed (pip install 'oauth-callback[keyring]')"
            ) from None
        from .keyring import _chosen_explicitly, _unusable

        backend: Any
        if self._given is not None:
            backend, explicit = self._given, True
        else:
            try:
                backend = keyring.get_keyring()
            except Exception as exc:  # a bad PYTHON_KEYRING_BACKEND, a broken plugin
                raise self._error(
                    f"keyring could not load its backend ({type(exc).__name__})"
                ) from None
            explicit = _chosen_explicitly(backend)
        reason = _unusable(backend, explicit)
        if reason is not None:
            raise self._error(
                f"no usable keychain: {reason}. Use env:NAME or file:PATH instead"
            )
        return backend

    def _get(self) -> str | None:
        backend = self._backend()  # first: it reports a missing keyring package
        import keyring.errors

        try:
            value = backend.get_password(self.service, self.username)
        except keyring.errors.KeyringError as exc:
            raise self._error(f"the keychain refused access ({type(exc).__name__})") from None
        return value if isinstance(value, str) else None

    def load(self, *, create: bool = False) -> bytes | None:
        """The key in the keychain; with ``create``, a new one stored there if none exists."""
        value = self._get()
        if value is None and create:
            value = self._create()
        if value is None:
            return None
        try:
            return decode_key(value)
        except ValueError as exc:
            raise self._error(
                f"the keychain entry {self.service}/{self.username} is not a key: {exc}"
            ) from None

    def _create(self) -> str:
        import keyring.errors

        from ..locking import InterProcessLock
        from .keyring import default_lock_dir

        lock_dir = default_lock_dir()
        ensure_private_directory(lock_dir, purpose="the encryption key lock")
        digest = hashlib.sha256(f"{self.service}\0{self.username}".encode()).hexdigest()[:16]
        lock = InterProcessLock(os.path.join(lock_dir, f"encryption-key-{digest}.lock"))
        with self._mutex, lock:
            value = self._get()  # another process may have created it meanwhile
            if value is not None:
                return value
            try:
                self._backend().set_password(
                    self.service, self.username, encode_key(generate_key())
                )
            except keyring.errors.KeyringError as exc:
                raise self._error(
                    f"could not store a new key in the keychain ({type(exc).__name__})"
                ) from None
            stored = self._get()
        if stored is None:
            raise self._error("the keychain did not keep the new key")
        return stored


def parse_key_source(text: str | KeySource) -> KeySource:
    """The :class:`KeySource` that ``keyring``, ``env:NAME`` or ``file:PATH`` names.

    Raises ``ValueError`` naming the accepted forms for anything else.
    """
    if isinstance(text, KeySource):
        return text
    if not isinstance(text, str):
        raise TypeError(f"key source must be a str or KeySource, not {type(text).__name__}")
    if text == "keyring":
        return KeyringKey()
    if text.startswith("env:") and len(text) > len("env:"):
        return EnvKey(text[len("env:"):])
    if text.startswith("file:") and len(text) > len("file:"):
        return FileKey(text[len("file:"):])
    raise ValueError(
        f"unknown encryption key source {text!r}; use keyring, env:NAME or file:PATH"
    )


def write_key_file(path: str | os.PathLike[str]) -> str:
    """Create a key file at ``path`` holding a new random key; return the key's id.

    The file is created with mode ``0600`` and never replaces an existing
    file (``FileExistsError``); it appears whole or not at all (written to a
    temporary file, ``fsync``\\ ed, then hard-linked into place). A missing
    directory is created with mode ``0700``.
    """
    target = os.path.abspath(os.path.expanduser(os.fspath(path)))
    directory = os.path.dirname(target)
    ensure_private_directory(directory, purpose=f"key file {target}")
    if os.path.lexists(target):
        raise FileExistsError(f"{target} already exists; a key file is never overwritten")
    key = generate_key()
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
            os.write(fd, (encode_key(key) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise FileExistsError(
                f"{target} already exists; a key file is never overwritten"
            ) from None
        fsync_directory(directory)
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
        raise StoreWriteError(
            f"could not write key file {target}: [Errno {exc.errno}] {exc.strerror}",
            path=target, errno=exc.errno,
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return key_id(key)
