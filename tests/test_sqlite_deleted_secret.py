"""SQLiteStore: once ``delete()`` returned, the deleted token's bytes are in none of the
store's files (database, -wal, -shm): ``secure_delete`` zeroes the freed cells and the
WAL is checkpointed and truncated. Real SQLite files; fails when the checkpoint is
removed from oauth_callback.storage.sqlite (and when ``secure_delete`` is, on an SQLite
built without SQLITE_SECURE_DELETE; Debian's has it on by default)."""

from __future__ import annotations

from pathlib import Path

from oauth_callback import Tokens
from oauth_callback.storage import SQLiteStore

SECRET_AT = "at-DELETED-7c1f0e2d3b4a5968-access"
SECRET_RT = "rt-DELETED-0a1b2c3d4e5f6071-refresh"


def test_a_deleted_token_leaves_no_bytes_in_any_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    store = SQLiteStore(path)
    store.set("gone", Tokens(SECRET_AT, refresh_token=SECRET_RT, expires_at=2e9))
    store.set("kept", Tokens("at-kept-0123456789", refresh_token="rt-kept-0123456789"))
    store.delete("gone")
    assert store.get("gone") is None and store.get("kept") is not None
    files = sorted(p for p in tmp_path.iterdir() if p.name.startswith("tokens.db"))
    assert path in files
    for file in files:
        data = file.read_bytes()
        for secret in (SECRET_AT, SECRET_RT):
            assert secret.encode() not in data, (file.name, secret)
