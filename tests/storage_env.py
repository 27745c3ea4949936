"""Real environments for storage attacks: a tiny tmpfs, unprivileged users.

Used by tests/test_store_hardening.py (and others): everything here is real
(mount, useradd, runuser); a fixture that cannot be built skips with the reason.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import IS_ROOT, ROOT


@contextmanager
def tmpfs(where: Path, size: str = "64k") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root only; skips otherwise)."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path, name: str = "filler") -> Path:
    """Fill the file system of ``directory`` to the last byte; returns the filler file."""
    filler = directory / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)
    return filler


def _usable_by_others(path: str) -> bool:
    """Whether every directory on the way to ``path`` and the file are o+x."""
    real = os.path.realpath(path)
    parts = Path(real).parents
    return all(os.stat(p).st_mode & 0o001 for p in [*parts, Path(real)])


_PUBLIC_SOURCE: list[str] = []


def interpreter_for_others() -> tuple[str, list[str]]:
    """A Python another user can run, and a ``PYTHONPATH`` entry holding a copy of the
    package they can read (the checkout may be in a private directory such as /root).

    The storage code the children run imports nothing outside the standard library.
    This interpreter is used when others may run it; else the system's of the same
    version (e.g. when this one is pyenv's under /root)."""
    python = sys.executable
    if not _usable_by_others(python):
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        system = shutil.which(version, path="/usr/local/bin:/usr/bin")
        if system is None or not _usable_by_others(system):
            pytest.skip(f"no {version} another user may run (this one: {sys.executable})")
        python = system
    if not _PUBLIC_SOURCE:
        public = Path(tempfile.mkdtemp(prefix="oc9-src-"))
        public.chmod(0o755)
        shutil.copytree(ROOT / "src" / "oauth_callback", public / "oauth_callback",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in public.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        _PUBLIC_SOURCE.append(str(public))
        atexit.register(shutil.rmtree, public, True)
    return python, list(_PUBLIC_SOURCE)


@dataclass
class User:
    name: str
    uid: int
    gid: int

    def run(self, code: str, *args: str, cwd: Path | None = None) -> dict[str, object]:
        """Run ``code`` as this user (runuser) in a fresh interpreter; it prints one JSON
        line, which is returned."""
        python, extra = interpreter_for_others()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd or "/"),
            "PYTHONPATH": os.pathsep.join(extra),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        result = subprocess.run(
            [shutil.which("runuser") or "runuser", "-u", self.name, "--", python, "-c",
             textwrap.dedent(code), *args],
            capture_output=True, text=True, timeout=60, env=env, cwd=str(cwd or "/"),
        )
        assert result.returncode == 0, f"as {self.name}: {result.stdout}\n{result.stderr}"
        line = result.stdout.strip().splitlines()[-1]
        value: dict[str, object] = json.loads(line)
        value["stderr"] = result.stderr
        return value


@contextmanager
def unprivileged_users(count: int) -> Iterator[list[User]]:
    """``count`` new unprivileged users (``oc-9-<random>-<n>``), removed afterwards."""
    if not IS_ROOT:
        pytest.skip("creating users (useradd) and switching to them (runuser) needs root")
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("needs useradd and runuser (Debian: passwd, util-linux)")
    tag = secrets.token_hex(3)
    users: list[User] = []
    try:
        for n in range(count):
            name = f"oc-9-{tag}-{n}"
            subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)
            entry = pwd.getpwnam(name)
            users.append(User(name, entry.pw_uid, entry.pw_gid))
        yield users
    finally:
        for user in users:
            subprocess.run(["userdel", user.name], check=False, capture_output=True)


@contextmanager
def shared_tree() -> Iterator[Path]:
    """A fresh directory every user can traverse (0755, root's), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="oc9-"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


#: Child code: run one store operation and print its outcome as JSON.
OUTCOME = """
import json, sys, traceback
def outcome(fn):
    try:
        value = fn()
    except BaseException as exc:
        print(json.dumps({"ok": False, "type": type(exc).__name__, "message": str(exc),
                          "mro": [c.__name__ for c in type(exc).__mro__]}))
    else:
        print(json.dumps({"ok": True, "value": value}))
"""
