"""FileStore strict-mode checks on a symlink at the store path that no other test pins
alone: the link itself must be the user's (or root's), and the directory of the file it
names must be writable by no one else. Real unprivileged users (root only); each test
fails when the check it names is deleted from oauth_callback.storage.file."""

from __future__ import annotations

import os

from .conftest import requires_root
from .storage_env import shared_tree, unprivileged_users
from .test_store_hardening import VICTIM


@requires_root
def test_another_users_symlink_to_the_victims_own_file_is_refused() -> None:
    # Everything the link leads to is the victim's and private: only the link's owner
    # is wrong (an attacker planted it earlier).
    with unprivileged_users(2) as (victim, attacker), shared_tree() as base:
        private = base / "victim"
        private.mkdir(mode=0o700)
        os.chown(private, victim.uid, victim.gid)
        real = private / "real.json"
        real.write_text('{"k": {"accessToken": "victim-old"}}')
        real.chmod(0o600)
        os.chown(real, victim.uid, victim.gid)
        before = real.read_bytes()
        link = private / "tokens.json"
        os.symlink(real, link)
        os.lchown(link, attacker.uid, attacker.gid)
        for action in ("get", "set"):  # read through it, or write through it
            r = victim.run(VICTIM, action, str(link))
            assert r["type"] == "StorePermissionError", (action, r)
            assert "symlink" in str(r["message"]), (action, r)
            assert f"uid {attacker.uid}" in str(r["message"]), (action, r)
        assert real.read_bytes() == before


@requires_root
def test_the_victims_symlink_into_a_world_writable_directory_is_refused() -> None:
    # The victim's own link, in the victim's private directory, naming a file in a
    # directory anyone can write (not sticky): whoever can write there swaps the file.
    with unprivileged_users(2) as (victim, attacker), shared_tree() as base:
        private = base / "victim"
        private.mkdir(mode=0o700)
        os.chown(private, victim.uid, victim.gid)
        open_dir = base / "open"
        open_dir.mkdir()
        open_dir.chmod(0o777)
        os.chown(open_dir, attacker.uid, attacker.gid)
        link = private / "tokens.json"
        os.symlink(open_dir / "tokens.json", link)
        os.lchown(link, victim.uid, victim.gid)
        r = victim.run(VICTIM, "set", str(link))
        assert r["type"] == "StorePermissionError", r
        assert str(open_dir) in str(r["message"]) and "0777" in str(r["message"])
        assert os.listdir(open_dir) == []
