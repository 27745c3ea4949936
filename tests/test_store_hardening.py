"""The promise under attack (issue 9): full disks, hard links, shared directories,
hostile files. Every test here failed before its fix."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from oauth_callback import (
    FileStore,
    StoreError,
    StorePermissionError,
    StoreWriteError,
    Tokens,
)
from oauth_callback.flow import OAuthClient
from oauth_callback.fs import atomic_write
from oauth_callback.manager import TokenManager
from oauth_callback.testing import MockProvider

from .conftest import requires_root
from .storage_env import OUTCOME, fill, shared_tree, tmpfs, unprivileged_users
from .test_refresh import KEY, expire, login

# --------------------------------------------------------------------------- 1. disk full


def _own_temps(directory: Path) -> list[str]:
    return [e for e in os.listdir(directory) if e.endswith(".tmp")]


def _open(kind: str, mnt: Path) -> Any:
    from oauth_callback.storage import SQLiteStore

    return FileStore(mnt / "tokens.json") if kind == "file" else SQLiteStore(mnt / "tokens.json")


@requires_root
@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_disk_full_refresh_does_not_spend_the_refresh_token(tmp_path: Path, kind: str) -> None:
    """No space for the successor: StoreWriteError and the provider is never contacted."""
    with tmpfs(tmp_path / "tiny", "128k") as mnt, \
            MockProvider(rotate_refresh_tokens=True) as provider:
        store = _open(kind, mnt)
        login(provider, store)
        old = expire(provider, store)
        filler = fill(mnt)
        before = dict(provider.stats)
        with pytest.raises(StoreWriteError) as info:
            TokenManager(store, KEY).tokens()
        assert info.value.errno == errno.ENOSPC
        assert str(mnt / "tokens.json") in str(info.value)
        after = dict(provider.stats)
        assert after["refresh_requests"] == before["refresh_requests"] == 0
        assert after["token_requests"] == before["token_requests"]
        assert _open(kind, mnt).get(KEY) == old
        assert provider.is_refresh_token_active(old.refresh_token or "")
        assert _own_temps(mnt) == []
        # Space back: the very same grant refreshes once and is kept.
        filler.unlink()
        new = TokenManager(store, KEY).tokens()
        assert provider.refresh_count == 1 and provider.invalid_grant_count == 0
        assert _open(kind, mnt).get(KEY) == new
        assert provider.is_refresh_token_active(new.refresh_token or "")


@requires_root
@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_disk_filling_during_the_refresh_still_saves_the_successor(
    tmp_path: Path, kind: str
) -> None:
    """The space reserved before the request is what the save writes into."""
    with tmpfs(tmp_path / "tiny", "128k") as mnt, \
            MockProvider(rotate_refresh_tokens=True) as provider:
        store = _open(kind, mnt)
        login(provider, store)
        expire(provider, store)
        client = OAuthClient.from_client_info(store.get_client(KEY))  # type: ignore[arg-type]
        real_refresh = client.refresh
        filled: list[Path] = []

        def refresh_on_a_full_disk(*args: Any, **kwargs: Any) -> Tokens:
            filled.append(fill(mnt))  # another program takes the last byte meanwhile
            with pytest.raises(OSError) as full:
                (mnt / "more").write_bytes(b"x" * 4096)
            assert full.value.errno == errno.ENOSPC
            return real_refresh(*args, **kwargs)

        client.refresh = refresh_on_a_full_disk  # type: ignore[method-assign]
        new = TokenManager(store, KEY, client).tokens()
        assert filled, "the refresh request was not made"
        assert provider.refresh_count == 1
        assert _open(kind, mnt).get(KEY) == new
        assert provider.is_refresh_token_active(new.refresh_token or "")
        assert _own_temps(mnt) == []


@pytest.mark.parametrize("wrapped", ["plain", "encrypted"])
def test_a_normal_set_does_not_reserve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       wrapped: str) -> None:
    """Only reserve_write() allocates (a set() costs nothing more); an EncryptedStore
    reserves through its inner store."""
    calls: list[object] = []
    real = os.posix_fallocate
    monkeypatch.setattr(os, "posix_fallocate", lambda *a: calls.append(a) or real(*a))
    store: Any = FileStore(tmp_path / "s" / "tokens.json")
    if wrapped == "encrypted":
        pytest.importorskip("cryptography")
        from oauth_callback.storage.encrypted import EncryptedStore
        from oauth_callback.storage.key_sources import StaticKey

        store = EncryptedStore(store, StaticKey(b"k" * 32))
    store.set("a", Tokens("x"))
    assert calls == []
    with store.reserve_write("a"):
        assert len(calls) == 1
        store.set("a", Tokens("y"))
    assert store.get("a") == Tokens("y")
    assert _own_temps(tmp_path / "s") == []


# --------------------------------------------------------------------------- 2. hard links


def test_hard_linked_store_is_refused_and_never_refreshed(tmp_path: Path) -> None:
    one = tmp_path / "a" / "tokens.json"
    with MockProvider(rotate_refresh_tokens=True) as provider:
        store = FileStore(one)
        login(provider, store)
        expire(provider, store)
        two = tmp_path / "b" / "tokens.json"
        two.parent.mkdir(mode=0o700)
        os.link(one, two)
        for path in (one, two):
            with pytest.raises(StoreError) as info:
                TokenManager(FileStore(path), KEY).tokens()
            assert str(path) in str(info.value) and "hard links" in str(info.value)
            with pytest.raises(StoreError, match="hard links"):
                FileStore(path).set("other", Tokens("x"))
        assert provider.refresh_requests == 0
        from oauth_callback import doctor

        found = [f for f in doctor.diagnose(one) if f.check == "store-hardlink"]
        assert found and found[0].is_problem and str(one) in found[0].message


def test_own_backup_and_crash_leftover_links_are_not_foreign(tmp_path: Path) -> None:
    path = tmp_path / "s" / "tokens.json"
    store = FileStore(path)
    store.set("a", Tokens("1"))
    store.set("a", Tokens("2"))
    # A writer killed between its two links leaves the store with its backup's temp
    # name as a second link (pid of a dead process).
    os.link(path, path.parent / f".tokens.json.bak.{2**22 + 7}.0123456789abcdef.tmp")
    os.link(path, path.parent / "tokens.json.bak.new")
    os.replace(path.parent / "tokens.json.bak.new", path.parent / "tokens.json.bak")
    assert os.stat(path).st_nlink == 3
    assert FileStore(path).get("a") == Tokens("2")
    FileStore(path).set("b", Tokens("3"))
    assert FileStore(path).get("b") == Tokens("3")


# --------------------------------------------------------------------------- 3. strict modes

VICTIM = OUTCOME + """
from oauth_callback import FileStore, Tokens
action, path = sys.argv[1], sys.argv[2]
if action == "set":
    outcome(lambda: FileStore(path).set("k", Tokens("victim-secret-token")))
elif action == "get":
    outcome(lambda: repr(FileStore(path).get("k")))
elif action == "atomic_write":
    from oauth_callback.fs import atomic_write
    outcome(lambda: atomic_write(path, b"victim"))
"""


@requires_root
def test_strict_modes_against_a_second_local_user() -> None:
    with unprivileged_users(2) as (victim, attacker), shared_tree() as base:
        shared = base / "tmp"
        shared.mkdir()
        shared.chmod(0o1777)  # like /tmp
        private = base / "victim"
        private.mkdir(mode=0o700)
        os.chown(private, victim.uid, victim.gid)
        loot = base / "loot"
        loot.mkdir()
        os.chown(loot, attacker.uid, attacker.gid)
        loot.chmod(0o777)

        # A symlink planted at the store path in /tmp: not followed.
        planted = shared / "tokens.json"
        os.symlink(loot / "stolen.json", planted)
        os.lchown(planted, attacker.uid, attacker.gid)
        r = victim.run(VICTIM, "set", str(planted))
        assert r["type"] == "StorePermissionError", r
        assert str(shared) in str(r["message"]) and "1777" in str(r["message"])
        assert not (loot / "stolen.json").exists()

        # The same link in the victim's own directory (planted earlier): still refused.
        link = private / "tokens.json"
        os.symlink(loot / "stolen.json", link)
        os.lchown(link, attacker.uid, attacker.gid)
        r = victim.run(VICTIM, "set", str(link))
        assert r["type"] == "StorePermissionError", r
        assert str(link) in str(r["message"]) and f"uid {attacker.uid}" in str(r["message"])
        assert not (loot / "stolen.json").exists()
        link.unlink()

        # A directory the attacker pre-created with mode 0777: refused, nothing written.
        pre = shared / "victim-store"
        pre.mkdir()
        os.chown(pre, attacker.uid, attacker.gid)
        pre.chmod(0o777)
        r = victim.run(VICTIM, "set", str(pre / "tokens.json"))
        assert r["type"] == "StorePermissionError", r
        assert str(pre) in str(r["message"]) and f"uid {attacker.uid}" in str(r["message"])
        assert os.listdir(pre) == []

        # The victim's own file in a directory the attacker owns (mode 0755: writable
        # by its owner only, who can still swap the file): refused.
        theirs = base / "attacker-dir"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, attacker.uid, attacker.gid)
        (theirs / "tokens.json").write_text('{"k": {"accessToken": "x"}}')
        os.chown(theirs / "tokens.json", victim.uid, victim.gid)
        r = victim.run(VICTIM, "get", str(theirs / "tokens.json"))
        assert r["type"] == "StorePermissionError", r
        assert str(theirs) in str(r["message"]) and f"uid {attacker.uid}" in str(r["message"])

        # A world-readable store file owned by the attacker: not read.
        hostile = private / "tokens.json"
        hostile.write_text('{"k": {"accessToken": "attacker"}, "$oauth_callback": {"version": '
                           '1, "clients": {"k": {"clientId": "c", "tokenEndpoint": '
                           '"https://attacker.example/token"}}}}')
        os.chown(hostile, attacker.uid, attacker.gid)
        hostile.chmod(0o644)
        r = victim.run(VICTIM, "get", str(hostile))
        assert r["type"] == "StorePermissionError", r
        assert str(hostile) in str(r["message"]) and f"uid {attacker.uid}" in str(r["message"])
        assert "0644" in str(r["message"])
        hostile.unlink()

        # An unremovable fake stale temp file (dead pid, the attacker's, in a sticky
        # directory): a warning, the write succeeds.
        fake = shared / f".victim.json.{2**22 + 5}.0123456789abcdef.tmp"
        fake.write_bytes(b"")
        os.chown(fake, attacker.uid, attacker.gid)
        r = victim.run(VICTIM, "atomic_write", str(shared / "victim.json"))
        assert r["ok"] is True, r
        assert "cannot remove stale temporary file" in str(r["stderr"])
        assert (shared / "victim.json").read_bytes() == b"victim"

        # Root's files and directories are accepted (e.g. a store a root-run installer
        # placed in /srv/app, read by the service user).
        system = base / "system"
        system.mkdir(mode=0o755)
        (system / "tokens.json").write_text('{"k": {"accessToken": "from-root"}}')
        (system / "tokens.json").chmod(0o644)
        r = victim.run(VICTIM, "get", str(system / "tokens.json"))
        assert r["ok"] is True and str(r["value"]).startswith("Tokens("), r

        # The victim's own private store works.
        r = victim.run(VICTIM, "set", str(private / "tokens.json"))
        assert r["ok"] is True, r
        assert stat.S_IMODE(os.stat(private / "tokens.json").st_mode) == 0o600
        r = victim.run(VICTIM, "get", str(private / "tokens.json"))
        assert r["ok"] is True and str(r["value"]).startswith("Tokens("), r


def test_group_writable_store_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "shared-group"
    directory.mkdir()
    directory.chmod(0o775)
    with pytest.raises(StorePermissionError) as info:
        FileStore(directory / "tokens.json").set("k", Tokens("x"))
    assert str(directory) in str(info.value) and "0775" in str(info.value)
    assert not (directory / "tokens.json").exists()
    directory.chmod(0o755)
    FileStore(directory / "tokens.json").set("k", Tokens("x"))


def test_unremovable_stale_temp_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Without root: the same rule as above, the unlink refused by the OS."""
    target = tmp_path / "x.json"
    fake = tmp_path / f".x.json.{2**22 + 3}.0123456789abcdef.tmp"
    fake.write_bytes(b"")
    real_unlink = os.unlink

    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(path) == str(fake):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(fake))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert "cannot remove stale temporary file" in caplog.text


@requires_root
def test_atomic_write_never_follows_another_users_symlink(tmp_path: Path) -> None:
    """The shared mechanism itself (every writer): a link owned by someone else is refused."""
    with unprivileged_users(1) as (attacker,):
        aim = tmp_path / "aim.json"
        aim.write_bytes(b"theirs")
        link = tmp_path / "tokens.json"
        os.symlink(aim, link)
        os.lchown(link, attacker.uid, attacker.gid)
        with pytest.raises(StorePermissionError) as info:
            atomic_write(link, b"secret")
        assert str(link) in str(info.value) and f"uid {attacker.uid}" in str(info.value)
        assert aim.read_bytes() == b"theirs"
        os.lchown(link, 0, 0)  # root's (or our own) link is followed as before
        atomic_write(link, b"ours")
        assert aim.read_bytes() == b"ours" and link.is_symlink()


# --------------------------------------------------------------------------- 4. any parse failure


HUGE_NUMBER = b'{"a": {"accessToken": "x", "expiresAt": 1' + b"0" * 5000 + b"}}"


def test_number_longer_than_int_max_str_digits_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "s" / "tokens.json"
    store = FileStore(path)
    store.set("a", Tokens("good"))
    store.set("b", Tokens("other"))  # the backup now holds a good version with "a"
    path.write_bytes(HUGE_NUMBER)
    assert FileStore(path).get("a") == Tokens("good")  # from the backup
    report = FileStore(path).repair()
    assert report.restored_from_backup
    assert FileStore(path).get("a") == Tokens("good")
    # Without a backup: StoreCorruptError, then repair starts empty and keeps the bad file.
    for leftover in path.parent.iterdir():
        leftover.unlink()
    path.write_bytes(HUGE_NUMBER)
    from oauth_callback import StoreCorruptError

    with pytest.raises(StoreCorruptError, match="unreadable JSON"):
        FileStore(path).get("a")
    report = FileStore(path).repair()
    assert report.corrupt_copy is not None
    assert Path(report.corrupt_copy).read_bytes() == HUGE_NUMBER


def test_cli_repair_of_a_huge_number_is_not_a_usage_error(tmp_path: Path) -> None:
    from .test_cli import cli

    path = tmp_path / "s" / "tokens.json"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(HUGE_NUMBER)
    env = dict(os.environ, OAUTH_CALLBACK_STORE=str(path))
    result = cli(env, "doctor", "--repair")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Repaired" in result.stdout and "No problems found" not in result.stdout


def test_record_codec_any_parse_failure_is_corruption(tmp_path: Path) -> None:
    from oauth_callback import StoreCorruptError
    from oauth_callback.storage.records import decode_record

    for raw in ('{"accessToken": "x", "expiresAt": 1' + "0" * 5000 + "}", "[" * 100000,
                '{"accessToken": 5}', b"\xff"):
        with pytest.raises(StoreCorruptError) as info:
            decode_record("tokens", raw, what="record 'k'", path="p", hint="fix it")
        assert "record 'k' is corrupt" in str(info.value) and info.value.path == "p"


# --------------------------------------------------------------------------- 5. read-only mount


@requires_root
def test_read_only_mount_gives_typed_errors_naming_the_file(tmp_path: Path) -> None:
    import subprocess

    from oauth_callback import StoreError

    with tmpfs(tmp_path / "ro", size="1m") as mnt, MockProvider() as provider:
        path = mnt / "tokens.json"
        store = FileStore(path)
        login(provider, store)
        expire(provider, store)
        store.set("other", Tokens("x"))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        try:
            assert FileStore(path).get("other") == Tokens("x")
            operations = {
                "set": lambda: FileStore(path).set("k", Tokens("y")),
                "delete": lambda: FileStore(path).delete("other"),
                "clear": lambda: FileStore(path).clear(),
                "update": lambda: FileStore(path).update("other", lambda t: None),
                "repair": lambda: FileStore(path).repair(),
                "refresh_lock": lambda: FileStore(path).refresh_lock(KEY).__enter__(),
                "reserve_write": lambda: FileStore(path).reserve_write(KEY).__enter__(),
                "tokens": lambda: TokenManager(FileStore(path), KEY).tokens(),
            }
            for name, operation in operations.items():
                with pytest.raises(StoreError) as info:
                    operation()
                assert str(path) in str(info.value), (name, info.value)
                assert "Read-only file system" in str(info.value), (name, info.value)
            assert provider.refresh_requests == 0
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=False)


# --------------------------------------------------------------------------- 6. lone surrogate


def test_lone_surrogate_in_a_stored_record_can_be_updated(tmp_path: Path) -> None:
    path = tmp_path / "s" / "tokens.json"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(b'{"k": {"accessToken": "\\ud800", "scope": "a"}}\n')
    store = FileStore(path)
    assert store.get("k") == Tokens("\ud800", scope="a")
    store.update("k", lambda t: t.replace(scope="b") if t else t)
    assert FileStore(path).get("k") == Tokens("\ud800", scope="b")
    store.set("j", Tokens("\udfff-direct"))
    assert FileStore(path).get("j") == Tokens("\udfff-direct")
    path.read_bytes().decode("utf-8")  # still valid UTF-8 for every other reader


def test_lone_surrogate_in_sqlite_records(tmp_path: Path) -> None:
    from oauth_callback.storage import SQLiteStore

    store = SQLiteStore(tmp_path / "s" / "tokens.db")
    store.set("k", Tokens("\ud800"))
    store.update("k", lambda t: t.replace(scope="b") if t else t)
    assert SQLiteStore(tmp_path / "s" / "tokens.db").get("k") == Tokens("\ud800", scope="b")


# --------------------------------------------------------------------------- 7. temp names


def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def test_every_temp_name_of_a_dead_writer_is_removed(tmp_path: Path) -> None:
    from oauth_callback import doctor

    path = tmp_path / "s" / "tokens.json"
    store = FileStore(path)
    store.set("a", Tokens("x"))
    dead = _dead_pid()
    leftovers = [
        path.parent / f".tokens.json.{dead}.0123456789abcdef.tmp",
        path.parent / f".tokens.json.bak.{dead}.0123456789abcdef.tmp",  # killed at the backup
        path.parent / f"tokens.json.tmp.{dead}.3b241101-e2bb-4255-8caf-4136c566a962",  # npm
    ]
    live = path.parent / f".tokens.json.bak.{os.getpid()}.fedcba9876543210.tmp"
    for leftover in [*leftovers, live]:
        leftover.write_bytes(b"secret-token-material")
    found = {f.path for f in doctor.diagnose(path) if f.check == "stale-temp"}
    assert found == {str(p) for p in leftovers}
    store.set("b", Tokens("y"))
    assert [p for p in leftovers if p.exists()] == []
    assert live.exists()  # a live writer's file is never touched
    for leftover in leftovers:
        leftover.write_bytes(b"secret")
    actions = doctor.repair(FileStore(path))
    assert all(any(str(p) in a for a in actions) for p in leftovers), actions
    assert [p for p in leftovers if p.exists()] == []


# --------------------------------------------------------------------------- 8. secrets left


def test_finished_login_leaves_no_verifier_or_state_in_the_backup(tmp_path: Path) -> None:
    path = tmp_path / "s" / "tokens.json"
    with MockProvider() as provider:
        store = FileStore(path)
        store.set("earlier", Tokens("x"))
        seen: list[tuple[str, str]] = []
        real = store.set_session

        def spy(key: str, session: Any) -> None:
            seen.append((session.code_verifier, session.state))
            real(key, session)

        store.set_session = spy  # type: ignore[method-assign]
        login(provider, store)
    (verifier, state), = seen
    for name in ("tokens.json", "tokens.json.bak"):
        data = (path.parent / name).read_bytes()
        assert verifier.encode() not in data and state.encode() not in data, name
        assert b"codeVerifier" not in data, name
    assert FileStore(path).get(KEY) is not None


def test_deleted_tokens_and_clients_leave_no_secret_in_the_backup(tmp_path: Path) -> None:
    """delete() and logout's removals make the backup a copy of the new file: a
    deleted refresh token (maybe still valid at the provider) leaves the disk."""
    from oauth_callback import ClientInfo

    path = tmp_path / "s" / "tokens.json"
    store = FileStore(path)
    store.set("keep", Tokens("kept-access"))
    store.set("gone", Tokens("gone-access-5f1e", refresh_token="gone-refresh-9c2d"))
    store.set_client("gone", ClientInfo(client_id="cid", client_secret="gone-secret-77ab"))
    store.set("keep", Tokens("kept-access-2"))  # the backup now holds every secret above
    assert b"gone-refresh-9c2d" in (path.parent / "tokens.json.bak").read_bytes()
    store.delete("gone")
    store.delete_client("gone")
    for name in ("tokens.json", "tokens.json.bak"):
        data = (path.parent / name).read_bytes()
        for secret in (b"gone-access-5f1e", b"gone-refresh-9c2d", b"gone-secret-77ab"):
            assert secret not in data, (name, secret)
    assert FileStore(path).get("keep") == Tokens("kept-access-2")
    # A replacing write still keeps the previous version as the backup.
    store.set("keep", Tokens("kept-access-3"))
    assert b"kept-access-2" in (path.parent / "tokens.json.bak").read_bytes()


def test_clear_removes_corrupt_copies_and_backup(tmp_path: Path) -> None:
    path = tmp_path / "s" / "tokens.json"
    store = FileStore(path)
    store.set("a", Tokens("secret-one"))
    store.set("b", Tokens("secret-two"))
    path.write_bytes(b'{"a": {"accessToken": "secret-three"')  # torn
    store.set("c", Tokens("secret-four"))  # moves the bad file aside
    assert list(path.parent.glob("tokens.json.corrupt-*"))
    FileStore(path).clear()
    for leftover in path.parent.iterdir():
        assert b"secret-" not in leftover.read_bytes(), leftover.name
    assert not list(path.parent.glob("tokens.json.corrupt-*"))
    assert FileStore(path).keys() == []


@pytest.mark.parametrize("how", ["clear", "delete"])
def test_sqlite_wal_holds_no_cleared_token_while_open(tmp_path: Path, how: str) -> None:
    from oauth_callback.storage import SQLiteStore

    db = tmp_path / "s" / "tokens.db"
    store = SQLiteStore(db)
    store.set("keep", Tokens("public-value"))
    store.set("k", Tokens("secret-token-material-" + "s" * 40))
    assert any(b"secret-token-material" in p.read_bytes() for p in db.parent.iterdir())
    if how == "clear":
        store.clear()
    else:
        store.delete("k")
    for name in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if name.exists():
            assert b"secret-token-material" not in name.read_bytes(), name.name
    assert store.get("k") is None
    store.close()


# --------------------------------------------------------------------------- 9. foreign files


def test_doctor_repair_refuses_an_unrelated_file(tmp_path: Path) -> None:
    from .test_cli import cli

    directory = tmp_path / "project"
    directory.mkdir()
    directory.chmod(0o755)
    ini = directory / "settings.ini"
    ini.write_text("[core]\nname = mine\n")
    before = ini.read_bytes()
    env = dict(os.environ, OAUTH_CALLBACK_STORE=str(ini))
    result = cli(env, "doctor", "--repair")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and result.returncode != 2, out
    assert "does not look like a token store" in out
    assert "No problems found" not in out
    assert ini.read_bytes() == before
    assert sorted(os.listdir(directory)) == ["settings.ini"]
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
    with pytest.raises(StoreError, match="does not look like a token store"):
        FileStore(ini).repair()
    assert ini.read_bytes() == before


def test_os_error_after_the_lock_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    from oauth_callback import StoreError

    path = tmp_path / "s" / "tokens.json"
    store = FileStore(path)
    store.set("a", Tokens("x"))
    odd = path.parent / "tokens.json.corrupt-20200101T000000000000Z"
    odd.mkdir()  # unlink() of it fails with EISDIR, after the lock was taken
    with pytest.raises(StoreError) as info:
        store.clear()
    assert str(path) in str(info.value) and str(odd) in str(info.value)
    assert info.value.path == str(path)



@requires_root
def test_doctor_reports_what_strict_modes_refuse(tmp_path: Path) -> None:
    from oauth_callback import doctor

    directory = tmp_path / "d"
    path = directory / "tokens.json"
    FileStore(path).set("k", Tokens("x"))
    os.chown(path, 4242, 4242)  # someone else's file (any uid: root may chown)
    link = directory / "link.json"
    os.symlink(path, link)
    os.lchown(link, 4243, 4243)
    directory.chmod(0o777)
    found = {f.check: f for f in doctor.diagnose(link)}
    for check in ("directory-mode", "store-owner", "store-symlink-owner"):
        assert check in found and found[check].severity is doctor.Severity.ERROR, found.keys()
    assert "strict modes" in found["directory-mode"].message
    assert "uid 4242" in found["store-owner"].message
    assert "uid 4243" in found["store-symlink-owner"].message
    with pytest.raises(StorePermissionError):
        FileStore(link).get("k")


@requires_root
def test_mcp_refresh_on_a_full_disk_spends_nothing(tmp_path: Path) -> None:
    """The MCP provider reserves too: no refresh request when the successor cannot be
    stored; with space back, the same grant refreshes."""
    pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+; CI installs it")
    from oauth_callback.mcp import default_key

    from .mcp_server import AuthMCPServer
    from .test_mcp import connect, wait_until_expired

    server = AuthMCPServer(access_ttl=2).start()
    try:
        with tmpfs(tmp_path / "tiny", "128k") as mnt:
            path = mnt / "tokens.json"
            assert connect(server.url, FileStore(path), refresh_margin=0.0) == "echo: hi"
            old = FileStore(path).get(default_key(server.url))
            assert old is not None
            wait_until_expired(server, old)
            filler = fill(mnt)
            refreshes = server.provider.counts["refresh"]
            with pytest.raises(BaseException) as info:
                connect(server.url, FileStore(path), refresh_margin=0.0)
            chain: list[BaseException] = []
            error: BaseException | None = info.value
            while error is not None and len(chain) < 20:
                chain.append(error)
                nested = getattr(error, "exceptions", None)
                error = nested[0] if nested else (error.__cause__ or error.__context__)
            assert any(isinstance(e, StoreWriteError) and e.errno == errno.ENOSPC
                       for e in chain), chain
            assert server.provider.counts["refresh"] == refreshes
            assert FileStore(path).get(default_key(server.url)) == old
            filler.unlink()
            assert connect(server.url, FileStore(path), refresh_margin=0.0) == "echo: hi"
            assert server.provider.counts["refresh"] == refreshes + 1
            assert server.provider.counts["authorize"] == 1
    finally:
        server.stop()
