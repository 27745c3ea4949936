"""SQLiteStore: tokens in an SQLite database (stdlib :mod:`sqlite3`), safe for many processes.

When to pick it over :class:`~oauth_callback.storage.file.FileStore`:

* **Many keys, many writers.** A write here is one small transaction whose
  cost does not depend on how much the store holds; ``FileStore`` rewrites
  (and fsyncs) the whole JSON file on every write and serializes every writer
  behind one file lock. With hundreds of keys or several processes refreshing
  tokens at once, SQLite is the better fit.
* Keep ``FileStore`` when the file must be shared with the npm
  ``oauth-callback`` package, read or edited by hand, or live on a network
  file system (SQLite's locking is unreliable on NFS/SMB).

Layout (schema version 1)::

    meta(name TEXT PRIMARY KEY, value TEXT)          -- 'schema_version' -> '1'
    records(section TEXT, key TEXT, record TEXT,      -- section: tokens|clients|sessions
            PRIMARY KEY (section, key))               -- record: the model's to_record() JSON
    corrupt_records(section, key, record, found_at)   -- what repair() moved aside

Each record is the exact JSON record ``to_record()`` gives (the npm shape
``FileStore`` writes too), so moving a store between backends is lossless.

Guarantees and behaviour:

* WAL journal, ``busy_timeout`` = ``timeout``, ``synchronous=FULL`` when
  ``durable`` (every committed write survives a power loss) else ``NORMAL``
  (atomic, but a power loss may roll back the last commits).
* ``update()`` is one ``BEGIN IMMEDIATE`` transaction (read, ``fn``, write,
  commit); a writer killed at any instant leaves the previous value. A writer
  that cannot get the database within ``timeout`` seconds raises
  :class:`~oauth_callback.errors.StoreLockTimeout` naming the file.
* The database and its ``-wal``/``-shm`` files are mode ``0600``; a directory
  the store creates is ``0700``. Reads of a store that does not exist yet
  create nothing.
* A file that is not an SQLite database, or a damaged one, raises
  :class:`~oauth_callback.errors.StoreCorruptError` naming the file and is
  never recreated or modified. A record whose JSON does not parse raises
  :class:`~oauth_callback.errors.StoreCorruptError` naming the key (for reads
  and writes of that key only); :meth:`SQLiteStore.repair` moves such records
  aside.
* One connection per store object and process, shared by its threads under a
  lock; a store inherited across ``fork()`` opens its own connection in the child.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .._log import get_logger
from ..errors import (
    StoreCorruptError,
    StoreError,
    StoreLockTimeout,
    StorePermissionError,
    StoreWriteError,
)
from ..fs import ensure_private_directory
from ..locking import InterProcessLock
from .base import Section, TokenStore
from .document import RESERVED_KEY
from .layout import lock_file
from .records import MODELS, corrupt, decode_record, encode_record

__all__ = ["SCHEMA_VERSION", "WAL_RESERVE", "SQLiteStore"]

log = get_logger("oauth_callback.storage")

#: The schema this version writes; a database with a higher one is read but never modified.
SCHEMA_VERSION = 1
#: Bytes :meth:`SQLiteStore.reserve_write` allocates in the WAL: 8 frames of 4 KiB pages.
WAL_RESERVE = 8 * (4096 + 24)

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: Every non-empty SQLite database file starts with these bytes.
_HEADER = b"SQLite format 3\x00"

# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS records ("
    " section TEXT NOT NULL, key TEXT NOT NULL, record TEXT NOT NULL,"
    " PRIMARY KEY (section, key))",
    "CREATE TABLE IF NOT EXISTS corrupt_records ("
    " section TEXT NOT NULL, key TEXT NOT NULL, record TEXT, found_at REAL NOT NULL)",
)


def _error_code(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of ``exc`` (Python 3.11+), else a guess from the text."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc).lower()
    for needle, guess in (
        ("not a database", _SQLITE_NOTADB),
        ("malformed", _SQLITE_CORRUPT),
        ("database is locked", _SQLITE_BUSY),
        ("readonly database", _SQLITE_READONLY),
        ("disk is full", _SQLITE_FULL),
        ("unable to open", _SQLITE_CANTOPEN),
        ("disk i/o error", _SQLITE_IOERR),
    ):
        if needle in text:
            return guess
    return None


def _close_if_owner(conn: sqlite3.Connection, pid: int) -> None:
    # A connection inherited across fork() must not be closed by the child: closing
    # may checkpoint or touch the WAL the parent is using.
    if os.getpid() == pid:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


class SQLiteStore(TokenStore):
    """Tokens in an SQLite database at ``path`` (see the module docstring for when to use it).

    ``timeout`` bounds every wait for the database (another process's write
    transaction, this store's other threads) before
    :class:`~oauth_callback.errors.StoreLockTimeout`. ``durable`` selects
    ``synchronous=FULL`` (``True``) or ``NORMAL``.
    """

    # Reserved so every key here can be migrated to a FileStore and back.
    reserved_keys = frozenset({RESERVED_KEY})

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        durable: bool = True,
    ) -> None:
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.timeout = timeout
        self.durable = durable
        self._mutex = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        self._inherited: list[sqlite3.Connection] = []
        self._newer_schema: int | None = None
        self._closed = False

    def describe(self) -> str:
        """``sqlite:<path>``."""
        return f"sqlite:{self.path}"

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, durable={self.durable})"

    # -- connection ---------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._mutex.acquire(timeout=max(self.timeout, 0.0)):
            raise StoreLockTimeout(
                f"timed out after {self.timeout:g}s waiting for token store {self.path} "
                "(held by another thread)",
                path=self.path,
            )
        try:
            yield
        finally:
            self._mutex.release()

    def _connection(self, *, create: bool) -> sqlite3.Connection | None:
        """This process's connection; ``None`` when the file is missing and not ``create``.

        Call with ``self._mutex`` held.
        """
        if self._closed:
            raise StoreError(f"token store {self.path} is closed", path=self.path)
        if self._conn is not None and self._pid != os.getpid():
            # Inherited across fork(): never use it, never close it (see _close_if_owner).
            self._inherited.append(self._conn)
            self._conn = None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            self._pid = os.getpid()
        if self._conn is not None:
            return self._conn
        if not create and not os.path.exists(self.path):
            return None
        self._conn = self._open()
        self._pid = os.getpid()
        self._finalizer = weakref.finalize(self, _close_if_owner, self._conn, self._pid)
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self._ensure_directory()
        self._create_file()
        self._check_header()
        uri = "file:" + urllib.parse.quote(self.path) + "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=self.timeout, isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._translate(exc, "open") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("token store %s: WAL mode unavailable, using %s", self.path, mode)
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            # Deleted tokens are overwritten with zeros instead of lingering in free pages.
            conn.execute("PRAGMA secure_delete=ON")
            self._ensure_schema(conn)
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._translate(exc, "open") from exc
            raise
        self._tighten_modes()
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        version = self._schema_version(conn)
        if version is None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            version = self._schema_version(conn)
        if version is None or version < 1:
            raise StoreCorruptError(
                f"token store {self.path} has no valid schema version; nothing was changed",
                path=self.path,
            )
        self._newer_schema = version if version > SCHEMA_VERSION else None

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if not has_meta:
            return None
        row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if row is None:
            return None
        try:
            return int(row[0])
        except (TypeError, ValueError):
            return 0

    def _create_file(self) -> None:
        """Create the database file with mode 0600 (SQLite gives -wal/-shm the same mode)."""
        if os.path.exists(self.path):
            return
        try:
            fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW, 0o600
            )
        except FileExistsError:
            return
        except OSError as exc:
            raise self._os_error(exc, "create") from exc
        try:
            if hasattr(os, "fchmod"):  # not on Windows before 3.13; modes are POSIX anyway
                os.fchmod(fd, 0o600)  # the umask may have removed bits
        finally:
            os.close(fd)

    def _check_header(self) -> None:
        """Refuse a non-empty file that is not SQLite: SQLite would take a file shorter
        than one page for an empty database and overwrite it."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(_HEADER))
        except OSError as exc:
            raise self._os_error(exc, "read") from exc
        if head and not _HEADER.startswith(head):
            raise StoreCorruptError(
                f"token store {self.path} is not an SQLite database (file is not a database); "
                "nothing was changed. Restore it from a backup or move it aside",
                path=self.path,
            )

    def _tighten_modes(self) -> None:
        """Make the database, -wal and -shm files 0600 if they are looser."""
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                mode = stat.S_IMODE(os.stat(name).st_mode)
                if mode & 0o077:
                    log.warning("token store file %s had mode %04o; tightening to 0600",
                                name, mode)
                    os.chmod(name, 0o600)
            except OSError:
                continue

    def _ensure_directory(self) -> None:
        ensure_private_directory(
            os.path.dirname(os.path.realpath(self.path)), purpose=f"token store {self.path}"
        )

    # -- errors ---------------------------------------------------------------

    def _os_error(self, exc: OSError, action: str) -> StoreError:
        if isinstance(exc, PermissionError):
            return StorePermissionError(
                f"permission denied trying to {action} token store {self.path}", path=self.path
            )
        return StoreWriteError(
            f"could not {action} token store {self.path}: [Errno {exc.errno}] {exc.strerror}",
            path=self.path, errno=exc.errno,
        )

    def _translate(self, exc: sqlite3.Error, action: str) -> StoreError:
        code = _error_code(exc)
        where = f"token store {self.path}"
        if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
            return StoreCorruptError(
                f"{where} is corrupt or not an SQLite database ({exc}); nothing was changed. "
                "Restore it from a backup or move it aside",
                path=self.path,
            )
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StoreLockTimeout(
                f"timed out after {self.timeout:g}s waiting for {where} "
                "(locked by another process)",
                path=self.path,
            )
        if code in (_SQLITE_READONLY, _SQLITE_PERM) or (
            code == _SQLITE_CANTOPEN and not os.access(self.path, os.R_OK | os.W_OK)
        ):
            return StorePermissionError(
                f"permission denied trying to {action} {where} ({exc})", path=self.path
            )
        if code == _SQLITE_FULL:
            return StoreWriteError(
                f"could not {action} {where}: disk full; the previous content is intact",
                path=self.path, errno=errno_mod.ENOSPC,
            )
        if code == _SQLITE_IOERR:
            return StoreWriteError(
                f"could not {action} {where}: I/O error ({exc}); the previous content is intact",
                path=self.path, errno=errno_mod.EIO,
            )
        return StoreError(f"could not {action} {where}: {exc}", path=self.path)

    def _decode(self, section: Section, key: str, text: Any) -> Any:
        if not isinstance(text, str):
            raise corrupt(f"{section} record {key!r} in token store {self.path}",
                          f"stored as {type(text).__name__}, not JSON text", path=self.path,
                          hint="SQLiteStore.repair() moves it aside")
        return decode_record(
            section, text, what=f"{section} record {key!r} in token store {self.path}",
            path=self.path, hint="SQLiteStore.repair() moves it aside",
        )

    # -- reading ---------------------------------------------------------------

    def _read(self, section: Section, key: str) -> Any:
        with self._locked():
            conn = self._connection(create=False)
            if conn is None:
                return None
            try:
                row = conn.execute(
                    "SELECT record FROM records WHERE section = ? AND key = ?", (section, key)
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._translate(exc, "read") from exc
        return None if row is None else self._decode(section, key, row[0])

    def _keys(self, section: Section) -> list[str]:
        with self._locked():
            conn = self._connection(create=False)
            if conn is None:
                return []
            try:
                rows = conn.execute(
                    "SELECT key FROM records WHERE section = ? ORDER BY rowid", (section,)
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._translate(exc, "read") from exc
        return [row[0] for row in rows]

    # -- writing ---------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any error."""
        with self._locked():
            conn = self._connection(create=True)
            assert conn is not None
            if self._newer_schema is not None:
                raise StoreError(
                    f"token store {self.path} has schema version {self._newer_schema}, written "
                    f"by a newer version of oauth-callback (> {SCHEMA_VERSION}); refusing to "
                    "modify it",
                    path=self.path,
                )
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._translate(exc, "write") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc, "write") from exc
                raise

    def _modify(self, section: Section, key: str, fn: Callable[[Any], Any]) -> Any:
        removed: list[bool] = []
        try:
            return self._modify_in_transaction(section, key, fn, removed)
        finally:
            if removed:
                self._scrub_wal()

    def _scrub_wal(self) -> None:
        """After a delete: checkpoint and truncate the WAL, whose frames still hold the
        removed record (the database pages are zeroed by ``secure_delete``). When another
        connection is reading, SQLite cannot reset the WAL now; the next checkpoint does."""
        with self._locked():
            conn = self._connection(create=False)
            if conn is None:
                return
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                log.info("token store %s: WAL checkpoint after a delete failed: %s",
                         self.path, exc)
                return
            if busy:
                log.info("token store %s: WAL checkpoint after a delete postponed (readers)",
                         self.path)

    def _modify_in_transaction(
        self, section: Section, key: str, fn: Callable[[Any], Any], removed: list[bool]
    ) -> Any:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT record FROM records WHERE section = ? AND key = ?", (section, key)
            ).fetchone()
            current = None if row is None else self._decode(section, key, row[0])
            new = fn(current)
            if new is current:
                return current
            if new is None:
                conn.execute("DELETE FROM records WHERE section = ? AND key = ?", (section, key))
                removed.append(True)
                return None
            text = encode_record(new.to_record())
            if row is None:
                conn.execute(
                    "INSERT INTO records (section, key, record) VALUES (?, ?, ?)",
                    (section, key, text),
                )
            else:  # UPDATE keeps the row (and so the key's place in keys())
                conn.execute(
                    "UPDATE records SET record = ? WHERE section = ? AND key = ?",
                    (text, section, key),
                )
            return new

    def clear(self) -> None:
        """Remove every token, client and session (and records :meth:`repair` moved aside)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM records")
            conn.execute("DELETE FROM corrupt_records")
        self._scrub_wal()

    # -- refresh coordination ------------------------------------------------------

    def refresh_lock(self, key: str, *, timeout: float | None = None) -> InterProcessLock:
        """Per-key inter-process lock ``<path>.refresh-<hash of key>.lock``.

        As :meth:`FileStore.refresh_lock`: a file lock the kernel releases if
        its holder dies, independent of the database, so a slow token endpoint
        never blocks readers, writers or other keys. Default timeout: 60 s.
        """
        self._check(key)
        self._ensure_directory()
        return InterProcessLock(lock_file(os.path.realpath(self.path), key),
                                timeout=60.0 if timeout is None else timeout)

    @contextlib.contextmanager
    def reserve_write(self, key: str) -> Iterator[None]:
        """Set aside the space the next commit needs, before a refresh spends its token.

        A commit appends its pages to the ``-wal`` file: this allocates
        :data:`WAL_RESERVE` bytes past its end (``posix_fallocate``; SQLite
        ignores the zero bytes, which are no valid frames), so that commit
        does not fail for want of space. Raises :class:`StoreWriteError`
        (``ENOSPC``) when the space is not there, before anything is sent. The
        allocation stays with the WAL until a checkpoint truncates it.
        Without ``posix_fallocate`` (macOS) nothing is reserved.
        """
        self._check(key)
        fallocate = getattr(os, "posix_fallocate", None)
        if fallocate is not None:
            with self._locked():
                conn = self._connection(create=True)
                assert conn is not None
                wal = self.path + "-wal"
                try:
                    fd = os.open(wal, os.O_WRONLY | _O_CLOEXEC | _O_NOFOLLOW)
                except FileNotFoundError:
                    fd = None  # not in WAL mode (see _open): nothing to extend
                except OSError as exc:
                    raise self._os_error(exc, "reserve space in") from exc
                if fd is not None:
                    try:
                        fallocate(fd, os.fstat(fd).st_size, WAL_RESERVE)
                    except OSError as exc:
                        raise self._os_error(exc, "reserve space in") from exc
                    finally:
                        os.close(fd)
        yield

    # -- maintenance --------------------------------------------------------------

    def repair(self) -> list[tuple[str, str]]:
        """Move records that do not parse into ``corrupt_records``; return their (section, key).

        Nothing is deleted: the bad records stay in the database for manual
        recovery (until :meth:`clear`). A damaged database file is not
        something this can fix; it keeps raising :class:`StoreCorruptError`.
        """
        moved: list[tuple[str, str]] = []
        with self._transaction() as conn:
            rows = conn.execute("SELECT section, key, record FROM records").fetchall()
            for section, key, text in rows:
                if section not in MODELS:
                    continue
                try:
                    self._decode(section, key, text)
                except StoreCorruptError:
                    moved.append((section, key))
            now = time.time()
            for section, key in moved:
                conn.execute(
                    "INSERT INTO corrupt_records (section, key, record, found_at) "
                    "SELECT section, key, record, ? FROM records WHERE section = ? AND key = ?",
                    (now, section, key),
                )
                conn.execute("DELETE FROM records WHERE section = ? AND key = ?", (section, key))
        for section, key in moved:
            log.warning("moved corrupt %s record %r of token store %s to corrupt_records",
                        section, key, self.path)
        return moved

    def close(self) -> None:
        """Close the connection. The store is unusable afterwards."""
        with self._mutex:
            self._closed = True
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            self._conn = None
