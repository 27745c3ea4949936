"""Crash and fault injection on real processes: strace kills a writer at every
system call of one ``set()``, injects EIO into ``fsync`` and failures into
``rename``; a real tiny tmpfs fills up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from oauth_callback import FileStore, StoreWriteError, Tokens
from oauth_callback.storage.layout import FileLayout

from .conftest import python_env, requires_root, requires_strace

OLD_KEYS = {f"old-{i}": f"old-access-{i}" for i in range(5)}
NEW_TOKEN = Tokens("new-access-" + "n" * 400, refresh_token="new-refresh", expires_at=2e9)

CHILD = """
import os, sys
from oauth_callback import FileStore, Tokens
store = FileStore(sys.argv[1])
store.get("old-0")                      # warm: the read path is not what we test
os.write(2, b"BEGIN\\n")
store.set("new", Tokens("new-access-" + "n" * 400, refresh_token="new-refresh", expires_at=2e9))
os.write(2, b"END\\n")
"""

SYSCALL_LINE = re.compile(r"^(?P<name>[a-z0-9_]+)\(")


def seed(path: Path) -> None:
    store = FileStore(path)
    for key, access in OLD_KEYS.items():
        store.set(key, Tokens(access, refresh_token=f"refresh-{key}"))


def temp_files(path: Path) -> list[str]:
    """Every temp file of the store (its own, its backup's, the npm package's)."""
    return [os.path.basename(p) for p, _ in FileLayout.of(path).temp_files()]


def strace_child(path: Path, out: Path, *inject: str) -> subprocess.CompletedProcess[str]:
    cmd = ["strace", "-qq", "-o", str(out)]
    for spec in inject:
        cmd += ["-e", f"inject={spec}"]
    cmd += [sys.executable, "-c", CHILD, str(path)]
    env = python_env()
    env["PYTHONHASHSEED"] = "0"
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def window_syscalls(trace: Path, contains: str = "") -> list[tuple[str, int]]:
    """(syscall, n-th invocation of that syscall since exec) for each call between the markers
    (only lines containing ``contains`` when given)."""
    counts: Counter[str] = Counter()
    window: list[tuple[str, int]] = []
    inside = False
    for line in trace.read_text().splitlines():
        m = SYSCALL_LINE.match(line)
        if not m:
            continue
        name = m["name"]
        counts[name] += 1
        if name == "write" and 'write(2, "BEGIN\\n"' in line:
            inside = True
            continue
        if name == "write" and 'write(2, "END\\n"' in line:
            break
        if inside and contains in line:
            window.append((name, counts[name]))
    return window


def check_store_after_crash(path: Path) -> None:
    """A fresh process opens the store: whole, old keys intact, new key absent or complete."""
    result = subprocess.run(
        [sys.executable, "-c", """
import json, sys
from oauth_callback import FileStore
s = FileStore(sys.argv[1])
new = s.get("new")
print(json.dumps({
    "keys": s.keys(),
    "old": {k: s.get(k).access_token for k in s.keys() if k.startswith("old-")},
    "new": None if new is None else [new.access_token, new.refresh_token, new.expires_at],
}))
""", str(path)],
        capture_output=True, text=True, timeout=30, env=python_env(),
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["old"] == OLD_KEYS
    assert state["new"] in (None, [NEW_TOKEN.access_token, "new-refresh", 2e9])
    json.loads(path.read_text())  # the file itself parses


@requires_root
@requires_strace
@pytest.mark.slow
def test_sigkill_at_every_syscall_of_set(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    seed(path)
    baseline = tmp_path / "trace.txt"
    result = strace_child(path, baseline)
    assert result.returncode == 0, result.stderr
    window = window_syscalls(baseline)
    names = {name for name, _ in window}
    # The calls that change state must all be in the window we kill at.
    assert {"openat", "write", "fsync", "rename", "link"} <= names, names
    assert len(window) >= 15

    outcomes: Counter[str] = Counter()
    for name, nth in window:
        path.unlink()
        for leftover in path.parent.iterdir():
            if leftover.name != "trace.txt" and not leftover.name.startswith("kill-"):
                leftover.unlink()
        seed(path)
        result = strace_child(path, tmp_path / f"kill-{name}-{nth}.txt",
                              f"{name}:signal=KILL:when={nth}")
        assert result.returncode == -9, (name, nth, result.returncode, result.stderr)
        assert "BEGIN" in result.stderr and "END" not in result.stderr, (name, nth)
        check_store_after_crash(path)
        outcomes["new present" if FileStore(path).get("new") else "new absent"] += 1
        # The next set() succeeds and leaves no temp file behind.
        after = FileStore(path, lock_timeout=5)
        after.set("after", Tokens("after-access"))
        assert after.get("after") == Tokens("after-access")
        assert temp_files(path) == [], (name, nth, temp_files(path))
        assert set(OLD_KEYS) <= set(after.keys())
    # Both outcomes happen: killed before the rename (absent) and after it (present).
    assert outcomes["new absent"] > 0 and outcomes["new present"] > 0, outcomes
    print(f"killed at {len(window)} syscalls: {dict(outcomes)}")


def _inject_failure(tmp_path: Path, spec: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
    path = tmp_path / "tokens.json"
    seed(path)
    before = path.read_bytes()
    trace = tmp_path / "trace.txt"
    baseline = strace_child(path, trace)
    assert baseline.returncode == 0
    name, _, err = spec.partition(":")
    # For openat, fail the creation of the temporary file (other opens are reads).
    window = window_syscalls(trace, ".tmp\"" if name == "openat" else "")
    matching = [nth for n, nth in window if n == name]
    assert matching, f"{name} not called by set()"
    # Fresh store again, then the faulty run.
    for leftover in path.parent.iterdir():
        if leftover.name != "trace.txt":
            leftover.unlink()
    seed(path)
    before = path.read_bytes()
    return strace_child(path, tmp_path / "fault.txt", f"{name}:{err}:when={matching[0]}"), before


@requires_root
@requires_strace
@pytest.mark.parametrize("spec", ["fsync:error=EIO", "rename:error=EIO", "rename:error=EXDEV",
                                  "write:error=ENOSPC", "openat:error=EACCES"])
def test_injected_failure_leaves_old_content(tmp_path: Path, spec: str) -> None:
    result, before = _inject_failure(tmp_path, spec)
    path = tmp_path / "tokens.json"
    assert result.returncode == 1
    assert "StoreWriteError" in result.stderr
    assert str(path) in result.stderr
    errname = spec.rsplit("=", 1)[1]
    assert f"[Errno {getattr(__import__('errno'), errname)}]" in result.stderr
    assert path.read_bytes() == before
    assert temp_files(path) == []
    assert FileStore(path).get("new") is None


@requires_root
@requires_strace
def test_failed_directory_fsync_is_reported(tmp_path: Path) -> None:
    """The second fsync is the directory's: the new content is in place, the error says so."""
    path = tmp_path / "tokens.json"
    seed(path)
    trace = tmp_path / "trace.txt"
    assert strace_child(path, trace).returncode == 0
    fsyncs = [nth for n, nth in window_syscalls(trace) if n == "fsync"]
    assert len(fsyncs) == 2
    seed(path)
    FileStore(path).delete("new")
    result = strace_child(path, tmp_path / "f.txt", f"fsync:error=EIO:when={fsyncs[1]}")
    assert result.returncode == 1
    assert "may not survive a power loss" in result.stderr
    assert FileStore(path).get("new") == NEW_TOKEN
    assert temp_files(path) == []


@requires_root
def test_disk_full_on_real_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.strip()}")
    try:
        path = mnt / "tokens.json"
        store = FileStore(path)
        for i in range(3):
            store.set(f"k{i}", Tokens(f"access-{i}" + "a" * 2000, refresh_token=f"r{i}"))
        before = path.read_bytes()
        # Fill what is left.
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 1024)
        except OSError as exc:
            assert exc.errno == 28
        finally:
            os.close(fd)
        with pytest.raises(StoreWriteError) as info:
            store.set("big", Tokens("b" * 20000))
        assert info.value.errno == 28  # ENOSPC
        assert str(path) in str(info.value)
        assert path.read_bytes() == before
        assert temp_files(path) == []
        assert FileStore(path).get("k1") == Tokens("access-1" + "a" * 2000, refresh_token="r1")
        (mnt / "filler").unlink()
        store.set("big", Tokens("b" * 20000))
        assert FileStore(path).get("big") == Tokens("b" * 20000)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@requires_root
@requires_strace
def test_fsync_order_in_the_kernel_trace(tmp_path: Path) -> None:
    """The real system calls of one set(), fds shown as paths (strace -y): the temp
    file is fsynced after its last write and before the rename onto the store, the
    directory after the rename (the in-process twin, without root, is in
    tests/test_power_loss.py)."""
    path = tmp_path / "tokens.json"
    seed(path)
    trace = tmp_path / "trace.txt"
    env = python_env()
    result = subprocess.run(["strace", "-qq", "-y", "-o", str(trace), sys.executable, "-c",
                             CHILD, str(path)], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, result.stderr
    lines = trace.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines)
                 if line.startswith("write(2") and '"BEGIN' in line)
    window = lines[begin:]
    tmp = re.compile(r"\.tokens\.json\.\d+\.[0-9a-f]{16}\.tmp")

    def first(pred: object, what: str) -> int:
        assert callable(pred)
        hits = [i for i, line in enumerate(window) if pred(line)]
        assert hits, f"no {what} in the trace"
        return hits[0]

    last_write = max(i for i, line in enumerate(window)
                     if line.startswith("write(") and tmp.search(line.split(",")[0]))
    file_fsync = first(lambda s: s.startswith("fsync(") and tmp.search(s), "file fsync")
    rename = first(lambda s: s.startswith("rename(") and tmp.search(s)
                   and s.split(", ")[1].startswith(f'"{path}"'), "rename onto the store")
    dir_fsync = first(lambda s: s.startswith("fsync(") and f"<{tmp_path}>" in s,
                      "directory fsync")
    assert last_write < file_fsync < rename < dir_fsync, window[: dir_fsync + 1]
