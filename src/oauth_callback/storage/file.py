"""FileStore: one JSON file, crash-safe and safe for many processes.

* Every write replaces the file with :func:`oauth_callback.fs.atomic_write`
  while holding an exclusive lock on ``<path>.lock``; the file is re-read
  inside the lock, so no update is ever lost.
* Readers take no lock: they always see a whole file.
* The previous good file is kept as ``<path>.bak``. A file that does not parse
  is never treated as empty: reads fall back to the backup and the next write
  moves the bad file aside (``<path>.corrupt-<timestamp>``); with no good
  backup every operation raises :class:`StoreCorruptError` until
  :meth:`FileStore.repair` is called.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator

from .._lazy import TYPE_CHECKING
from .._log import get_logger
from .._value import field, valueclass
from ..errors import StoreCorruptError, StoreError, StorePermissionError, StoreWriteError
from ..fs import (
    Reservation,
    atomic_write,
    check_owner,
    check_private_directory,
    ensure_private_directory,
    fsync_directory,
    refresh_backup,
    remove_stale,
    reserve,
)
from ..locking import InterProcessLock
from .base import Section, TokenStore
from .document import FORMAT_VERSION, RESERVED_KEY, Document, DocumentError
from .layout import FileLayout

if TYPE_CHECKING:
    from typing import Any

__all__ = ["DEFAULT_PATH", "ENV_VAR", "RESERVE_HEADROOM", "FileStore", "RepairReport",
           "default_path", "url_scheme"]

log = get_logger("oauth_callback.storage")

#: Environment variable that overrides the default store path.
ENV_VAR = "OAUTH_CALLBACK_STORE"
#: The npm package's default, shared on purpose.
DEFAULT_PATH = os.path.join("~", ".mcp", "tokens.json")


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+):")


def url_scheme(text: str) -> str | None:
    """The scheme ``text`` starts with (rule 1 of the store URL grammar of
    :mod:`~oauth_callback.storage.url`, which uses this), as written; ``None`` for a path
    (Windows drives included). Here, not there: telling a path from a URL must not load
    the URL parser."""
    match = _SCHEME.match(text)
    return None if match is None else match.group(1)


def default_path() -> str:
    """``$OAUTH_CALLBACK_STORE`` if set, else ``~/.mcp/tokens.json``, expanded.

    The variable may hold a path or ``file:PATH``. Any other store URL
    (``sqlite:``, ``redis://``, ...) raises ``ValueError``: open it with
    :func:`oauth_callback.storage.url.open_store` instead.
    """
    value = os.environ.get(ENV_VAR) or DEFAULT_PATH
    if value.startswith("file:"):
        value = value[len("file:"):]
        if value.startswith("//"):
            value = value[2:]
        if "?" in value:  # e.g. ?encryption=...: never silently dropped
            raise ValueError(
                f"${ENV_VAR} is a store URL with parameters; FileStore() needs a path "
                "(use oauth_callback.storage.url.open_store() to apply them)"
            )
    else:
        scheme = url_scheme(value)
        if scheme is not None:  # any shape: redis+cluster://... is never a directory
            raise ValueError(
                f"${ENV_VAR} is the store URL {scheme}:...; FileStore() needs a path "
                "(use oauth_callback.storage.url.open_store() for other stores)"
            )
    return os.path.abspath(os.path.expanduser(value))


#: Bytes :meth:`FileStore.reserve_write` sets aside beyond the current file size: room
#: for a refreshed record that much larger than the one it replaces.
RESERVE_HEADROOM = 16 * 1024

_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Keep the snapshot's file open (see _Pin). Not on Windows, where an open
# handle would make other processes' replace of the file fail.
_PIN_FILES = sys.platform != "win32"


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


class _Pin:
    """An open read-only descriptor on the file a snapshot was read from.

    While it is open the inode cannot be freed, so no other file can get its
    number: a later ``stat`` showing the same ``(st_dev, st_ino)`` is the very
    same file. Closed when the snapshot holding it is dropped.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@valueclass(repr=False)
class _Snapshot:
    """What one read of the file found (its ``repr`` shows no byte of the file: tokens)."""

    doc: Document
    data: bytes | None  # the bytes parsed; None when the file is missing
    key: tuple[int, int, int, int, int] | None
    mode: int | None = None
    corrupt_reason: str | None = None  # set when ``doc`` came from the backup
    pin: _Pin | None = None

    def __repr__(self) -> str:
        size = "missing" if self.data is None else f"<{len(self.data)} bytes>"
        return f"_Snapshot(data={size}, key={self.key!r}, corrupt_reason={self.corrupt_reason!r})"


@valueclass(frozen=False)
class RepairReport:
    """What :meth:`FileStore.repair` found and did."""

    path: str
    problems: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    corrupt_copy: str | None = None
    restored_from_backup: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing needed repair."""
        return not self.problems


_EMPTY = _Snapshot(Document.empty(), None, None)


class FileStore(TokenStore):
    """Tokens in one JSON file (default ``~/.mcp/tokens.json``, or ``$OAUTH_CALLBACK_STORE``).

    ``durable=True`` fsyncs each write (file and directory) before returning;
    ``durable=False`` keeps writes atomic but a power loss may roll back to an
    older whole version. ``lock_timeout`` bounds the wait for the write lock
    (:class:`StoreLockTimeout`). The file ends at ``file_mode`` after every
    write; a directory the store creates is ``0700``.
    """

    reserved_keys = frozenset({RESERVED_KEY})

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        durable: bool = True,
        lock_timeout: float = 10.0,
        file_mode: int = 0o600,
    ) -> None:
        self.path = (
            default_path() if path is None else os.path.abspath(os.path.expanduser(os.fspath(path)))
        )
        self.durable = durable
        self.lock_timeout = lock_timeout
        self.file_mode = file_mode
        #: Every file name of the store (the locks belong to the file the path
        #: resolves to, so a symlink and its target share them).
        self.layout = FileLayout.of(self.path)
        self._real_directory = self.layout.real_directory
        self.lock_path = self.layout.lock
        self._lock = InterProcessLock(self.lock_path, timeout=lock_timeout)
        self._reservations: dict[str, Reservation] = {}  # key -> its reserve_write()
        self._snapshot: _Snapshot = _EMPTY
        self._warned: set[tuple[int, int, int, int, int] | None] = set()

    @property
    def backup_path(self) -> str:
        """Where the previous good version is kept."""
        return self.layout.backup

    def describe(self) -> str:
        """The store file's path."""
        return self.path

    def close(self) -> None:
        """Drop the cached document and close the descriptor that pins its file."""
        self._snapshot = _EMPTY

    def __repr__(self) -> str:
        return f"FileStore({self.path!r}, durable={self.durable})"

    # -- reading ----------------------------------------------------------

    def _current(self) -> Document:
        """The latest document, re-read only when the file's identity changed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return _EMPTY.doc
        except StoreError:
            raise
        except OSError as exc:
            raise self._read_error(exc) from exc
        snapshot = self._snapshot
        if snapshot.key is not None and snapshot.key == _stat_key(st):
            return snapshot.doc
        return self._load().doc

    def _check_path(self) -> None:
        """Strict modes for the path (see the README's Guarantees): its directory is
        ours (or root's) and writable by no one else; a symlink at the path is ours
        (or root's), and so is the directory of the file it names."""
        layout = self.layout
        what = f"token store {self.path}"
        check_private_directory(layout.directory, what)
        try:
            lst = os.lstat(self.path)
        except FileNotFoundError:
            return
        except StoreError:
            raise
        except OSError as exc:
            raise self._read_error(exc) from exc
        if stat.S_ISLNK(lst.st_mode):
            check_owner(lst, self.path, "token store symlink")
            real_directory = os.path.dirname(os.path.realpath(self.path))
            if real_directory != layout.directory:
                check_private_directory(real_directory, what)

    def _check_file(self, fd: int, path: str, what: str = "token store") -> os.stat_result:
        """Strict modes for an opened store or backup file: a regular file, ours (or
        root's), and no hard link other than the store's own names. Returns its stat."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{what} {path} is not a regular file", path=path)
        check_owner(st, path, what)
        if st.st_nlink > 1 and st.st_nlink > self.layout.own_links(st):
            # A writer links the file to the backup while it holds the write lock;
            # seen from outside the lock that is a moment with two names. Look again
            # under the lock, where only a real foreign link remains.
            try:
                with self._lock:
                    st = os.fstat(fd)
                    extra = st.st_nlink > 1 and st.st_nlink > self.layout.own_links(st)
            except StoreError:  # no lock here (e.g. read-only): look once more
                st = os.fstat(fd)
                extra = st.st_nlink > 1 and st.st_nlink > self.layout.own_links(st)
            if extra:
                raise StoreError(
                    f"{what} {path} has {st.st_nlink} hard links: another path names the "
                    "same file. Two paths would take two different locks (and so refresh "
                    "one token twice), and the next write, a rename, would split them apart "
                    "silently. Refusing to use it: keep one path (remove the other link, or "
                    f"make it a symlink: ln -sf {path} OTHER)",
                    path=path,
                )
        return st

    def _load(self) -> _Snapshot:
        """Read and parse the file now (reusing the parse when the bytes match)."""
        self._check_path()
        try:
            fd = os.open(self.path, os.O_RDONLY | _O_BINARY | _O_CLOEXEC)
        except FileNotFoundError:
            self._snapshot = _EMPTY
            return _EMPTY
        except StoreError:
            raise
        except OSError as exc:
            raise self._read_error(exc) from exc
        pin = _Pin(fd)  # closes fd on every path, unless a snapshot keeps it
        try:
            st = self._check_file(fd, self.path)
            chunks = [os.read(fd, st.st_size + 1)]  # usually the whole file in one call
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 16))
            data = b"".join(chunks)
        except StoreError:
            raise
        except OSError as exc:
            raise self._read_error(exc) from exc
        key = _stat_key(st)
        mode = stat.S_IMODE(st.st_mode)
        kept = pin if _PIN_FILES else None
        previous = self._snapshot
        if previous.data is not None and previous.data == data and previous.corrupt_reason is None:
            snapshot = _Snapshot(previous.doc, data, key, mode, pin=kept)
        else:
            try:
                snapshot = _Snapshot(Document.parse(data), data, key, mode, pin=kept)
            except DocumentError as exc:
                snapshot = self._from_backup(str(exc), data, key, mode)
        self._snapshot = snapshot
        return snapshot

    def _load_for_write(self) -> _Snapshot:
        """The latest snapshot, under the write lock.

        Skips the read when the file is the one the current snapshot pins and
        its ``(mtime, ctime, size)`` are unchanged: every writer of this
        package replaces the file (a new inode), never modifies it in place,
        so the same pinned inode with the same times and size holds the same
        bytes. (A foreign program that rewrites the file in place without our
        lock, within one timestamp tick and to the same size, could go
        unnoticed, but such a writer races with every locked writer anyway.)
        """
        snapshot = self._snapshot
        if snapshot.pin is not None and snapshot.corrupt_reason is None:
            try:
                st = os.stat(self.path)
            except OSError:
                return self._load()
            if _stat_key(st) == snapshot.key:
                return snapshot
        return self._load()

    def _from_backup(
        self, reason: str, data: bytes, key: tuple[int, int, int, int, int], mode: int
    ) -> _Snapshot:
        try:
            backup = Document.parse(self._read_backup())
        except (OSError, DocumentError) as exc:
            why = "no backup" if isinstance(exc, FileNotFoundError) else f"backup unusable: {exc}"
            raise StoreCorruptError(
                f"token store {self.path} is corrupt ({reason}) and {why}; nothing was "
                f"changed. Run FileStore.repair() or 'oauth-callback doctor --repair'",
                path=self.path,
            ) from None
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "token store %s is corrupt (%s); using backup %s. The bad file will be "
                "moved aside on the next write.",
                self.path, reason, self.backup_path,
            )
        return _Snapshot(backup, data, key, mode, corrupt_reason=reason)

    def _read_backup(self) -> bytes:
        """The backup's bytes (``O_NOFOLLOW``; strict modes as for the store)."""
        fd = os.open(self.backup_path, os.O_RDONLY | _O_BINARY | _O_CLOEXEC | _O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            self._check_file(f.fileno(), self.backup_path, "token store backup")
            return f.read()

    def _read_error(self, exc: OSError) -> StoreError:
        if isinstance(exc, PermissionError):
            return StorePermissionError(
                f"permission denied reading token store {self.path}", path=self.path
            )
        return StoreError(
            f"could not read token store {self.path}: [Errno {exc.errno}] {exc.strerror}",
            path=self.path,
        )

    def _read(self, section: Section, key: str) -> Any:
        return self._current().get(section, key)

    def _keys(self, section: Section) -> list[str]:
        return self._current().keys(section)

    # -- writing ----------------------------------------------------------

    def _modify(self, section: Section, key: str, fn: Callable[[Any], Any]) -> Any:
        result: list[Any] = []
        removed_secret: list[bool] = []

        def change(doc: Document) -> Document | None:
            current = doc.get(section, key)
            new = fn(current)
            result.append(new)
            if new is current:
                return None
            # A removed record (a finished login's PKCE verifier and state, deleted
            # or logged-out tokens, a forgotten client secret) must not stay
            # behind in the backup: the backup becomes a copy of the new file.
            removed_secret.append(new is None and current is not None)
            return doc.with_value(section, key, new)

        self._transact(change, backup_current=removed_secret, key=key)
        return result[0]

    def clear(self) -> None:
        """Remove every token, client and session (unknown metadata is kept).

        The backup and every corrupt copy go too, so no cleared secret stays
        on disk. (``delete`` and every other removal make the backup a copy of
        the new file, so a removed record does not stay in it either.)
        """
        self._transact(lambda doc: Document({}, {}, doc.meta, {}, {}), keep_backup=False)

    def _transact(
        self,
        change: Callable[[Document], Document | None],
        *,
        keep_backup: bool = True,
        backup_current: list[bool] | None = None,
        key: str | None = None,
    ) -> None:
        """Run ``change`` on the latest document under the write lock and save its result.

        ``backup_current``: filled by ``change``; ``[True]`` makes the backup a
        copy of the new file instead of the old one.
        """
        self._ensure_directory()
        self._check_path()  # before the lock file is created
        with self._lock, self._os_errors():
            snapshot = self._load_for_write()
            if snapshot.doc.newer_version:
                raise StoreError(
                    f"token store {self.path} was written by a newer version of "
                    f"oauth-callback (format > {FORMAT_VERSION}); refusing to modify it",
                    path=self.path,
                )
            new_doc = change(snapshot.doc)
            if new_doc is None:
                return
            self._save(new_doc, snapshot, keep_backup=keep_backup,
                       backup_current=bool(backup_current and backup_current[-1]),
                       reservation=None if key is None else self._reservations.get(key))

    @contextlib.contextmanager
    def _os_errors(self) -> Iterator[None]:
        """Any OS error of a store operation becomes a :class:`StoreError` naming the file."""
        try:
            yield
        except OSError as exc:
            if isinstance(exc, StoreError):
                raise
            path = getattr(exc, "filename", None) or self.path
            cls = StorePermissionError if isinstance(exc, PermissionError) else StoreWriteError
            error = cls(
                f"token store {self.path}: operation on {path} failed: "
                f"[Errno {exc.errno}] {exc.strerror or exc}",
                path=self.path,
            )
            if isinstance(error, StoreWriteError):
                error.errno = exc.errno
            raise error from exc

    def _save(self, doc: Document, snapshot: _Snapshot, *, keep_backup: bool = True,
              backup_current: bool = False, reservation: Reservation | None = None) -> None:
        data = doc.serialize()
        backup: str | None = self.backup_path if keep_backup else None
        if snapshot.corrupt_reason is not None:
            self._move_aside()
            backup = None  # keep the good backup; never back up a bad file
        elif snapshot.data is None:
            backup = None
        if snapshot.mode is not None and snapshot.mode & ~self.file_mode:
            log.warning(
                "token store %s had mode %04o; tightening to %04o",
                self.path, snapshot.mode, self.file_mode,
            )
        remove_stale(self.layout.temp_files())
        atomic_write(self.path, data, mode=self.file_mode, durable=self.durable,
                     backup=None if backup_current else backup,
                     reservation=None if reservation is None or reservation.used else reservation,
                     clean_stale=False)
        if backup_current and backup is not None:
            refresh_backup(self.path, backup, mode=self.file_mode, durable=self.durable)
        if not keep_backup:
            removed = False
            for leftover in (self.backup_path, *self.layout.corrupt_copies()):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
                    removed = True
            if removed and self.durable:
                fsync_directory(os.path.dirname(self.backup_path))
        try:
            fd = os.open(self.path, os.O_RDONLY | _O_BINARY | _O_CLOEXEC)
        except OSError:
            self._snapshot = _EMPTY
            return
        pin = _Pin(fd)
        try:
            st = os.fstat(fd)
        except OSError:
            self._snapshot = _EMPTY
            return
        self._snapshot = _Snapshot(doc, data, _stat_key(st), stat.S_IMODE(st.st_mode),
                                   pin=pin if _PIN_FILES else None)

    def _move_aside(self) -> str:
        """Keep a copy of the bad file as ``<path>.corrupt-<timestamp>`` (a hard link)."""
        import datetime  # here: only a corrupt file needs it; every start pays imports

        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = f"{self.layout.corrupt_prefix}{stamp}"
        target = os.path.realpath(self.path)
        try:
            os.link(target, aside)
        except FileExistsError:
            aside = f"{aside}-{os.getpid()}"
            os.link(target, aside)
        except OSError:
            with open(target, "rb") as f:
                atomic_write(aside, f.read(), mode=self.file_mode, durable=False)
        with contextlib.suppress(OSError):
            if stat.S_IMODE(os.stat(aside).st_mode) & ~self.file_mode:
                os.chmod(aside, self.file_mode)  # it may hold secrets too
        log.warning("moved corrupt token store %s aside to %s", self.path, aside)
        return aside

    def _ensure_directory(self) -> None:
        ensure_private_directory(self._real_directory, purpose=f"token store {self.path}")

    # -- refresh coordination ------------------------------------------------------

    def refresh_lock(self, key: str, *, timeout: float | None = None) -> InterProcessLock:
        """Per-key inter-process lock ``<path>.refresh-<hash of key>.lock``.

        A file lock, released by the kernel if its holder dies, separate from
        the store's write lock so a slow token endpoint never blocks readers,
        writers or other keys. Default timeout: 60 s.
        """
        self._check(key)
        self._ensure_directory()
        self._check_path()
        return InterProcessLock(self.layout.refresh_lock(key),
                                timeout=60.0 if timeout is None else timeout)

    @contextlib.contextmanager
    def reserve_write(self, key: str) -> Iterator[None]:
        """Set aside the disk space the next write of ``key`` needs (from any thread),
        before an irreversible step (a refresh spends the old refresh token).

        Creates the temp file of that write and allocates the current file size
        plus :data:`RESERVE_HEADROOM` bytes to it (``posix_fallocate``); the
        first write of ``key`` inside the block writes into it. Raises
        :class:`StoreWriteError` (e.g. ``errno.ENOSPC``) when the space is not
        there, and then nothing was changed. A normal ``set()`` does not
        reserve and costs nothing more.
        """
        self._check(key)
        if key in self._reservations:
            yield  # nested: the outer reservation serves
            return
        self._ensure_directory()
        with self._os_errors():
            self._check_path()
            try:
                size = os.stat(self.path).st_size
            except FileNotFoundError:
                size = 0
        reservation = reserve(self.path, size + RESERVE_HEADROOM, mode=self.file_mode)
        self._reservations[key] = reservation
        try:
            yield
        finally:
            del self._reservations[key]
            reservation.release()

    # -- maintenance --------------------------------------------------------

    def check_repairable(self) -> None:
        """Refuse (:class:`StoreError`) to repair a file that is not recognisably a token
        store: one whose content is not a JSON object (nor empty or zeroed, as a
        crash can leave it) and that has no usable backup, e.g. a mistyped
        ``--store`` naming an unrelated file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | _O_BINARY | _O_CLOEXEC | _O_NOFOLLOW)
        except OSError:
            fd = None
        if fd is None:  # missing, or a symlink: the strict checks decide
            return
        with os.fdopen(fd, "rb") as f:
            head = f.read(4096).lstrip()
        if not head.strip(b"\0") or head.startswith(b"{"):
            return  # empty, zeroed (a crash) or a JSON object (perhaps damaged): a store
        try:
            Document.parse(self._read_backup())
            return  # a good backup of ours sits next to it
        except (OSError, DocumentError, StoreError):
            pass
        raise StoreError(
            f"{self.path} does not look like a token store (it is not JSON and has no "
            f"backup {self.backup_path}); refusing to repair it, nothing was changed. "
            "Check the store path (--store, $OAUTH_CALLBACK_STORE); if it really is your "
            "token store, move it aside yourself",
            path=self.path,
        )

    def repair(self) -> RepairReport:
        """Bring the store back to a usable state, losing as little as possible.

        Refuses a file that is not recognisably a token store
        (:meth:`check_repairable`). Under the write lock: remove temp files of
        dead writers; if the file does not parse, move it aside and restore the
        backup when it is good, else start an empty store (the bad file is
        kept, so nothing is deleted); tighten a loose file mode. Returns what
        it found and did.
        """
        report = RepairReport(self.path)
        self.check_repairable()
        self._ensure_directory()
        self._check_path()
        with self._lock, self._os_errors():
            for removed in remove_stale(self.layout.temp_files()):
                report.problems.append(f"stale temporary file {removed}")
                report.actions.append(f"removed {removed}")
            try:
                snapshot = self._load()
            except StoreCorruptError as exc:
                report.problems.append(str(exc))
                report.corrupt_copy = self._move_aside()
                report.actions.append(f"moved the corrupt file aside to {report.corrupt_copy}")
                self._snapshot = _EMPTY
                atomic_write(self.path, Document.empty().serialize(), mode=self.file_mode,
                             durable=self.durable)
                report.actions.append("started an empty store (no good backup existed)")
                self._load()
                return report
            if snapshot.corrupt_reason is not None:
                report.problems.append(f"{self.path} is corrupt ({snapshot.corrupt_reason})")
                self._save(snapshot.doc, snapshot)
                report.corrupt_copy = self._last_corrupt_copy()
                report.restored_from_backup = True
                report.actions.append(
                    f"moved the corrupt file aside and restored {self.backup_path}"
                )
            elif snapshot.mode is not None and snapshot.mode & ~self.file_mode:
                report.problems.append(f"{self.path} has mode {snapshot.mode:04o}")
                os.chmod(os.path.realpath(self.path), self.file_mode)
                report.actions.append(f"set mode {self.file_mode:04o}")
            with contextlib.suppress(OSError):
                st = os.stat(self.backup_path)
                if stat.S_IMODE(st.st_mode) & ~self.file_mode:
                    os.chmod(self.backup_path, self.file_mode)
                    report.problems.append(f"{self.backup_path} had a loose mode")
                    report.actions.append(f"set mode {self.file_mode:04o} on {self.backup_path}")
        return report

    def _last_corrupt_copy(self) -> str | None:
        copies = self.layout.corrupt_copies()
        return copies[-1] if copies else None
