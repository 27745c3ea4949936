"""The promise under attack (issue 9): full disks, hard links, shared directories,
hostile files. Every test here failed before its fix."""

from __future__ import annotations

import errno
import os
import stat
import time
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


@requires_root
def test_disk_full_refresh_does_not_spend_the_refresh_token(tmp_path: Path) -> None:
    """No space for the successor: StoreWriteError and the provider is never contacted."""
    with tmpfs(tmp_path / "tiny") as mnt, MockProvider(rotate_refresh_tokens=True) as provider:
        store = FileStore(mnt / "tokens.json")
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
        assert FileStore(mnt / "tokens.json").get(KEY) == old
        assert provider.is_refresh_token_active(old.refresh_token or "")
        assert _own_temps(mnt) == []
        # Space back: the very same grant refreshes once and is kept.
        filler.unlink()
        new = TokenManager(store, KEY).tokens()
        assert provider.refresh_count == 1 and provider.invalid_grant_count == 0
        assert FileStore(mnt / "tokens.json").get(KEY) == new
        assert provider.is_refresh_token_active(new.refresh_token or "")


@requires_root
def test_disk_filling_during_the_refresh_still_saves_the_successor(tmp_path: Path) -> None:
    """The space reserved before the request is what the save writes into."""
    with tmpfs(tmp_path / "tiny") as mnt, MockProvider(rotate_refresh_tokens=True) as provider:
        store = FileStore(mnt / "tokens.json")
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
        assert FileStore(mnt / "tokens.json").get(KEY) == new
        assert provider.is_refresh_token_active(new.refresh_token or "")
        assert _own_temps(mnt) == []


def test_a_normal_set_does_not_reserve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "posix_fallocate", lambda *a: calls.append(a))
    store = FileStore(tmp_path / "s" / "tokens.json")
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

        # The victim's own private store works, and root-owned files are accepted.
        r = victim.run(VICTIM, "set", str(private / "tokens.json"))
        assert r["ok"] is True, r
        assert stat.S_IMODE(os.stat(private / "tokens.json").st_mode) == 0o600
        r = victim.run(VICTIM, "get", str(private / "tokens.json"))
        assert r["ok"] is True and "victim-secret-token" not in str(r["value"]), r


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


def test_root_owned_files_are_accepted(tmp_path: Path) -> None:
    # The rule is "ours or root's"; as root everything is both (no-op), as a user the
    # system's root-owned directories (e.g. a root-made /srv/app) stay usable.
    FileStore(tmp_path / "s" / "tokens.json").set("k", Tokens("x", expires_at=time.time() + 60))
    assert FileStore(tmp_path / "s" / "tokens.json").get("k") is not None


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
