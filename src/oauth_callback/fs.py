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
import logging
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable

from .errors import StoreWriteError

__all__ = [
    "atomic_write",
    "fsync_directory",
    "ensure_private_directory",
    "pid_alive",
    "remove_stale_temp_files",
    "temp_file_pattern",
]

log = logging.getLogger("oauth_callback.fs")

_WINDOWS = sys.platform == "win32"
_MACOS = sys.platform == "darwin"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

#: How long a Windows ``os.replace`` is retried while another process holds the target open.
WINDOWS_REPLACE_TIMEOUT = 5.0


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


def remove_stale_temp_files(
    path: str | os.PathLike[str], *siblings: str | os.PathLike[str]
) -> list[str]:
    """Remove temp files of ``path`` (and of ``siblings`` in the same directory)
    left by writers that no longer exist.

    Only files matching :func:`temp_file_pattern` whose pid names no live
    process are removed; a live writer's temp file is never touched. Returns
    the removed paths. Never raises for a file that vanished meanwhile.
    """
    target = os.fspath(path)
    directory = os.path.dirname(target)
    names = [os.path.basename(target)] + [os.path.basename(os.fspath(s)) for s in siblings]
    patterns = [(f".{n}.", temp_file_pattern(n)) for n in names]
    removed: list[str] = []
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return removed
    for entry in entries:
        match = None
        for prefix, pattern in patterns:
            if entry.startswith(prefix):
                match = pattern.match(entry)
                if match is not None:
                    break
        if match is None or pid_alive(int(match["pid"])):
            continue
        stale = os.path.join(directory, entry)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
            removed.append(stale)
            log.info("removed stale temporary file %s", stale)
    return removed


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
    """Follow a symlink at ``path`` so the link's target is replaced and the link stays."""
    if os.path.islink(path):
        return os.path.realpath(path)
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


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
    directory, name = os.path.split(backup)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
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


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = 0o600,
    durable: bool = True,
    backup: str | os.PathLike[str] | None = None,
) -> None:
    """Replace the file at ``path`` with ``data``, atomically.

    * The temp file is created next to the target with
      ``O_CREAT | O_EXCL | O_NOFOLLOW`` and has ``mode`` before its first byte,
      whatever the umask. Its name is ``.<name>.<pid>.<random>.tmp``.
    * ``durable=True``: ``fsync`` the file before the rename and the directory
      after it. ``durable=False`` skips only the two ``fsync`` calls.
    * If ``path`` is a symlink, the file it points to is replaced; the link stays.
    * ``backup``: before replacing, keep the current file there (hard link,
      atomically; mode never looser than ``mode``).
    * Temp files of this target left by dead processes are removed first.

    Raises :class:`~oauth_callback.errors.StoreWriteError` (``.errno``,
    ``.path``) on failure; the target is then byte-for-byte unchanged and no
    temp file remains.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    target = _resolve_target(os.fspath(path))
    directory, name = os.path.split(target)
    directory = directory or "."
    if backup is None:
        remove_stale_temp_files(target)
    else:
        remove_stale_temp_files(target, backup)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    stage = "create temporary file"
    replaced = False
    try:
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
            _write_all(fd, data if isinstance(data, bytes) else bytes(data))
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
            raise StoreWriteError(
                f"could not write {target}: {stage} failed: "
                f"[Errno {exc.errno}] {exc.strerror or exc}; the file is unchanged",
                path=target,
                errno=exc.errno,
            ) from exc
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
