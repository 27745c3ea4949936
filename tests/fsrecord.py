"""Record the file-system operations of a store call, replay its power-loss states.

:class:`Recorder` wraps the ``os`` functions the storage code calls (``open``,
``write``, ``ftruncate``, ``posix_fallocate``, ``fsync``, ``replace``, ``link``,
``unlink``...) and logs, for paths under one directory, what each does to
names (directory entries) and inodes (bytes), in program order.

:func:`crash_states` then applies the model the ALICE / CrashMonkey work uses
for a power loss: at any instant, an operation is certainly on disk only if a
later ``fsync`` (before that instant) covered it: ``fsync`` of a file covers
the earlier writes, truncations and allocations of that inode; ``fsync`` of a
directory covers the earlier creations, renames, links and unlinks in it.
Every other operation done so far may or may not have reached the disk, in
any combination (a write may also be torn, its first half kept). Every such
state is materialized into a fresh directory by :func:`materialize`.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

Ino = tuple[int, int]


@dataclass(frozen=True)
class Op:
    """One recorded operation.

    ``kind``: ``create``/``rename``/``link``/``unlink`` (a name in ``directory``),
    ``write``/``truncate``/``alloc`` (bytes of ``ino``), ``fsync`` (of ``ino``,
    a file or a directory).
    """

    kind: str
    ino: Ino
    directory: str = ""
    name: str = ""
    new_name: str = ""
    offset: int = 0
    data: bytes = b""
    size: int = 0

    @property
    def is_namespace(self) -> bool:
        return self.kind in ("create", "rename", "link", "unlink")

    def __str__(self) -> str:
        if self.kind == "rename":
            return f"rename({self.name} -> {self.new_name})"
        if self.is_namespace:
            return f"{self.kind}({self.name})"
        if self.kind == "write":
            return f"write({self.ino[1]}, {len(self.data)} bytes at {self.offset})"
        return f"{self.kind}({self.ino[1]}{', ' + str(self.size) if self.size else ''})"


@dataclass
class State:
    """Directory entries and inode contents of the recorded tree."""

    names: dict[tuple[str, str], Ino] = field(default_factory=dict)
    data: dict[Ino, bytes] = field(default_factory=dict)
    dirs: dict[Ino, str] = field(default_factory=dict)

    def copy(self) -> State:
        return State(dict(self.names), dict(self.data), dict(self.dirs))

    def apply(self, op: Op, *, torn: bool = False) -> None:
        if op.kind == "create":
            self.names[(op.directory, op.name)] = op.ino
            self.data.setdefault(op.ino, b"")
        elif op.kind == "link":
            self.names[(op.directory, op.name)] = op.ino
        elif op.kind == "rename":
            if self.names.get((op.directory, op.name)) == op.ino:
                del self.names[(op.directory, op.name)]
            self.names[(op.directory, op.new_name)] = op.ino
            self.data.setdefault(op.ino, b"")
        elif op.kind == "unlink":
            if self.names.get((op.directory, op.name)) == op.ino:
                del self.names[(op.directory, op.name)]
        elif op.kind == "write":
            old = self.data.get(op.ino, b"")
            chunk = op.data[: len(op.data) // 2] if torn else op.data
            if len(old) < op.offset:
                old += bytes(op.offset - len(old))
            self.data[op.ino] = old[: op.offset] + chunk + old[op.offset + len(chunk):]
        elif op.kind == "truncate":
            old = self.data.get(op.ino, b"")
            self.data[op.ino] = old[: op.size] + bytes(max(op.size - len(old), 0))
        elif op.kind == "alloc":
            old = self.data.get(op.ino, b"")
            if len(old) < op.size:
                self.data[op.ino] = old + bytes(op.size - len(old))

    def key(self) -> tuple[Any, ...]:
        names = tuple(sorted((d, n, self.data.get(i, b"")) for (d, n), i in self.names.items()))
        links = tuple(sorted(
            tuple(sorted(n for (d, n), j in self.names.items() if j == i))
            for i in set(self.names.values())
        ))
        return names, links


class Recorder:
    """Records the operations under ``root`` while active (``with recorder:``)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = os.path.realpath(root)
        self.ops: list[Op] = []
        self.initial = State()
        self._fds: dict[int, tuple[Ino, bool]] = {}  # fd -> (inode, is directory)
        self._pos: dict[int, int] = {}
        self._mp = monkeypatch
        self._real: dict[str, Any] = {}

    # -- which paths ------------------------------------------------------

    def _ours(self, path: Any) -> str | None:
        if isinstance(path, int):
            return None
        absolute = os.path.abspath(os.fspath(path))
        if os.path.realpath(absolute) == self.root:
            return self.root
        real = os.path.realpath(os.path.dirname(absolute))
        if real == self.root or real.startswith(self.root + os.sep):
            return os.path.join(real, os.path.basename(absolute))
        return None

    def _ino(self, path: str) -> Ino:
        st = os.lstat(path)
        return (st.st_dev, st.st_ino)

    # -- the snapshot of the tree ---------------------------------------------

    def snapshot(self) -> None:
        """The durable starting state: everything under ``root`` now."""
        state = State()
        for directory, _subdirs, files in os.walk(self.root):
            state.dirs[self._ino(directory)] = directory
            for name in files:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                ino = (st.st_dev, st.st_ino)
                state.names[(directory, name)] = ino
                with open(path, "rb") as f:
                    state.data[ino] = f.read()
        self.initial = state

    # -- wrappers ---------------------------------------------------------------

    def __enter__(self) -> Recorder:
        self.snapshot()
        real = self._real
        for name in ("open", "write", "close", "fsync", "ftruncate", "posix_fallocate",
                     "lseek", "replace", "rename", "link", "unlink"):
            real[name] = getattr(os, name)
            self._mp.setattr(os, name, getattr(self, "_" + name))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._real.items():
            self._mp.setattr(os, name, fn)

    def _open(self, path: Any, flags: int, mode: int = 0o777, *a: Any, **k: Any) -> int:
        ours = self._ours(path)
        existed = ours is not None and os.path.lexists(ours)
        fd: int = self._real["open"](path, flags, mode, *a, **k)
        if ours is not None:
            st = os.fstat(fd)
            ino = (st.st_dev, st.st_ino)
            is_dir = stat.S_ISDIR(st.st_mode)
            self._fds[fd] = (ino, is_dir)
            self._pos[fd] = 0
            if is_dir:
                self.initial.dirs.setdefault(ino, ours)
            if flags & os.O_CREAT and not existed:
                self.ops.append(Op("create", ino, os.path.dirname(ours), os.path.basename(ours)))
            if flags & os.O_TRUNC and existed:
                self.ops.append(Op("truncate", ino, size=0))
        return fd

    def _write(self, fd: int, data: Any) -> int:
        n: int = self._real["write"](fd, data)
        if fd in self._fds:
            offset = self._pos[fd]
            self.ops.append(Op("write", self._fds[fd][0], offset=offset, data=bytes(data[:n])))
            self._pos[fd] = offset + n
        return n

    def _lseek(self, fd: int, pos: int, how: int) -> int:
        at: int = self._real["lseek"](fd, pos, how)
        if fd in self._fds:
            self._pos[fd] = at
        return at

    def _close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        self._pos.pop(fd, None)
        self._real["close"](fd)

    def _fsync(self, fd: int) -> None:
        self._real["fsync"](fd)
        if fd in self._fds:
            self.ops.append(Op("fsync", self._fds[fd][0]))

    def _ftruncate(self, fd: int, size: int) -> None:
        self._real["ftruncate"](fd, size)
        if fd in self._fds:
            self.ops.append(Op("truncate", self._fds[fd][0], size=size))

    def _posix_fallocate(self, fd: int, offset: int, length: int) -> None:
        self._real["posix_fallocate"](fd, offset, length)
        if fd in self._fds:
            self.ops.append(Op("alloc", self._fds[fd][0], size=offset + length))

    def _rename_op(self, src: Any, dst: Any, fn: str) -> None:
        s, d = self._ours(src), self._ours(dst)
        ino = self._ino(s) if s is not None and os.path.lexists(s) else None
        self._real[fn](src, dst)
        if s is not None and d is not None and ino is not None:
            assert os.path.dirname(s) == os.path.dirname(d), "cross-directory rename"
            self.ops.append(Op("rename", ino, os.path.dirname(s), os.path.basename(s),
                               os.path.basename(d)))

    def _replace(self, src: Any, dst: Any, **k: Any) -> None:
        self._rename_op(src, dst, "replace")

    def _rename(self, src: Any, dst: Any, **k: Any) -> None:
        self._rename_op(src, dst, "rename")

    def _link(self, src: Any, dst: Any, **k: Any) -> None:
        self._real["link"](src, dst, **k)
        d = self._ours(dst)
        if d is not None:
            self.ops.append(Op("link", self._ino(d), os.path.dirname(d), os.path.basename(d)))

    def _unlink(self, path: Any, **k: Any) -> None:
        p = self._ours(path)
        ino = self._ino(p) if p is not None and os.path.lexists(p) else None
        self._real["unlink"](path, **k)
        if p is not None and ino is not None:
            self.ops.append(Op("unlink", ino, os.path.dirname(p), os.path.basename(p)))

    # -- the replay ------------------------------------------------------------------

    def dir_ino(self, directory: str) -> Ino | None:
        for ino, path in self.initial.dirs.items():
            if path == directory:
                return ino
        return None


def crash_states(rec: Recorder) -> Iterator[tuple[int, State]]:
    """``(crash point, state)`` for every state a power loss may leave (deduplicated;
    crash point ``len(rec.ops)`` is after the call returned, and all its states are
    given)."""
    ops = rec.ops
    dir_of = {ino: path for ino, path in rec.initial.dirs.items()}
    seen: set[tuple[Any, ...]] = set()
    for k in range(len(ops) + 1):
        done = ops[:k]
        durable: list[bool] = []
        for j, op in enumerate(done):
            later = done[j + 1:]
            if op.is_namespace:
                covered = any(o.kind == "fsync" and dir_of.get(o.ino) == op.directory
                              for o in later)
            elif op.kind == "fsync":
                covered = True
            else:
                covered = any(o.kind == "fsync" and o.ino == op.ino for o in later)
            durable.append(covered)
        maybe = [j for j, op in enumerate(done) if not durable[j] and op.kind != "fsync"]
        choices: list[list[str]] = []
        for j in maybe:
            choices.append(["lost", "kept", "torn"] if done[j].kind == "write"
                           and len(done[j].data) > 1 else ["lost", "kept"])
        for combo in itertools.product(*choices):
            fate = dict(zip(maybe, combo, strict=True))
            state = rec.initial.copy()
            for j, op in enumerate(done):
                outcome = "kept" if durable[j] else fate.get(j, "kept")
                if op.kind == "fsync" or outcome == "lost":
                    continue
                state.apply(op, torn=outcome == "torn")
            key = (k == len(ops), state.key())  # the states after the call: all of them
            if key not in seen:
                seen.add(key)
                yield k, state


def materialize(state: State, root: str, into: Path) -> None:
    """Write ``state`` (paths under ``root``) into the empty directory ``into``."""
    first: dict[Ino, Path] = {}
    for (directory, name), ino in sorted(state.names.items()):
        rel = os.path.relpath(os.path.join(directory, name), root)
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if ino in first:
            os.link(first[ino], target)
            continue
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, state.data.get(ino, b""))
        finally:
            os.close(fd)
        first[ino] = target
