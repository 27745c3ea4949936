"""Key-file checks no other test pinned: the size bound of ``file:`` key sources. A key
file larger than the bound is refused with a StoreKeyError naming the file, even when
its first bytes hold a valid key (whitespace around a key is otherwise ignored), and a
huge file is never read into memory whole.

Real files (a sparse 4 GiB one) and a real child process with a capped address space.
Each test fails when the check it names is deleted from
oauth_callback.storage.key_sources.FileKey.load."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from oauth_callback.errors import StoreKeyError
from oauth_callback.storage.key_sources import (
    FileKey,
    encode_key,
    generate_key,
    parse_key_source,
)

from .conftest import run_python

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def _key_file(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


@posix_only
def test_a_key_file_past_the_size_bound_is_refused_naming_it(tmp_path: Path) -> None:
    key = generate_key()
    text = encode_key(key).encode()
    # A little whitespace around the key is fine...
    short = _key_file(tmp_path / "short.key", b"\n" + text + b"\n" * 100)
    assert FileKey(short).load() == key
    # ...but a file this large is not a key file, whatever its first bytes say.
    long = _key_file(tmp_path / "long.key", text + b"\n" * 5000)
    for source in (FileKey(long), parse_key_source(f"file:{long}")):
        with pytest.raises(StoreKeyError, match="too long") as info:
            source.load()
        assert str(long) in str(info.value)
        assert text.decode() not in str(info.value)


# The child caps its address space 512 MiB above what it uses once imported: reading
# the whole 4 GiB file would need a 4 GiB buffer (MemoryError); reading a bounded
# prefix needs a few KiB.
HUGE = """
import resource, sys
from oauth_callback.errors import StoreKeyError
from oauth_callback.storage.key_sources import FileKey
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 2**20, resource.RLIM_INFINITY))
try:
    FileKey(sys.argv[1]).load()
except StoreKeyError as exc:
    print("StoreKeyError:", exc)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and RLIMIT_AS are Linux's")
def test_a_huge_key_file_is_not_read_into_memory_whole(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "huge.key", b"")
    os.truncate(path, 4 * 2**30)  # sparse: no disk used
    result = run_python(HUGE, str(path), check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("StoreKeyError:"), result.stdout + result.stderr[-2000:]
    assert str(path) in result.stdout and "too long" in result.stdout
