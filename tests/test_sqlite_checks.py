"""SQLite store checks no other test pinned: how the database file is created. It is
created 0600 (``O_CREAT|O_EXCL`` with mode 0600), so under a permissive umask it is
never, even for a moment, open to another user who could keep a descriptor and read
the secrets written later; and it is made 0600 (``fchmod``) when the umask removed
the owner's own bits. SQLite gives -journal, -wal and -shm the database's mode.

Real child processes with a real umask; the first test traces the child's system calls
with strace. Each test fails when the check it names is changed in
oauth_callback.storage.sqlite.SQLiteStore._create_file."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import python_env, requires_strace, run_python

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and umask")

SECRET = "at-secret-0123456789"

# Creates the store under the umask given (octal), writes a token, prints the modes of
# the database, -wal and -shm while open, then reads the token back.
CHILD = """
import os, stat, sys
os.umask(int(sys.argv[2], 8))
from oauth_callback import Tokens
from oauth_callback.storage import SQLiteStore
path = sys.argv[1]
store = SQLiteStore(path)
store.set("k", Tokens(sys.argv[3]))
print(" ".join(oct(stat.S_IMODE(os.stat(n).st_mode)) for n in (path, path + "-wal", path + "-shm")))
assert SQLiteStore(path).get("k") == Tokens(sys.argv[3])
store.close()
"""

_OPENAT = re.compile(r'openat\(AT_FDCWD, "(?P<path>[^"]*)", (?P<flags>[A-Z_|]+)(?:, (?P<mode>0\d*))?\)')
_CHMOD = re.compile(r'\b(?:f?chmod|fchmodat)\((?:[^,]*, )?(?:"[^"]*", )?(?P<mode>0\d*)')


@requires_strace
def test_the_database_is_created_0600_under_umask_000(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    trace = tmp_path / "trace.txt"
    result = subprocess.run(
        ["strace", "-f", "-s", "4096", "-o", str(trace),
         "-e", "trace=open,openat,creat,chmod,fchmod,fchmodat",
         sys.executable, "-c", CHILD, str(path), "000", SECRET],
        capture_output=True, text=True, timeout=120, env=python_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["0o600", "0o600", "0o600"]
    names = {str(path) + suffix for suffix in ("", "-journal", "-wal", "-shm")}
    creates = []
    for line in trace.read_text().splitlines():
        m = _OPENAT.search(line)
        if m and m["path"] in names and "O_CREAT" in m["flags"]:
            creates.append((m["path"], m["flags"], int(m["mode"], 8)))
        c = _CHMOD.search(line)
        if c:
            assert not int(c["mode"], 8) & 0o077, f"a file was made readable by others: {line}"
    assert creates and creates[0][0] == str(path), creates  # the database is created first
    assert "O_EXCL" in creates[0][1] and "O_NOFOLLOW" in creates[0][1], creates[0]
    for name, _flags, mode in creates:
        # Under umask 000 the mode asked for is the mode the file is born with.
        assert mode & 0o077 == 0, f"{name} was created with mode {mode:04o}"


@pytest.mark.parametrize("umask", ["277", "200"])
def test_the_database_is_0600_when_the_umask_removes_the_owners_bits(
    tmp_path: Path, umask: str
) -> None:
    """A umask that takes away the owner's write bit would leave a 0400 database (that
    its owner, unless root, cannot write); the create-time fchmod restores 0600."""
    path = tmp_path / "tokens.db"
    out = run_python(CHILD, str(path), umask, SECRET).stdout.split()
    assert out == ["0o600", "0o600", "0o600"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
