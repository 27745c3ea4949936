"""KeyringStore: tokens in the OS keychain, through the :mod:`keyring` library.

Needs ``oauth-callback[keyring]``. The keychain is whatever backend keyring
uses: the macOS Keychain, the Windows Credential Locker, a Secret Service
provider on Linux (GNOME Keyring, KWallet, KeePassXC).

Layout, for a store with service name ``SERVICE`` (default ``oauth-callback``)::

    (SERVICE, "tokens:<key>")     the Tokens record of <key>, as JSON
    (SERVICE, "clients:<key>")    its ClientInfo record
    (SERVICE, "sessions:<key>")   its OAuthSession record
    (SERVICE, "__index__")        the key index (keyring cannot enumerate entries)

Each record is the exact JSON ``to_record()`` gives (the npm shape the other
backends store too). The index is JSON as well::

    {"format": 1,
     "keys": {"tokens": ["a", "b"], "clients": [...], "sessions": [...]},
     "pending": [["tokens", "b"]]}

``keys`` keeps each section's keys in the order they were added; ``pending``
lists the keys whose record a writer was about to create or delete.

Guarantees and behaviour:

* Every operation holds an inter-process lock (:class:`InterProcessLock`) on
  ``~/.cache/oauth-callback/keyring-<hash of SERVICE>.lock`` (directory
  ``0700``; ``$OAUTH_CALLBACK_LOCK_DIR`` or ``lock_path`` choose another
  place). ``update()`` is a read-modify-write of the record and the index
  under that lock, so no update is lost between threads or processes of one
  machine. Reads take the lock too: some backends (``keyrings.alt``'s file
  backends) rewrite their file in place, and a reader racing a writer could
  otherwise see a missing entry. Every process that shares a keychain must
  agree on the lock directory.
* Crash safety without transactions: adding a key writes the index with the
  key marked pending, then the record, then the index without the mark;
  deleting one marks it pending, deletes the record, then drops it from the
  index. A writer that dies in between leaves a pending key: ``keys()`` lists
  it exactly when its record exists, and the next write settles every pending
  key (keeps it if the record exists, drops it otherwise). A record that
  exists but is missing from the index (the index entry was deleted by hand)
  is still readable with ``get()`` and is listed again on its next write.
* No usable keychain (``keyring.backends.fail.Keyring``, the null backend, a
  chainer with nothing to chain, or an automatically chosen backend keyring
  itself does not recommend, priority below 1, such as ``keyrings.alt``'s
  plaintext file) raises :class:`StoreUnavailableError` when the store is
  created, naming the alternatives. Secrets are never written to a plaintext
  file unless the backend was chosen explicitly: the ``keyring_backend``
  argument, ``PYTHON_KEYRING_BACKEND``, or keyring's ``keyringrc.cfg``.
* Backend failures (a locked keychain, a refused access, D-Bus down) raise
  :class:`StoreUnavailableError` naming the service and entry, never a secret.
  A record or index entry that does not parse raises
  :class:`StoreCorruptError` naming the entry; nothing else is affected.

Limits: keychains are made for a few small secrets. Some cap the size of one
entry (the Windows Credential Locker at 2560 bytes), which a long JWT with its
refresh token and id token may exceed; the write then fails with
:class:`StoreUnavailableError` and the previous value stays. ``clear()``
removes the entries the index lists; entries missing from the index are left.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._extras import requires_extra

with requires_extra("KeyringStore", "the keyring package", "keyring"):
    import keyring
    import keyring.backend
    import keyring.errors
    from keyring.backends import chainer as _chainer
    from keyring.backends import fail as _fail
    from keyring.backends import null as _null

from ..errors import StoreCorruptError, StoreError, StoreUnavailableError
from ..fs import ensure_private_directory
from ..locking import InterProcessLock
from .base import Section, TokenStore
from .layout import keyring_lock_file, lock_file
from .records import decode_record, encode_record, load_json

__all__ = [
    "DEFAULT_SERVICE",
    "INDEX_USERNAME",
    "LOCK_DIR_ENV_VAR",
    "KeyringStore",
    "default_lock_dir",
    "entry_username",
]

#: The keyring service name used when none is given.
DEFAULT_SERVICE = "oauth-callback"
#: The keyring username of the key index entry.
INDEX_USERNAME = "__index__"
#: Environment variable that overrides the directory of the lock files.
LOCK_DIR_ENV_VAR = "OAUTH_CALLBACK_LOCK_DIR"
#: The index format this version writes; an index with a higher one is never modified.
INDEX_FORMAT = 1

_SECTIONS: tuple[Section, ...] = ("tokens", "clients", "sessions")

_ALTERNATIVES = (
    "Use another store instead: a FileStore (the default; '--store PATH' on the command "
    "line, e.g. ~/.mcp/tokens.json) or an SQLiteStore ('--store sqlite:PATH'). Or make a "
    "keychain available: on Linux install and unlock a Secret Service provider (GNOME "
    "Keyring, KWallet, KeePassXC) and the 'secretstorage' package. Or choose a keyring "
    "backend explicitly, knowing what it does with secrets: PYTHON_KEYRING_BACKEND="
    "keyrings.alt.file.PlaintextKeyring (package 'keyrings.alt'; stores them unencrypted), "
    "keyring's keyringrc.cfg, or KeyringStore(keyring_backend=...)."
)


def entry_username(section: str, key: str) -> str:
    """The keyring username under which ``section`` (``tokens``...) of ``key`` is stored."""
    return f"{section}:{key}"


def default_lock_dir() -> str:
    """``$OAUTH_CALLBACK_LOCK_DIR`` if set, else ``~/.cache/oauth-callback``, expanded.

    Deliberately not ``$XDG_RUNTIME_DIR``: a process started outside a login
    session (cron, a service) would lack it and lock another file.
    """
    configured = os.environ.get(LOCK_DIR_ENV_VAR)
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    return os.path.join(os.path.expanduser("~"), ".cache", "oauth-callback")


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------- backend choice


def _names_class(name: str, backend: keyring.backend.KeyringBackend) -> bool:
    """Whether the dotted class name ``name`` (as keyring's settings give it) is ``backend``'s."""
    module_name, _, class_name = name.strip().rpartition(".")
    if not module_name:
        return False
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except Exception:  # a setting that does not load names nothing
        return False
    return isinstance(cls, type) and isinstance(backend, cls)


def _chosen_explicitly(backend: keyring.backend.KeyringBackend) -> bool:
    """Whether the user picked ``backend`` in keyring's own settings (env var or keyringrc)."""
    env = os.environ.get("PYTHON_KEYRING_BACKEND", "").strip()
    if env:  # keyring reads the environment first
        return _names_class(env, backend)
    try:
        from keyring.util import platform_

        config = configparser.RawConfigParser()
        config.read(os.path.join(platform_.config_root(), "keyringrc.cfg"), encoding="utf-8")
        name = config.get("backend", "default-keyring", fallback="")
    except (OSError, configparser.Error, UnicodeError):
        return False
    return bool(name.strip()) and _names_class(name, backend)


def _unusable(backend: keyring.backend.KeyringBackend, explicit: bool) -> str | None:
    """Why ``backend`` cannot hold the store's secrets, or ``None`` when it can."""
    name = _class_name(type(backend))
    if isinstance(backend, _fail.Keyring):
        return "keyring found no backend at all (keyring.backends.fail.Keyring)"
    if isinstance(backend, _null.Keyring):
        return "the configured backend keyring.backends.null.Keyring discards every secret"
    if isinstance(backend, _chainer.ChainerBackend):
        try:
            chained = list(type(backend).backends)
        except Exception as exc:  # discovery failing means nothing to chain
            return f"the keyring chainer could not list its backends ({exc})"
        if not chained:
            return "the keyring chainer has no viable backend to chain"
        # Writes go to the first (highest priority) backend of the chain.
        return _unusable(chained[0], explicit=False)
    try:
        priority = float(type(backend).priority)
    except Exception as exc:  # keyring: priority raises when not viable
        return f"{name} is not usable here ({exc})"
    if priority < 1 and not explicit:
        return (
            f"the only backend found, {name} (priority {priority:g}), is one keyring does "
            "not recommend: it is a fallback, not a keychain (for keyrings.alt's "
            "PlaintextKeyring: an unencrypted file), so it is not used unless chosen "
            "explicitly"
        )
    return None


def _usable_backend(
    service: str, given: keyring.backend.KeyringBackend | None
) -> keyring.backend.KeyringBackend:
    resource = f"keyring:{service}"
    if given is not None:
        if not isinstance(given, keyring.backend.KeyringBackend):
            raise TypeError(
                f"keyring_backend must be a keyring backend, not {type(given).__name__}"
            )
        backend, explicit = given, True
    else:
        try:
            backend = keyring.get_keyring()
        except Exception as exc:  # a bad PYTHON_KEYRING_BACKEND, a broken plugin
            raise StoreUnavailableError(
                f"cannot store tokens in the keychain (service {service!r}): keyring could "
                f"not load its backend ({type(exc).__name__}: {exc}). {_ALTERNATIVES}",
                path=resource,
            ) from exc
        explicit = _chosen_explicitly(backend)
    reason = _unusable(backend, explicit)
    if reason is not None:
        raise StoreUnavailableError(
            f"cannot store tokens in the keychain (service {service!r}): {reason}. "
            f"Nothing was written. {_ALTERNATIVES}",
            path=resource,
        )
    return backend


# --------------------------------------------------------------------------- index


@dataclass
class _Index:
    keys: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in _SECTIONS})
    pending: list[tuple[str, str]] = field(default_factory=list)
    newer_format: int | None = None
    unknown: dict[str, Any] = field(default_factory=dict)  # fields of a newer version, kept

    def listed(self, section: str, key: str) -> bool:
        return key in self.keys.setdefault(section, [])

    def remove(self, section: str, key: str) -> None:
        keys = self.keys.setdefault(section, [])
        if key in keys:
            keys.remove(key)
        self.pending = [p for p in self.pending if p != (section, key)]

    def serialize(self) -> str:
        data: dict[str, Any] = dict(self.unknown)
        data.update(
            format=INDEX_FORMAT,
            keys={s: list(self.keys.get(s, [])) for s in _SECTIONS},
            pending=[list(p) for p in self.pending],
        )
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> _Index:
        """Parse the index entry; raises ``ValueError`` saying what is wrong."""
        data = load_json(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        fmt = data.get("format")
        if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
            raise ValueError("no valid 'format' number")
        raw_keys = data.get("keys", {})
        if not isinstance(raw_keys, dict):
            raise ValueError("'keys' is not an object")
        keys: dict[str, list[str]] = {s: [] for s in _SECTIONS}
        for section, listed in raw_keys.items():
            if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
                raise ValueError(f"'keys.{section}' is not a list of strings")
            keys[section] = list(dict.fromkeys(listed))
        raw_pending = data.get("pending", [])
        if not isinstance(raw_pending, list):
            raise ValueError("'pending' is not a list")
        pending: list[tuple[str, str]] = []
        for item in raw_pending:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(part, str) for part in item)
            ):
                raise ValueError("'pending' holds something other than [section, key] pairs")
            pending.append((item[0], item[1]))
        unknown = {k: v for k, v in data.items() if k not in ("format", "keys", "pending")}
        return cls(keys, pending, fmt if fmt > INDEX_FORMAT else None, unknown)


# --------------------------------------------------------------------------- store


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON-like ``value`` (to keep them out of error messages)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


class _BackendError(StoreUnavailableError):
    """A :class:`StoreUnavailableError` that remembers whether its cause was withheld."""

    withheld = False


class KeyringStore(TokenStore):
    """Tokens in the OS keychain under keyring service ``service`` (see the module docstring).

    ``keyring_backend`` picks a keyring backend object instead of keyring's
    current one (``keyring.get_keyring()``); passing one counts as choosing it
    explicitly. ``lock_path`` is the store's lock file (default:
    ``<default_lock_dir()>/keyring-<hash of service>.lock``); ``lock_timeout``
    bounds every wait for it (:class:`~oauth_callback.errors.StoreLockTimeout`).

    Raises :class:`~oauth_callback.errors.StoreUnavailableError` at once when
    no usable keychain backend exists; nothing is written in that case.
    """

    def __init__(
        self,
        service: str = DEFAULT_SERVICE,
        *,
        keyring_backend: keyring.backend.KeyringBackend | None = None,
        lock_path: str | os.PathLike[str] | None = None,
        lock_timeout: float = 10.0,
    ) -> None:
        if not isinstance(service, str) or not service:
            raise ValueError("keyring service name must be a non-empty string")
        self.service = service
        self.lock_timeout = lock_timeout
        self.backend = _usable_backend(service, keyring_backend)
        if lock_path is None:
            self.lock_path = keyring_lock_file(default_lock_dir(), service)
        else:
            self.lock_path = os.path.abspath(os.path.expanduser(os.fspath(lock_path)))
        self._lock = InterProcessLock(self.lock_path, timeout=lock_timeout)

    def describe(self) -> str:
        """``keyring:<service>``."""
        return self.resource

    @property
    def resource(self) -> str:
        """``keyring:<service>``: how errors name this store (and what ``open_store`` takes)."""
        return f"keyring:{self.service}"

    def __repr__(self) -> str:
        return f"KeyringStore({self.service!r}, backend={_class_name(type(self.backend))})"

    # -- the keychain -------------------------------------------------------

    def _get(self, username: str) -> str | None:
        try:
            value = self.backend.get_password(self.service, username)
        except Exception as exc:  # backends raise all sorts of errors
            raise self._backend_error(exc, "read", username, ()) from exc
        if value is not None and not isinstance(value, str):
            raise StoreCorruptError(
                f"entry {username!r} of keyring service {self.service!r} is not text",
                path=self.resource,
            )
        return value

    def _set(self, username: str, value: str, secrets: tuple[str, ...]) -> None:
        try:
            self.backend.set_password(self.service, username, value)
        except Exception as exc:
            error = self._backend_error(exc, "write", username, (value, *secrets))
            if error.withheld:  # the original message shows a secret: do not chain it
                raise error from None
            raise error from exc

    def _delete(self, username: str) -> None:
        try:
            self.backend.delete_password(self.service, username)
        except keyring.errors.PasswordDeleteError as exc:
            if self._get(username) is None:  # already gone: what we wanted
                return
            raise self._backend_error(exc, "delete", username, ()) from exc
        except Exception as exc:
            raise self._backend_error(exc, "delete", username, ()) from exc

    def _backend_error(
        self, exc: Exception, action: str, username: str, secrets: tuple[str, ...]
    ) -> _BackendError:
        detail = f"{type(exc).__name__}: {exc}"
        withheld = any(len(s) >= 4 and s in detail for s in secrets)
        if withheld:
            detail = f"{type(exc).__name__} (message withheld: it contains stored data)"
        hint = ""
        if isinstance(exc, keyring.errors.KeyringLocked):
            hint = " (the keychain is locked: unlock it and retry)"
        error = _BackendError(
            f"keyring backend {_class_name(type(self.backend))} could not {action} entry "
            f"{username!r} of service {self.service!r}{hint}: {detail}",
            path=self.resource,
        )
        error.withheld = withheld
        return error

    # -- locking --------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_lock_directory()
        with self._lock:
            yield

    def _ensure_lock_directory(self) -> None:
        ensure_private_directory(
            os.path.dirname(self.lock_path),
            purpose=f"the lock of keyring service {self.service!r}",
        )

    def refresh_lock(self, key: str, *, timeout: float | None = None) -> InterProcessLock:
        """Per-key inter-process lock ``<store lock minus .lock>.refresh-<hash of key>.lock``.

        As :meth:`FileStore.refresh_lock`: a file lock the kernel releases if
        its holder dies, separate from the store's lock, so a slow token
        endpoint never blocks readers, writers or other keys. Default timeout: 60 s.
        """
        self._check(key)
        base = self.lock_path.removesuffix(".lock")
        self._ensure_lock_directory()
        return InterProcessLock(
            lock_file(base, key), timeout=60.0 if timeout is None else timeout
        )

    # -- records and index --------------------------------------------------

    def _decode(self, section: str, key: str, text: str) -> Any:
        return decode_record(
            section, text,
            what=f"{section} record {key!r} (entry {entry_username(section, key)!r} of keyring "
            f"service {self.service!r})",
            path=self.resource,
            hint="Delete that keychain entry to drop the record",
        )

    def _load_index(self, *, for_write: bool) -> _Index:
        text = self._get(INDEX_USERNAME)
        if text is None:
            return _Index()
        try:
            index = _Index.parse(text)
        except ValueError as exc:  # RecordError from load_json included
            reason = str(exc)
            raise StoreCorruptError(
                f"the key index (entry {INDEX_USERNAME!r}) of keyring service "
                f"{self.service!r} is corrupt ({reason}); nothing was changed. The records "
                f"are intact: delete the index entry (keyring del {self.service} "
                f"{INDEX_USERNAME}) and it is rebuilt as keys are written again",
                path=self.resource,
            ) from None
        if for_write and index.newer_format is not None:
            raise StoreError(
                f"the key index of keyring service {self.service!r} was written by a newer "
                f"version of oauth-callback (format {index.newer_format} > {INDEX_FORMAT}); "
                "refusing to modify it",
                path=self.resource,
            )
        return index

    def _save_index(self, index: _Index) -> None:
        self._set(INDEX_USERNAME, index.serialize(), ())

    def _exists(self, section: str, key: str) -> bool:
        return self._get(entry_username(section, key)) is not None

    def _settle_pending(self, index: _Index) -> bool:
        """Keep each pending key whose record exists, drop the others; True if any was pending."""
        if not index.pending:
            return False
        for section, key in list(index.pending):
            if not self._exists(section, key):
                index.remove(section, key)
        index.pending = []
        return True

    # -- the TokenStore API ---------------------------------------------------

    def _read(self, section: Section, key: str) -> Any:
        with self._locked():
            text = self._get(entry_username(section, key))
        return None if text is None else self._decode(section, key, text)

    def _keys(self, section: Section) -> list[str]:
        with self._locked():
            index = self._load_index(for_write=False)
            pending = set(index.pending)
            return [
                key for key in index.keys.get(section, [])
                if (section, key) not in pending or self._exists(section, key)
            ]

    def _modify(self, section: Section, key: str, fn: Callable[[Any], Any]) -> Any:
        username = entry_username(section, key)
        with self._locked():
            index = self._load_index(for_write=True)
            text = self._get(username)
            current = None if text is None else self._decode(section, key, text)
            new = fn(current)
            if new is current:
                return current
            dirty = self._settle_pending(index)
            listed = index.listed(section, key)
            if new is None:
                if current is not None:
                    if listed:  # intent first: a crash from here on leaves a pending key
                        index.pending.append((section, key))
                        self._save_index(index)
                        dirty = True
                    self._delete(username)
                if listed:
                    index.remove(section, key)
                    dirty = True
                if dirty:
                    self._save_index(index)
                return None
            record = new.to_record()
            data = encode_record(record)
            secrets = tuple(_strings(record))
            if listed:
                if dirty:
                    self._save_index(index)
                self._set(username, data, secrets)
                return new
            index.keys.setdefault(section, []).append(key)
            index.pending.append((section, key))
            self._save_index(index)  # intent first: a crash from here on leaves a pending key
            self._set(username, data, secrets)
            index.pending.remove((section, key))
            self._save_index(index)
            return new

    def clear(self) -> None:
        """Remove every token, client and session the index lists.

        All listed keys are marked pending first, so a crash half-way leaves
        ``keys()`` true to the records that remain.
        """
        with self._locked():
            index = self._load_index(for_write=True)
            listed = [(s, k) for s, keys in index.keys.items() for k in keys]
            if not listed and not index.pending:
                return
            index.pending = listed
            self._save_index(index)
            for section, key in listed:
                self._delete(entry_username(section, key))
            index.keys = {s: [] for s in _SECTIONS}
            index.pending = []
            self._save_index(index)
