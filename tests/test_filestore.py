"""FileStore specifics: format, npm compatibility, corruption, permissions, locking, repair."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oauth_callback import (
    ClientInfo,
    FileStore,
    OAuthSession,
    StoreCorruptError,
    StoreError,
    StoreLockTimeout,
    StorePermissionError,
    Tokens,
)
from oauth_callback.storage.document import RESERVED_KEY
from oauth_callback.storage.file import ENV_VAR, default_path

from .conftest import python_env

SECRET = "secret-access-token-value"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "mcp" / "tokens.json"


# --------------------------------------------------------------------------- format


def test_default_path_and_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_path() == os.path.expanduser("~/.mcp/tokens.json")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "x.json"))
    assert FileStore().path == str(tmp_path / "x.json")
    monkeypatch.setenv(ENV_VAR, "~/custom.json")
    assert FileStore().path == os.path.expanduser("~/custom.json")


def test_env_var_may_be_file_url_but_not_another_store(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, f"file:{tmp_path / 'a.json'}")
    assert FileStore().path == str(tmp_path / "a.json")
    monkeypatch.setenv(ENV_VAR, "sqlite:/tmp/x.db")
    with pytest.raises(ValueError, match="open_store"):
        FileStore()


def test_reads_a_file_written_by_the_npm_package(path: Path) -> None:
    path.parent.mkdir(parents=True)
    npm = {
        "mcp-server-a": {"accessToken": "at-a", "refreshToken": "rt-a", "expiresAt": 1767225600000,
                         "scope": "read"},
        "mcp-server-b": {"accessToken": "at-b"},
    }
    path.write_text(json.dumps(npm, indent=2))
    store = FileStore(path)
    assert store.keys() == ["mcp-server-a", "mcp-server-b"]
    a = store.get("mcp-server-a")
    assert a == Tokens("at-a", "rt-a", 1767225600.0, "read")


def test_writes_what_the_npm_package_reads(path: Path) -> None:
    store = FileStore(path)
    store.set("k", Tokens("at", "rt", expires_at=1767225600.5, scope="s"))
    data = json.loads(path.read_text())
    assert data["k"] == {"accessToken": "at", "refreshToken": "rt", "expiresAt": 1767225600500,
                         "scope": "s"}
    assert isinstance(data["k"]["expiresAt"], int)


def test_unknown_fields_and_other_apps_records_survive_rewrites(path: Path) -> None:
    path.parent.mkdir(parents=True)
    original = {
        "other-app": {"accessToken": "x", "expiresAt": 1.5e12, "vendorField": [1, {"a": None}],
                      "scope": None},
        "mine": {"accessToken": "old", "idToken": "keep-me"},
        RESERVED_KEY: {"version": 1, "futureSection": {"z": 1}, "clients": {}, "sessions": {}},
    }
    path.write_text(json.dumps(original))
    store = FileStore(path)
    store.update("mine", lambda cur: cur.replace(access_token="new") if cur else None)
    store.set_client("mine", ClientInfo("cid"))
    data = json.loads(path.read_text())
    assert data["other-app"] == original["other-app"]  # byte-identical values, untouched
    assert data["mine"] == {"accessToken": "new", "idToken": "keep-me"}
    assert data[RESERVED_KEY]["futureSection"] == {"z": 1}
    assert data[RESERVED_KEY]["clients"]["mine"] == {"clientId": "cid"}


def test_reserved_key_cannot_be_used(path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        FileStore(path).set(RESERVED_KEY, Tokens("x"))


def test_newer_format_is_read_but_not_modified(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"k": {"accessToken": "a"}, RESERVED_KEY: {"version": 99}}))
    before = path.read_bytes()
    store = FileStore(path)
    assert store.get("k") == Tokens("a")
    with pytest.raises(StoreError, match="newer version"):
        store.set("j", Tokens("b"))
    assert path.read_bytes() == before


def test_clients_and_sessions_live_under_the_reserved_key(path: Path) -> None:
    store = FileStore(path)
    store.set_client("k", ClientInfo("cid", "csecret", token_endpoint="https://as/token"))
    store.set_session("k", OAuthSession("v" * 43, "st"))
    data = json.loads(path.read_text())
    assert list(data) == [RESERVED_KEY]
    assert data[RESERVED_KEY]["version"] == 1
    assert data[RESERVED_KEY]["sessions"]["k"] == {"codeVerifier": "v" * 43, "state": "st"}


# --------------------------------------------------------------------------- corruption

CORRUPTIONS = {
    "truncated": b'{"a": {"accessToken": "x"',
    "garbage": b"\x00\x01garbage",
    "not-utf8": b'{"a": {"accessToken": "\xff\xfe"}}',
    "not-an-object": b'[1, 2, 3]',
    "record-wrong-type": b'{"a": "just a string"}',
    "field-wrong-type": b'{"a": {"accessToken": 42}}',
    "empty": b"",
    "reserved-wrong-type": b'{"$oauth_callback": []}',
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_without_backup_raises_and_refuses_writes(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(CORRUPTIONS[kind])
    store = FileStore(path)
    with pytest.raises(StoreCorruptError) as info:
        store.get("a")
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    with pytest.raises(StoreCorruptError):
        store.set("b", Tokens("new"))
    with pytest.raises(StoreCorruptError):
        store.keys()
    assert path.read_bytes() == CORRUPTIONS[kind]  # unchanged


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_with_good_backup_falls_back_and_moves_bad_file_aside(
    path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileStore(path)
    store.set("a", Tokens("a1"))
    store.set("b", Tokens("b1"))  # .bak now holds {"a"}
    store.set("c", Tokens(SECRET))  # .bak now holds {"a", "b"}
    path.write_bytes(CORRUPTIONS[kind])  # something outside us damages the file
    fresh = FileStore(path)
    with caplog.at_level(logging.WARNING, logger="oauth_callback"):
        assert fresh.get("a") == Tokens("a1")
        assert fresh.keys() == ["a", "b"]
    assert any("corrupt" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    fresh.set("d", Tokens("d1"))
    assert fresh.keys() == ["a", "b", "d"]
    aside = [p for p in path.parent.iterdir() if p.name.startswith("tokens.json.corrupt-")]
    assert len(aside) == 1
    assert aside[0].read_bytes() == CORRUPTIONS[kind]
    assert json.loads(path.read_text())["d"] == {"accessToken": "d1"}
    assert SECRET not in caplog.text


def test_corrupt_message_has_no_secret(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"a": {"accessToken": "' + SECRET.encode() + b'", "expiresAt": "soon"}}')
    with pytest.raises(StoreCorruptError) as info:
        FileStore(path).get("a")
    assert SECRET not in str(info.value)
    assert "expiresAt" in str(info.value)


def test_repair_restores_backup(path: Path) -> None:
    store = FileStore(path)
    store.set("a", Tokens("a1"))
    store.set("b", Tokens("b1"))
    path.write_bytes(b"{broken")
    report = FileStore(path).repair()
    assert not report.ok
    assert report.restored_from_backup
    assert report.corrupt_copy is not None
    assert Path(report.corrupt_copy).read_bytes() == b"{broken"
    assert FileStore(path).keys() == ["a"]
    assert FileStore(path).repair().ok


def test_repair_without_backup_keeps_bad_file_and_starts_empty(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"a": {"accessTo')  # torn: recognisably a store (item 9 refuses others)
    report = FileStore(path).repair()
    assert report.corrupt_copy is not None
    assert Path(report.corrupt_copy).read_bytes() == b'{"a": {"accessTo'
    store = FileStore(path)
    assert store.keys() == []
    store.set("a", Tokens("x"))
    assert store.get("a") == Tokens("x")


def test_repair_through_a_symlink_cleans_the_real_directory(tmp_path: Path) -> None:
    real = tmp_path / "real" / "tokens.json"
    FileStore(real).set("a", Tokens("x"))
    link = tmp_path / "link.json"
    link.symlink_to(real)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = real.parent / f".tokens.json.{dead}.0123456789abcdef.tmp"
    stale.write_bytes(b"partial")
    FileStore(link).repair()
    assert not stale.exists()


def test_repair_tightens_modes_and_removes_stale_temps(path: Path) -> None:
    store = FileStore(path)
    store.set("a", Tokens("x"))
    os.chmod(path, 0o644)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = path.parent / f".tokens.json.{dead}.0123456789abcdef.tmp"
    stale.write_bytes(b"partial")
    report = FileStore(path).repair()
    assert not stale.exists()
    assert mode_of(path) == 0o600
    assert any("stale" in p for p in report.problems)


# --------------------------------------------------------------------------- permissions


def test_modes_with_umask_000(path: Path) -> None:
    old = os.umask(0)
    try:
        store = FileStore(path)
        store.set("a", Tokens("x"))
        store.set("b", Tokens("y"))
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert mode_of(Path(str(path) + ".bak")) == 0o600
    assert mode_of(Path(str(path) + ".lock")) == 0o600


def test_custom_file_mode(path: Path) -> None:
    FileStore(path, file_mode=0o640).set("a", Tokens("x"))
    assert mode_of(path) == 0o640


def test_loose_file_is_tightened_with_a_warning(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"a": {"accessToken": "x"}}))
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="oauth_callback"):
        FileStore(path).set("b", Tokens("y"))
    assert mode_of(path) == 0o600
    assert "0644" in caplog.text
    assert mode_of(Path(str(path) + ".bak")) == 0o600


def test_existing_directory_mode_is_left_alone(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    FileStore(d / "t.json").set("a", Tokens("x"))
    assert mode_of(d) == 0o755
    assert mode_of(d / "t.json") == 0o600


def test_symlinked_store_path(tmp_path: Path) -> None:
    real = tmp_path / "real" / "tokens.json"
    FileStore(real).set("a", Tokens("x"))
    link = tmp_path / "link.json"
    link.symlink_to(real)
    store = FileStore(link)
    store.set("b", Tokens("y"))
    assert link.is_symlink()
    assert FileStore(real).keys() == ["a", "b"]
    assert store.lock_path == str(real) + ".lock"


def test_symlink_planted_at_lock_path_is_not_followed(path: Path, tmp_path: Path) -> None:
    path.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("do not touch")
    Path(str(path) + ".lock").symlink_to(victim)
    with pytest.raises(StorePermissionError, match="symlink"):
        FileStore(path).set("a", Tokens("x"))
    assert victim.read_text() == "do not touch"
    assert mode_of(victim) != 0o600 or True  # content is what matters
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("strace") is None,
                    reason="as root, EACCES is injected with strace (CI installs it)")
def test_unreadable_file_raises_permission_error(path: Path) -> None:
    """EACCES on the store file -> StorePermissionError naming it. Root bypasses file modes,
    so as root the child's syscalls on the file get EACCES injected by strace instead."""
    FileStore(path).set("a", Tokens("x"))
    code = (
        "import sys\n"
        "from oauth_callback import FileStore, StorePermissionError\n"
        "try:\n"
        "    FileStore(sys.argv[1]).get('a')\n"
        "except StorePermissionError as e:\n"
        "    print('denied', sys.argv[1] in str(e))\n"
    )
    cmd = [sys.executable, "-c", code, str(path)]
    if os.geteuid() == 0:
        calls = "openat,newfstatat,statx,stat"
        cmd = ["strace", "-qq", "-o", "/dev/null", "-P", str(path), "-e", f"trace={calls}",
               "-e", f"inject={calls}:error=EACCES", *cmd]
    else:
        os.chmod(path, 0)
    result = subprocess.run(cmd, capture_output=True, text=True, env=python_env())
    assert result.stdout.strip() == "denied True", result.stderr


def test_unreadable_file_as_root_via_a_directory(path: Path) -> None:
    """Reading a directory where the file should be is a clear StoreError (works as root too)."""
    path.mkdir(parents=True)
    with pytest.raises(StoreError) as info:
        FileStore(path).get("a")
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- locking

HOLD_LOCK = """
import sys, time
from oauth_callback.locking import InterProcessLock
lock = InterProcessLock(sys.argv[1], timeout=5)
lock.acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_lock_timeout_names_the_lock_file(path: Path) -> None:
    store = FileStore(path, lock_timeout=0.3)
    store.set("a", Tokens("x"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, store.lock_path, "30"],
                              stdout=subprocess.PIPE, text=True, env=python_env())
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockTimeout) as info:
            store.set("b", Tokens("y"))
        assert isinstance(info.value, TimeoutError)
        assert store.lock_path in str(info.value)
        # Readers never take the lock.
        assert store.get("a") == Tokens("x")
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: writes work again.
    store.set("b", Tokens("y"))
    assert store.keys() == ["a", "b"]


def test_warm_get_does_not_reread(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(path)
    store.set("a", Tokens("x"))
    opened: list[str] = []
    import builtins

    real_open = builtins.open

    def spy(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    for _ in range(100):
        assert store.get("a") == Tokens("x")
    assert opened == []


def test_external_change_is_seen(path: Path) -> None:
    a = FileStore(path)
    a.set("k", Tokens("v1"))
    assert a.get("k") == Tokens("v1")
    b = FileStore(path)
    b.set("k", Tokens("v2"))
    assert a.get("k") == Tokens("v2")
    b.delete("k")
    assert a.get("k") is None


def test_store_repr_and_errors_hold_no_secret(path: Path) -> None:
    store = FileStore(path)
    store.set("k", Tokens(SECRET, refresh_token=SECRET + "r"))
    t = store.get("k")
    assert SECRET not in repr(t)
    assert SECRET not in str(t)
    assert SECRET not in repr(store)
    assert "sha256:" in repr(t)
    # What a debugger or an error reporter capturing locals shows of the store: its
    # attributes (the cached snapshot of the file held every token in clear).
    assert SECRET not in repr(vars(store))


def test_expiry_survives_with_millisecond_precision(path: Path) -> None:
    now = time.time()
    FileStore(path).set("k", Tokens("x", expires_at=now + 3600))
    got = FileStore(path).get("k")
    assert got is not None
    assert got.expires_at is not None
    assert abs(got.expires_at - (now + 3600)) < 0.001


def test_locks_nest_in_one_thread(path: Path) -> None:
    """Two lock objects on one path in one thread re-enter instead of deadlocking."""
    store = FileStore(path, lock_timeout=1)
    with store.refresh_lock("k", timeout=1), store.refresh_lock("k", timeout=1):
        store.set("k", Tokens("x"))
        store.update("k", lambda cur: (store.set("j", Tokens("y")), cur)[1])
    assert store.keys() == ["k", "j"]


def test_untouched_records_are_written_back_byte_for_byte(path: Path) -> None:
    path.parent.mkdir(parents=True)
    odd = '{"other":{"accessToken":"x","expiresAt":1.5e12,"v":[1, 2,3]} ,\n "k": {"accessToken": "a"}}'
    path.write_text(odd)
    FileStore(path).set("k", Tokens("b"))
    text = path.read_text()
    assert '"other": {"accessToken":"x","expiresAt":1.5e12,"v":[1, 2,3]}' in text
    assert json.loads(text)["k"] == {"accessToken": "b"}


@pytest.mark.parametrize("bad", [b'{"a": {"accessToken": "x"}} trailing', b'{"a" {}}', b'{"a": 1,}',
                                 b'{,}', b"{'a': 1}"])
def test_top_level_syntax_errors_are_corruption(path: Path, bad: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(bad)
    with pytest.raises(StoreCorruptError, match="not valid JSON"):
        FileStore(path).get("a")


def test_clear_leaves_no_secret_on_disk(path: Path) -> None:
    store = FileStore(path)
    store.set("a", Tokens(SECRET))
    store.set("b", Tokens("other"))
    store.clear()
    assert store.keys() == []
    for f in path.parent.iterdir():
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_interleaved_writers_lose_nothing_and_leak_no_descriptor(path: Path) -> None:
    """Each handle keeps one descriptor on the file it last saw; writes re-read
    whenever another handle replaced the file."""
    a, b = FileStore(path), FileStore(path)
    fd_dir = Path("/proc/self/fd")
    a.set("a0", Tokens("x"))
    b.set("b0", Tokens("y"))
    before = len(list(fd_dir.iterdir())) if fd_dir.exists() else 0
    for i in range(1, 50):
        a.set(f"a{i}", Tokens("x"))
        b.set(f"b{i}", Tokens("y"))
    assert len(a.keys()) == 100
    assert set(FileStore(path).keys()) == {f"{w}{i}" for w in "ab" for i in range(50)}
    if fd_dir.exists():
        assert len(list(fd_dir.iterdir())) <= before + 1
    a.close()
    b.close()


def test_int_too_big_for_a_float_is_corruption_with_backup_fallback(path: Path) -> None:
    store = FileStore(path)
    store.set("a", Tokens("a1"))
    store.set("b", Tokens("b1"))
    path.write_bytes(b'{"a": {"accessToken": "x", "expiresAt": 1' + b"0" * 400 + b"}}")
    assert FileStore(path).get("a") == Tokens("a1")  # served from the backup
    assert FileStore(path).repair().restored_from_backup


def test_key_with_a_lone_surrogate_escape_is_kept_as_written(path: Path) -> None:
    r"""JSON.stringify writes "\ud800" escapes; such a record is kept byte for byte."""
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"\\ud800x": {"accessToken": "x"}}')
    store = FileStore(path)
    assert store.keys() == ["\ud800x"]
    store.set("c", Tokens("y"))
    assert b'"\\ud800x": {"accessToken": "x"}' in path.read_bytes()
    with pytest.raises(ValueError, match="Unicode"):
        store.set("\ud800y", Tokens("z"))


def test_newer_format_with_other_record_shapes_is_never_downgraded(path: Path) -> None:
    path.parent.mkdir(parents=True)
    FileStore(path).set("old", Tokens("from-backup"))
    FileStore(path).set("old2", Tokens("x"))
    newer = {"gh": {"accessToken": "NEW-LOGIN", "expiresAt": {"v2": 1}},
             "ok": {"accessToken": "readable"},
             RESERVED_KEY: {"version": 2, "clients": {"gh": {"client_id": "abc"}}}}
    path.write_text(json.dumps(newer))
    before = path.read_bytes()
    store = FileStore(path)
    assert store.get("ok") == Tokens("readable")
    assert store.get("gh") is None  # not understood by this version, but not "corrupt"
    with pytest.raises(StoreError, match="newer version"):
        store.set("other", Tokens("y"))
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if ".corrupt-" in p.name]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_forked_child_does_not_inherit_a_held_lock(path: Path) -> None:
    store = FileStore(path)
    store.set("k", Tokens("x"))
    with store.refresh_lock("k", timeout=1):
        pid = os.fork()
        if pid == 0:  # child: the parent holds the lock, so this must time out
            code = 1
            try:
                with store.refresh_lock("k", timeout=0.3):
                    code = 2
            except StoreLockTimeout:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_fork_during_a_write_in_another_thread_does_not_hang_the_child(path: Path) -> None:
    import threading

    store = FileStore(path, lock_timeout=5)
    store.set("k", Tokens("x"))
    inside = threading.Event()

    def slow(cur: Tokens | None) -> Tokens | None:
        inside.set()
        time.sleep(0.5)
        return Tokens("y")

    t = threading.Thread(target=store.update, args=("k", slow))
    t.start()
    assert inside.wait(5)
    pid = os.fork()
    if pid == 0:  # child: waits for the parent's write to finish, then writes
        code = 1
        try:
            store.set("child", Tokens("c"))
            code = 0
        finally:
            os._exit(code)
    t.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert set(FileStore(path).keys()) == {"k", "child"}
