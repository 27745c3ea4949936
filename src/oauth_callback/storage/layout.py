"""Where a file-based store keeps its files: every name derived in one place (no I/O
except :meth:`FileLayout.temp_files` and :meth:`FileLayout.own_links`, which list the directory).

For a store at ``/d/tokens.json`` (``real`` is its ``realpath``; they differ
when the path is a symlink)::

    /d/tokens.json                       the store (npm oauth-callback's format)
    /d/tokens.json.bak                   the previous good version (a hard link)
    /d/tokens.json.corrupt-<UTC stamp>   a corrupt file moved aside by a repair
    <real>.lock                          the write lock (kept between uses)
    <real>.refresh-<sha256(key)[:16]>.lock   the refresh lock of one key
    <real dir>/.tokens.json.<pid>.<16 hex>.tmp       a write in progress
    <real dir>/.tokens.json.bak.<pid>.<16 hex>.tmp   a backup link in progress
    <real dir>/tokens.json.tmp.<pid>.<uuid>          the npm package's temp file

:class:`~oauth_callback.storage.file.FileStore`, the refresh locks of
:class:`~oauth_callback.storage.sqlite.SQLiteStore` and
:class:`~oauth_callback.storage.keyring.KeyringStore`, and ``oauth-callback
doctor`` all take their names from here.
"""

from __future__ import annotations

import os
import re
import stat
from functools import cached_property

from .._value import valueclass
from ..fs import temp_file_pattern

__all__ = ["FileLayout", "digest", "keyring_lock_file", "lock_file"]


def digest(text: str) -> str:
    """The 16 hex characters that stand for ``text`` in file names."""
    import hashlib  # on first use: loading OpenSSL costs start-up time

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def lock_file(base: str, key: str, *, kind: str = "refresh") -> str:
    """The per-key lock file ``<base>.<kind>-<sha256(key)[:16]>.lock``."""
    return f"{base}.{kind}-{digest(key)}.lock"


def keyring_lock_file(lock_dir: str, service: str) -> str:
    """The write lock of a keyring service: ``<lock_dir>/keyring-<sha256(service)[:16]>.lock``
    (its refresh locks: :func:`lock_file` on that name minus ``.lock``)."""
    return os.path.join(lock_dir, f"keyring-{digest(service)}.lock")


def _npm_temp_pattern(name: str) -> re.Pattern[str]:
    """The npm package's temp files: ``<name>.tmp.<pid>.<uuid>``."""
    return re.compile(re.escape(name) + r"\.tmp\.(?P<pid>\d+)\.[0-9A-Fa-f-]{8,36}\Z")


@valueclass()
class FileLayout:
    """Every file name of the store at ``path`` (absolute; may be a symlink).

    The real path is resolved once, when the layout is made: the locks belong
    to the file the path names, so a symlink and its target share them.
    """

    path: str
    real_path: str

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileLayout:
        """The layout of the store at ``path`` (made absolute, ``~`` expanded)."""
        absolute = os.path.abspath(os.path.expanduser(os.fspath(path)))
        return cls(absolute, os.path.realpath(absolute))

    @property
    def directory(self) -> str:
        """The directory holding ``path`` (where a symlink would be planted)."""
        return os.path.dirname(self.path)

    @property
    def real_directory(self) -> str:
        """The directory holding the store file itself, its temp and lock files."""
        return os.path.dirname(self.real_path)

    @property
    def backup(self) -> str:
        """``<path>.bak``: the previous good version."""
        return self.path + ".bak"

    @property
    def lock(self) -> str:
        """``<real path>.lock``: the write lock."""
        return self.real_path + ".lock"

    def refresh_lock(self, key: str) -> str:
        """``<real path>.refresh-<hash>.lock``: the refresh lock of ``key``."""
        return lock_file(self.real_path, key)

    @property
    def refresh_lock_glob(self) -> str:
        """A :mod:`glob` pattern matching every refresh lock."""
        import glob  # here: opening a store lists no files

        return glob.escape(self.real_path) + ".refresh-*.lock"

    @property
    def corrupt_prefix(self) -> str:
        """Corrupt copies are ``<path>.corrupt-<stamp>``."""
        return self.path + ".corrupt-"

    def corrupt_copies(self) -> list[str]:
        """The corrupt copies present, oldest first."""
        import glob

        return sorted(glob.glob(glob.escape(self.corrupt_prefix) + "*"))

    @cached_property
    def _temp_patterns(self) -> dict[str, tuple[re.Pattern[str], ...]]:
        """Per directory, the temp-file names made there: the store's (next to the real
        file) and the backup's (next to ``<path>.bak``)."""
        name = os.path.basename(self.real_path)
        patterns: dict[str, tuple[re.Pattern[str], ...]] = {
            self.real_directory: (temp_file_pattern(name), _npm_temp_pattern(name)),
        }
        backup = (temp_file_pattern(os.path.basename(self.backup)),)
        patterns[self.directory] = patterns.get(self.directory, ()) + backup
        return patterns

    def temp_pid(self, directory: str, entry: str) -> int | None:
        """The writer's pid if ``entry`` in ``directory`` is one of the store's temp files
        (ours or the npm package's), else ``None``."""
        for pattern in self._temp_patterns.get(directory, ()):
            match = pattern.match(entry)
            if match is not None:
                return int(match["pid"])
        return None

    def temp_files(self) -> list[tuple[str, int]]:
        """``(path, writer pid)`` of every temp file of the store present now."""
        found: list[tuple[str, int]] = []
        for directory in self._temp_patterns:
            try:
                entries = sorted(os.listdir(directory))
            except OSError:
                continue
            for entry in entries:
                pid = self.temp_pid(directory, entry)
                if pid is not None:
                    found.append((os.path.join(directory, entry), pid))
        return found

    def own_links(self, st: os.stat_result) -> int:
        """How many of the store's own names (the file, its backup, its temp files,
        its corrupt copies) link the inode ``st`` describes.

        ``st.st_nlink`` larger than this means another name (a hard link made
        by someone else) shares the store's file.
        """
        candidates = {self.real_path, self.backup, os.path.realpath(self.backup)}
        candidates.update(p for p, _ in self.temp_files())
        candidates.update(self.corrupt_copies())
        seen: set[tuple[int, int, str]] = set()
        for candidate in candidates:
            try:
                other = os.lstat(candidate)
            except OSError:
                continue
            if stat.S_ISREG(other.st_mode) and (other.st_dev, other.st_ino) == (
                st.st_dev, st.st_ino
            ):
                seen.add((other.st_dev, other.st_ino, os.path.realpath(candidate)))
        return len(seen)
