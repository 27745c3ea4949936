"""Atomic file replacement: the one function every file writer in this package uses.

:func:`atomic_write` replaces a file so that every reader, and the file system
after a crash, sees either the whole old content or the whole new content,
never a mix, a truncation or an empty file.

What is guaranteed (POSIX; see the README's "Guarantees" for other platforms):

* **Atomic** (``durable=True`` or ``False``): the new bytes go to a fresh
  temporary file in the target's directory which is then ``os.replace``\\ d onto
  the target. A process crash at any instant leaves the target either
  byte-for-byte old or byte-for-byte new.
* **Durable** (``durable=True`` only): the temporary file is ``fsync``\\ ed
  before the rename and the directory after it, so once the call returns the
  new content survives a power loss or kernel crash. With ``durable=False`` a
  power loss may roll the file back to an older complete version (never to a
  torn one on a journalling file system that orders data before metadata, such
  as ext4 ``data=ordered``, XFS, APFS or btrfs).
* **Failure**: any error removes the temporary file, leaves the target
  unchanged and raises :class:`~oauth_callback.errors.StoreWriteError` with the
  errno and path. The only exception is a failed ``fsync`` of the directory
  *after* a successful rename: the new content is then in place but possibly
  not durable, which the error says.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import functools
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable

from ._log import get_logger
from .errors import StorePermissionError, StoreWriteError

__all__ = [
    "Reservation",
    "atomic_write",
    "check_owner",
    "check_private_directory",
    "ensure_private_directory",
    "fsync_directory",
    "pid_alive",
    "refresh_backup",
    "remove_stale",
    "remove_stale_temp_files",
    "reserve",
    "temp_file_pattern",
]

log = get_logger("oauth_callback.fs")

_WINDOWS = sys.platform == "win32"
_MACOS = sys.platform == "darwin"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

#: How long a Windows ``os.replace`` is retried while another process holds the target open.
WINDOWS_REPLACE_TIMEOUT = 5.0


def _unique() -> str:
    """The 16 random hex digits of a temp file's name (``os.urandom``, as ``secrets``
    uses, without importing it: it loads OpenSSL, a cost every start would pay)."""
    return os.urandom(8).hex()


@functools.lru_cache(maxsize=64)
def temp_file_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`atomic_write` gives temporary files for target ``name``.

    ``.<name>.<pid>.<16 hex chars>.tmp``; group ``pid`` is the writer's process id.
    """
    return re.compile(r"\." + re.escape(name) + r"\.(?P<pid>\d+)\.[0-9a-f]{16}\.tmp\Z")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists: the rule for removing a temp file.

    A process owned by another user counts as alive; on Windows every pid does
    (there is no portable check without extra dependencies).
    """
    if pid == os.getpid():
        return True
    if _WINDOWS:  # pragma: no cover - no portable liveness check without extra deps
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    return True


def remove_stale(candidates: Iterable[tuple[str, int]]) -> list[str]:
    """Remove each ``(path, writer pid)`` whose writer no longer exists; return the removed.

    A live writer's file is never touched. A file that vanished meanwhile is
    skipped; one that cannot be removed (e.g. planted by another user in a
    sticky directory) is logged as a warning and left: it never makes the
    caller's write fail.
    """
    removed: list[str] = []
    for stale, pid in candidates:
        if pid_alive(pid):
            continue
        try:
            os.unlink(stale)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove stale temporary file %s: [Errno %s] %s",
                        stale, exc.errno, exc.strerror)
            continue
        removed.append(stale)
        log.info("removed stale temporary file %s", stale)
    return removed


def remove_stale_temp_files(
    path: str | os.PathLike[str], *siblings: str | os.PathLike[str]
) -> list[str]:
    """Remove temp files of ``path`` (and of ``siblings`` in the same directory)
    left by writers that no longer exist (see :func:`remove_stale`).

    Only files matching :func:`temp_file_pattern` whose pid names no live
    process are removed. Returns the removed paths; never raises.
    """
    target = os.fspath(path)
    directory = os.path.dirname(target)
    names = [os.path.basename(target)] + [os.path.basename(os.fspath(s)) for s in siblings]
    patterns = [(f".{n}.", temp_file_pattern(n)) for n in names]
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return []
    candidates: list[tuple[str, int]] = []
    for entry in entries:
        for prefix, pattern in patterns:
            if entry.startswith(prefix):
                match = pattern.match(entry)
                if match is not None:
                    candidates.append((os.path.join(directory, entry), int(match["pid"])))
                    break
    return remove_stale(candidates)


# --------------------------------------------------------------------------- strict modes


def _euid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def check_owner(st: os.stat_result, path: str, what: str) -> None:
    """Refuse (:class:`StorePermissionError`) a file owned by neither us nor root.

    OpenSSH's ``StrictModes`` rule: a file someone else owns may have been
    planted to be read (an attacker-chosen token endpoint) or replaced.
    No-op where there are no uids (Windows).
    """
    euid = _euid()
    if euid is None or st.st_uid in (euid, 0):
        return
    raise StorePermissionError(
        f"{what} {path} is owned by uid {st.st_uid} (mode {stat.S_IMODE(st.st_mode):04o}), "
        f"not by you (uid {euid}) or root; refusing to use it (strict modes: someone else "
        "may have planted it)",
        path=path,
    )


def check_private_directory(directory: str, what: str) -> None:
    """Refuse (:class:`StorePermissionError`) a directory owned by neither us nor root,
    or writable by group or others (who could replace, link or plant files in it).

    A directory that does not exist passes (it is created ``0700``).
    """
    if _euid() is None:  # pragma: no cover - Windows
        return
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorePermissionError(
            f"cannot check directory {directory} of {what}: [Errno {exc.errno}] {exc.strerror}",
            path=directory,
        ) from exc
    check_owner(st, directory, f"directory of {what}:")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002)) if mode & bit)
        raise StorePermissionError(
            f"directory {directory} of {what} has mode {mode:04o} (owner uid {st.st_uid}): "
            f"writable by {who}, who could replace or plant files next to it; refusing to use "
            f"it (strict modes). Use a private directory (chmod 700 {directory}, or another "
            "store path such as ~/.mcp/tokens.json)",
            path=directory,
        )


def ensure_private_directory(directory: str | os.PathLike[str], *, purpose: str) -> None:
    """Create ``directory`` and missing parents with mode ``0700`` (whatever the umask).

    Existing directories are left as they are. Raises :class:`StoreWriteError`
    naming the directory and ``purpose`` (e.g. ``"token store /x/tokens.json"``).
    """
    directory = os.fspath(directory)
    if os.path.isdir(directory):
        return
    missing: list[str] = []
    d = directory
    while d and not os.path.exists(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
            os.chmod(d, 0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise StoreWriteError(
                f"could not create directory {d} for {purpose}: [Errno {exc.errno}] {exc.strerror}",
                path=d,
                errno=exc.errno,
            ) from exc


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """``fsync`` a directory so a rename inside it is durable. No-op on Windows."""
    if _WINDOWS:  # pragma: no cover - directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(fd: int) -> None:
    if _MACOS:  # pragma: no cover - fsync on macOS does not flush the drive cache
        import fcntl

        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)  # type: ignore[attr-defined,unused-ignore]
            return
        except OSError:
            pass
    os.fsync(fd)


def _replace(
    src: str,
    dst: str,
    *,
    retry_permission_errors: bool | None = None,
    timeout: float = WINDOWS_REPLACE_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """``os.replace``; on Windows retry ``PermissionError`` (target held open) with back-off."""
    if retry_permission_errors is None:
        retry_permission_errors = _WINDOWS
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if not retry_permission_errors or time.monotonic() + delay > deadline:
                raise
            sleep(delay)
            delay = min(delay * 2, 0.25)


def _resolve_target(path: str) -> str:
    """Follow a symlink at ``path`` so the link's target is replaced and the link stays.

    A link owned by another user (not root) is never followed
    (:class:`StorePermissionError`): it may have been planted to redirect the write.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(st.st_mode):
        check_owner(st, path, "symlink")
        return os.path.realpath(path)
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def refresh_backup(path: str | os.PathLike[str], backup: str | os.PathLike[str], *,
                   mode: int = 0o600, durable: bool = True) -> None:
    """Make ``backup`` a hard link of the current ``path`` (atomically), so it holds
    nothing the current file does not (e.g. after a secret was removed)."""
    target = _resolve_target(os.fspath(path))
    backup = os.fspath(backup)
    _keep_backup(target, backup, mode)
    if durable:
        fsync_directory(os.path.dirname(backup) or ".")


def _keep_backup(target: str, backup: str, mode: int) -> None:
    """Make ``backup`` a copy of the current ``target`` (a hard link when possible)."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        return
    if stat.S_IMODE(st.st_mode) & ~mode:
        # The backup shares the old file's inode: never keep it looser than ``mode``.
        os.chmod(target, mode)
    with contextlib.suppress(OSError):
        kept = os.lstat(backup)
        if (kept.st_dev, kept.st_ino) == (st.st_dev, st.st_ino):
            # Already the backup. (rename() between two links of one file does
            # nothing and would leave the temp link behind.)
            return
    directory, name = os.path.split(backup)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{_unique()}.tmp")
    try:
        os.link(target, tmp)
    except OSError as exc:
        if exc.errno not in (errno_mod.EPERM, errno_mod.EXDEV, errno_mod.ENOTSUP, errno_mod.EMLINK):
            raise
        # File systems without hard links: copy the bytes instead (still atomic).
        with open(target, "rb") as f:
            old = f.read()
        atomic_write(backup, old, mode=mode, durable=False)
        return
    try:
        _replace(tmp, backup)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Reservation:
    """Disk space set aside for one later :func:`atomic_write` of ``path``: its temp file,
    created now and allocated to ``size`` bytes (see :func:`reserve`).

    Pass it to ``atomic_write(..., reservation=...)``, which writes into it
    (so that write cannot fail for want of space if the data fits), or
    :meth:`release` it. Used at most once.
    """

    __slots__ = ("fd", "path", "size", "target")

    def __init__(self, target: str, path: str, fd: int, size: int) -> None:
        self.target = target
        self.path = path
        self.fd: int | None = fd
        self.size = size

    @property
    def used(self) -> bool:
        """True once written or released."""
        return self.fd is None

    def _take(self) -> int:
        fd, self.fd = self.fd, None
        if fd is None:
            raise ValueError(f"the reservation for {self.target} was already used")
        return fd

    def release(self) -> None:
        """Give the space back (remove the temp file) unless it was used."""
        if self.fd is None:
            return
        fd = self._take()
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def __repr__(self) -> str:
        return f"Reservation({self.target!r}, size={self.size}, used={self.used})"


def _allocate(fd: int, size: int) -> None:
    """Make ``size`` bytes of ``fd`` really allocated on disk (not a sparse hole)."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno_mod.EOPNOTSUPP, errno_mod.ENOTSUP, errno_mod.EINVAL,
                                 errno_mod.ENOSYS):
                raise
    # No fallocate (macOS, some file systems): write the zeros ourselves.
    os.lseek(fd, 0, os.SEEK_SET)
    _write_all(fd, bytes(size))


def reserve(path: str | os.PathLike[str], size: int, *, mode: int = 0o600) -> Reservation:
    """Create the temp file of a future write of ``path`` and allocate ``size`` bytes to it.

    Raises :class:`StoreWriteError` (``errno``, e.g. ``ENOSPC``) when the
    space is not there; nothing is left behind then. On copy-on-write file
    systems (btrfs, ZFS) allocation does not guarantee that a later
    overwrite finds space; on ext4, XFS and tmpfs it does.
    """
    target = _resolve_target(os.fspath(path))
    directory, name = os.path.split(target)
    tmp = os.path.join(directory or ".", f".{name}.{os.getpid()}.{_unique()}.tmp")
    stage = "create temporary file"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
                     | _O_BINARY, mode)
    except OSError as exc:
        raise _write_error(target, stage, exc) from exc
    try:
        if hasattr(os, "fchmod") and stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            os.fchmod(fd, mode)
        stage = f"reserve {size} bytes for"
        _allocate(fd, size)
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(target, stage + " temporary file", exc) from exc
        raise
    return Reservation(target, tmp, fd, size)


def _write_error(target: str, stage: str, exc: OSError) -> StoreWriteError:
    return StoreWriteError(
        f"could not write {target}: {stage} failed: "
        f"[Errno {exc.errno}] {exc.strerror or exc}; the file is unchanged",
        path=target,
        errno=exc.errno,
    )


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = 0o600,
    durable: bool = True,
    backup: str | os.PathLike[str] | None = None,
    reservation: Reservation | None = None,
    clean_stale: bool = True,
) -> None:
    """Replace the file at ``path`` with ``data``, atomically.

    * The temp file is created next to the target with
      ``O_CREAT | O_EXCL | O_NOFOLLOW`` and has ``mode`` before its first byte,
      whatever the umask. Its name is ``.<name>.<pid>.<random>.tmp``. With a
      ``reservation`` (:func:`reserve`), its temp file is used instead: the
      data is written into the space allocated there, then truncated to size.
    * ``durable=True``: ``fsync`` the file before the rename and the directory
      after it. ``durable=False`` skips only the two ``fsync`` calls.
    * If ``path`` is a symlink, the file it points to is replaced; the link
      stays. A symlink owned by another user (not root) is refused.
    * ``backup``: before replacing, keep the current file there (hard link,
      atomically; mode never looser than ``mode``).
    * ``clean_stale``: temp files of this target left by dead processes are
      removed first (callers that clean up themselves pass ``False``).

    Raises :class:`~oauth_callback.errors.StoreWriteError` (``.errno``,
    ``.path``) on failure; the target is then byte-for-byte unchanged and no
    temp file remains.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    try:
        target = _resolve_target(os.fspath(path))
    except StorePermissionError:
        raise
    except OSError as exc:
        raise _write_error(os.fspath(path), "resolve path", exc) from exc
    directory, name = os.path.split(target)
    directory = directory or "."
    if clean_stale:
        if backup is None:
            remove_stale_temp_files(target)
        else:
            remove_stale_temp_files(target, backup)
    if reservation is not None and (reservation.used or reservation.target != target):
        reservation.release()  # the link was changed meanwhile: write without it
        reservation = None
    tmp = (reservation.path if reservation is not None else
           os.path.join(directory, f".{name}.{os.getpid()}.{_unique()}.tmp"))
    stage = "create temporary file"
    replaced = False
    try:
        if reservation is not None:
            fd = reservation._take()
        else:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY,
                mode,
            )
        try:
            if hasattr(os, "fchmod") and stat.S_IMODE(os.fstat(fd).st_mode) != mode:
                stage = "set mode of temporary file"
                os.fchmod(fd, mode)  # exact mode whatever the umask, before any byte
            stage = "write temporary file"
            if reservation is not None:
                os.lseek(fd, 0, os.SEEK_SET)
            _write_all(fd, data if isinstance(data, bytes) else bytes(data))
            if reservation is not None:
                os.ftruncate(fd, len(data))
            if durable:
                stage = "fsync temporary file"
                _fsync_file(fd)
        finally:
            os.close(fd)
        if _WINDOWS:  # pragma: no cover
            os.chmod(tmp, mode)
        if backup is not None:
            stage = "keep backup"
            _keep_backup(target, os.fspath(backup), mode)
        stage = "rename temporary file onto target"
        _replace(tmp, target)
        replaced = True
        if durable:
            stage = "fsync directory"
            fsync_directory(directory)
    except OSError as exc:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _write_error(target, stage, exc) from exc
        raise StoreWriteError(
            f"wrote {target} but {stage} failed: [Errno {exc.errno}] {exc.strerror or exc}; "
            "the new content is in place but may not survive a power loss",
            path=target,
            errno=exc.errno,
        ) from exc
    except BaseException:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
