"""Exclusive locks across threads and processes on one machine.

:class:`InterProcessLock` pairs an in-process re-entrant lock (shared by every
instance in this process that names the same lock file) with an OS file lock
on that file, taken through :mod:`filelock` (``flock`` on Unix, ``LockFileEx``
on Windows). The kernel releases the file lock when its holder dies, so a
crashed process never leaves a lock held.

Limits, as ``filelock`` documents them: the lock excludes processes on one
machine; on network file systems (NFS, SMB) it may not exclude processes on
different clients. The lock file is kept after release on purpose: deleting it
would let two processes lock two different inodes.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import weakref
from types import TracebackType

import filelock

from .errors import StoreLockTimeout, StorePermissionError

__all__ = ["InterProcessLock"]

_registry_lock = threading.Lock()
_thread_locks: weakref.WeakValueDictionary[str, _SharedRLock] = weakref.WeakValueDictionary()


class _SharedRLock:
    """An RLock that can be held in a WeakValueDictionary."""

    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.RLock()


def _thread_lock_for(path: str) -> _SharedRLock:
    with _registry_lock:
        shared = _thread_locks.get(path)
        if shared is None:
            shared = _SharedRLock()
            _thread_locks[path] = shared
        return shared


class InterProcessLock:
    """An exclusive, re-entrant lock on ``path`` for threads and processes.

    ``acquire()`` waits at most ``timeout`` seconds (``None``: forever) and
    raises :class:`StoreLockTimeout` naming the lock file. A symlink at
    ``path`` is never followed (:class:`StorePermissionError`); the lock file is
    created with ``mode``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float | None = 10.0,
                 mode: int = 0o600) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.timeout = timeout
        self._shared = _thread_lock_for(self.path)
        self._file_lock = filelock.FileLock(
            self.path, mode=mode, thread_local=False, timeout=-1
        )

    @property
    def is_locked(self) -> bool:
        """True while this process holds the lock."""
        return self._file_lock.is_locked

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting at most ``timeout`` (default: the instance's)."""
        wait = self.timeout if timeout is None else timeout
        deadline = None if wait is None else time.monotonic() + wait
        if not self._shared.lock.acquire(timeout=-1 if wait is None else max(wait, 0.0)):
            raise StoreLockTimeout(
                f"timed out after {wait:g}s waiting for lock {self.path} (held by another thread)",
                path=self.path,
            )
        try:
            remaining = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
            self._file_lock.acquire(timeout=remaining, poll_interval=0.005)
        except filelock.Timeout:
            self._shared.lock.release()
            raise StoreLockTimeout(
                f"timed out after {wait:g}s waiting for lock {self.path} "
                "(held by another process)",
                path=self.path,
            ) from None
        except OSError as exc:
            self._shared.lock.release()
            if exc.errno == errno.ELOOP or os.path.islink(self.path):
                raise StorePermissionError(
                    f"lock file {self.path} is a symlink; refusing to follow it "
                    "(remove it if you did not create it)",
                    path=self.path,
                ) from exc
            if isinstance(exc, PermissionError):
                raise StorePermissionError(
                    f"permission denied on lock file {self.path}: {exc.strerror}", path=self.path
                ) from exc
            raise
        except BaseException:
            self._shared.lock.release()
            raise

    def release(self) -> None:
        """Release one level of the lock."""
        try:
            self._file_lock.release()
        finally:
            self._shared.lock.release()

    def __enter__(self) -> InterProcessLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"InterProcessLock({self.path!r}, locked={self.is_locked})"
