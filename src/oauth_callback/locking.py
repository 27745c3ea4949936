"""Exclusive locks across threads and processes on one machine.

:class:`InterProcessLock` pairs an in-process re-entrant lock (shared by every
instance in this process that names the same lock file) with an OS file lock
on that file. The kernel releases the file lock when its holder dies, so a
crashed process never leaves a lock held.

On Linux and macOS the file lock is ``flock(2)`` taken directly: it is on the
hot path of every store write, and :mod:`filelock`'s general machinery costs
about 150 µs per lock cycle there (measured: ``FileStore.set()`` at 1.74x the
bare write+fsync+rename floor with it, 1.44x without). On Windows, and on file
systems where ``flock`` is not supported, :mod:`filelock` does the locking
(``LockFileEx``; its soft-lock fallback).

Limits, as ``filelock`` documents them: the lock excludes processes on one
machine; on network file systems (NFS, SMB) it may not exclude processes on
different clients. The lock file is kept after release on purpose: deleting it
would let two processes lock two different inodes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import weakref
from collections.abc import Callable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from ._lazy import TYPE_CHECKING
from .errors import StoreLockTimeout, StorePermissionError, StoreWriteError

if TYPE_CHECKING:
    from typing import Protocol

    class _FileLockLike(Protocol):
        @property
        def is_locked(self) -> bool: ...

        def acquire(
            self, timeout: float | None = None, poll_interval: float | None = None
        ) -> object: ...

        def release(self) -> None: ...


__all__ = ["InterProcessLock"]

_registry_lock = threading.Lock()
_shared_locks: weakref.WeakValueDictionary[str, _Shared] = weakref.WeakValueDictionary()


class _Shared:
    """What every InterProcessLock on one path in this process shares: a
    re-entrant thread lock and the one OS file lock it guards (so nesting in a
    thread re-enters instead of deadlocking on a second descriptor)."""

    __slots__ = ("__weakref__", "file_lock", "lock", "mode", "path", "watch")

    def __init__(self, path: str, mode: int, file_lock: _FileLockLike) -> None:
        self.path = path
        self.mode = mode
        self.lock = threading.RLock()
        self.file_lock = file_lock
        self.watch = _ReleaseWatch(path, mode)


class _ReleaseWatch:
    """Wakes every thread of this process waiting for a release of the lock file, at once.

    At most one watcher thread per lock file and process sleeps in a blocking
    ``flock(LOCK_SH)`` on its own descriptor (it conflicts with the holder's
    ``LOCK_EX``, whichever process or thread holds it); the kernel wakes it on
    the release, it lets go at once and bumps ``generation``. A blocking
    ``flock`` cannot be interrupted, so a waiter that times out just stops
    waiting: the watcher ends with the holder's release (or death), never
    holding anything meanwhile but a wait, and is reused by later waiters.
    """

    __slots__ = ("cv", "failed", "generation", "mode", "path", "released", "running")

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.mode = mode
        self.cv = threading.Condition(threading.Lock())
        self.generation = 0
        self.running = False
        self.failed = False
        self.released = False

    def wait(self, deadline: float | None) -> bool | None:
        """Wait for the next release of a held lock: ``True`` when it came, ``False``
        when the lock was free as the watcher looked (queue for it then: waiting
        again would only spin, and shared probes would starve the taker), ``None``
        on timeout or where releases cannot be watched."""
        with self.cv:
            if self.failed:
                return None
            generation = self.generation
            if not self.running:
                self.running = True
                threading.Thread(target=self._watch, daemon=True,
                                 name="oauth-callback-lock-watch").start()
            while self.generation == generation:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self.cv.wait(remaining)
            return None if self.failed else self.released

    def _watch(self) -> None:
        assert fcntl is not None
        failed = released = False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), self.mode)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    fcntl.flock(fd, fcntl.LOCK_SH)  # sleeps until no LOCK_EX is held
                    released = True
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        except OSError:
            failed = True  # waiters fall back to queueing for the lock
        with self.cv:
            self.failed = self.failed or failed
            self.released = released
            self.running = False
            self.generation += 1
            self.cv.notify_all()


def _shared_for(path: str, mode: int) -> _Shared:
    with _registry_lock:
        shared = _shared_locks.get(path)
        if shared is None:
            file_lock: _FileLockLike = (
                _Flock(path, mode) if fcntl is not None else _portable_lock(path, mode)
            )
            shared = _Shared(path, mode, file_lock)
            _shared_locks[path] = shared
        return shared


def _portable_lock(path: str, mode: int) -> _FileLockLike:
    import filelock  # only where flock is missing: keeps the import light on POSIX

    return filelock.FileLock(path, mode=mode, thread_local=False, timeout=-1)


def _reset_after_fork() -> None:
    """A forked child holds none of its parent's locks: thread locks owned by
    threads that do not exist here are replaced, inherited lock descriptors
    dropped (without unlocking: the parent still holds them)."""
    global _registry_lock
    _registry_lock = threading.Lock()
    for shared in list(_shared_locks.values()):
        shared.lock = threading.RLock()
        shared.watch = _ReleaseWatch(shared.path, shared.mode)  # its thread is not here
        if isinstance(shared.file_lock, _Flock):
            shared.file_lock.forget()
        else:
            shared.file_lock = _portable_lock(shared.path, shared.mode)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)




_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


class _Flock:
    """``flock(2)`` on a lock file opened with ``O_NOFOLLOW``; the lock file is kept.

    Raises ``TimeoutError`` on timeout (as ``filelock.Timeout``, a subclass, does, so
    both implementations fail alike)
    and ``_FlockUnsupported`` where the file system has no ``flock``.
    """

    def __init__(self, path: str, mode: int) -> None:
        self._path = path
        self._mode = mode
        self._fd: int | None = None
        self._level = 0

    @property
    def is_locked(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float | None = None, poll_interval: float | None = None) -> object:
        assert fcntl is not None
        if self._fd is not None:
            self._level += 1
            return self
        fd = os.open(
            self._path,
            os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
            self._mode,
        )
        try:
            deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
            # Short polls: flock has no queue, and a waiter that sleeps long
            # keeps losing to writers that cycle the lock quickly.
            delay = 0.0002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeoutError(self._path) from None
                    time.sleep(delay if deadline is None else
                               max(min(delay, deadline - time.monotonic()), 0.0))
                    delay = min(delay * 2, poll_interval or 0.005)
                except OSError as exc:
                    if exc.errno in _NO_FLOCK:
                        raise _FlockUnsupported from exc
                    raise
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._level = 1
        return self

    def forget(self) -> None:
        """In a forked child: drop the inherited descriptor without unlocking
        (the lock belongs to the parent's open file description)."""
        fd, self._fd, self._level = self._fd, None, 0
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def release(self) -> None:
        assert fcntl is not None
        if self._fd is None:
            return
        self._level -= 1
        if self._level > 0:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class _FlockUnsupported(Exception):
    pass


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
        self._mode = mode
        self._shared = _shared_for(self.path, mode)
        self._pid = os.getpid()

    @property
    def is_locked(self) -> bool:
        """True while this process holds the lock."""
        return self._shared.file_lock.is_locked

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
            try:
                self._shared.file_lock.acquire(timeout=remaining, poll_interval=0.005)
            except _FlockUnsupported:
                self._shared.file_lock = _portable_lock(self.path, self._mode)
                self._shared.file_lock.acquire(timeout=remaining, poll_interval=0.005)
        except TimeoutError:  # filelock.Timeout is one too
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
            # e.g. EROFS (read-only file system), ENOSPC, EIO: typed, naming the file.
            raise StoreWriteError(
                f"could not open lock file {self.path}: [Errno {exc.errno}] {exc.strerror}",
                path=self.path, errno=exc.errno,
            ) from exc
        except BaseException:
            self._shared.lock.release()
            raise
        self._pid = os.getpid()

    def acquire_unless(self, changed: Callable[[], bool]) -> bool:
        """Take the lock (``True``), or give up waiting as soon as ``changed()`` is true
        after a release by the holder (``False``, the lock is not held).

        A waiter does not queue for the lock: it sleeps until the holder (a
        thread or another process) releases it, and every waiter then calls
        ``changed()`` side by side; only if it is false does it try for the lock
        again (it queues for it, as :meth:`acquire`, once the lock is found free).
        So when a refresher saves new tokens and releases, its waiters return
        them at once instead of passing through the lock one at a time only to
        find the work done. Times out as :meth:`acquire` does
        (:class:`StoreLockTimeout`). Where the release cannot be watched
        (no ``flock``), the same as :meth:`acquire`.
        """
        wait = self.timeout
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                self.acquire(timeout=0)  # free (or re-entered by this thread)
                return True
            except StoreLockTimeout:
                pass
            if fcntl is None or not isinstance(self._shared.file_lock, _Flock):
                break
            released = self._shared.watch.wait(deadline)
            if released is None and deadline is not None and time.monotonic() >= deadline:
                raise StoreLockTimeout(
                    f"timed out after {wait:g}s waiting for lock {self.path}", path=self.path
                )
            if released and changed():
                return False
            if not released:
                break  # free when looked at, or not watchable: queue for it
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        self.acquire(timeout=remaining)
        return True

    def release(self) -> None:
        """Release one level of the lock (a no-op in a child forked while it was held)."""
        if self._pid != os.getpid():
            return
        try:
            self._shared.file_lock.release()
        finally:
            self._shared.lock.release()

    def __enter__(self) -> InterProcessLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"InterProcessLock({self.path!r}, locked={self.is_locked})"
