"""atomic_write: modes, symlinks, backups, stale temp files, failures, Windows retry."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from oauth_callback import StoreWriteError
from oauth_callback import fs as fs_mod
from oauth_callback.fs import atomic_write, remove_stale_temp_files, temp_file_pattern


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def temps(directory: Path, name: str) -> list[str]:
    pattern = temp_file_pattern(name)
    return [e for e in os.listdir(directory) if pattern.match(e)]


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, b"one")
    assert target.read_bytes() == b"one"
    atomic_write(target, b"two", durable=False)
    assert target.read_bytes() == b"two"
    assert temps(tmp_path, "f.json") == []


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o022])
def test_mode_is_exact_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a", b"x", mode=0o600)
        atomic_write(tmp_path / "b", b"x", mode=0o640)
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "a") == 0o600
    assert mode_of(tmp_path / "b") == 0o640


def test_symlinked_target_is_replaced_link_stays(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = real_dir / "tokens.json"
    real.write_bytes(b"old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write(link, b"new")
    assert link.is_symlink()
    assert os.readlink(link) == str(real)
    assert real.read_bytes() == b"new"
    assert temps(real_dir, "tokens.json") == []


def test_backup_is_a_hard_link_of_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "t"
    bak = tmp_path / "t.bak"
    atomic_write(target, b"v1", backup=bak)
    assert not bak.exists()  # nothing to back up yet
    atomic_write(target, b"v2", backup=bak)
    assert bak.read_bytes() == b"v1"
    atomic_write(target, b"v3", backup=bak)
    assert bak.read_bytes() == b"v2"
    assert target.read_bytes() == b"v3"
    assert mode_of(bak) == 0o600


def test_backup_of_a_loose_file_is_not_loose(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    atomic_write(target, b"new", backup=tmp_path / "t.bak")
    assert mode_of(tmp_path / "t.bak") == 0o600
    assert mode_of(target) == 0o600


def test_stale_temp_of_dead_process_removed_live_one_kept(tmp_path: Path) -> None:
    target = tmp_path / "tokens.json"
    dead = tmp_path / f".tokens.json.{dead_pid()}.0123456789abcdef.tmp"
    dead.write_bytes(b"partial")
    live = tmp_path / f".tokens.json.{os.getppid()}.fedcba9876543210.tmp"
    live.write_bytes(b"in progress")
    unrelated = tmp_path / ".tokens.json.notours.tmp"
    unrelated.write_bytes(b"x")
    atomic_write(target, b"{}")
    assert not dead.exists()
    assert live.exists()
    assert unrelated.exists()
    assert remove_stale_temp_files(target) == []


def test_temp_name_pattern(tmp_path: Path) -> None:
    seen: list[str] = []
    real_open = os.open

    def spy(path: str, flags: int, mode: int = 0o777) -> int:
        seen.append(os.path.basename(path))
        return real_open(path, flags, mode)

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "open", spy)
    try:
        atomic_write(tmp_path / "x.json", b"1", durable=False)
    finally:
        mp.undo()
    assert len(seen) == 1
    match = temp_file_pattern("x.json").match(seen[0])
    assert match is not None
    assert int(match["pid"]) == os.getpid()


def test_existing_file_at_temp_name_is_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """O_EXCL|O_NOFOLLOW: a planted symlink at the temp path is refused, not written through."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    monkeypatch.setattr(fs_mod, "_unique", lambda: "0" * 16)
    planted = tmp_path / f".t.{os.getpid()}.{'0' * 16}.tmp"
    planted.symlink_to(victim)
    with pytest.raises(StoreWriteError) as info:
        atomic_write(tmp_path / "t", b"evil")
    assert info.value.errno == errno.EEXIST
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "t").exists()


def test_failure_cleans_up_and_keeps_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreWriteError) as info:
        atomic_write(target, b"new")
    assert info.value.errno == errno.EIO
    assert info.value.path == str(target)
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"old"
    assert temps(tmp_path, "t") == []


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data)[:7])

    monkeypatch.setattr(os, "write", short_write)
    payload = bytes(range(256)) * 40
    atomic_write(tmp_path / "t", payload)
    assert (tmp_path / "t").read_bytes() == payload


def test_missing_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(StoreWriteError) as info:
        atomic_write(tmp_path / "nope" / "t", b"x")
    assert info.value.errno == errno.ENOENT


def test_rejects_str_data(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "t", "text")  # type: ignore[arg-type]


class TestWindowsReplaceRetry:
    """Windows cannot run here: simulate a target held open by another process."""

    def test_retries_permission_error_then_succeeds(self, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.write_bytes(b"new")
        dst.write_bytes(b"old")
        real_replace = os.replace
        failures = [PermissionError(13, "Access is denied")] * 3
        sleeps: list[float] = []

        def flaky(a: str, b: str) -> None:
            if failures:
                raise failures.pop()
            real_replace(a, b)

        monkeypatch.setattr(os, "replace", flaky)
        fs_mod._replace(str(src), str(dst), retry_permission_errors=True, sleep=sleeps.append)
        assert dst.read_bytes() == b"new"
        assert len(sleeps) == 3
        assert sleeps == sorted(sleeps)  # back-off grows

    def test_gives_up_after_the_timeout(self, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
        def always(a: str, b: str) -> None:
            raise PermissionError(13, "Access is denied")

        monkeypatch.setattr(os, "replace", always)
        clock = [0.0]
        monkeypatch.setattr(fs_mod.time, "monotonic", lambda: clock[0])

        def fake_sleep(s: float) -> None:
            clock[0] += s

        with pytest.raises(PermissionError):
            fs_mod._replace("a", "b", retry_permission_errors=True, timeout=1.0, sleep=fake_sleep)
        assert 0.5 < clock[0] <= 1.0

    def test_posix_does_not_retry(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls = []

        def always(a: str, b: str) -> None:
            calls.append(1)
            raise PermissionError(13, "denied")

        monkeypatch.setattr(os, "replace", always)
        with pytest.raises(PermissionError):
            fs_mod._replace("a", "b", retry_permission_errors=False)
        assert calls == [1]

    def test_atomic_write_uses_retry_on_windows(self, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(fs_mod, "_WINDOWS", True)
        monkeypatch.setattr(fs_mod, "fsync_directory", lambda d: None)
        real_replace = os.replace
        failures = [PermissionError(13, "Access is denied")]

        def flaky(a: str, b: str) -> None:
            if failures:
                raise failures.pop()
            real_replace(a, b)

        monkeypatch.setattr(os, "replace", flaky)
        monkeypatch.setattr(fs_mod.time, "sleep", lambda s: None)
        # _replace's default is bound at import; atomic_write must pass the platform flag.
        atomic_write(tmp_path / "t", b"data", durable=False)
        assert (tmp_path / "t").read_bytes() == b"data"
