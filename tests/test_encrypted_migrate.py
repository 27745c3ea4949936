"""Rotation and migration of encrypted stores through the public API and ``tokens migrate``.

Plaintext -> encrypted, encrypted -> plaintext, key A -> key B (the destination
URL names the new key), and plaintext -> encrypted in place (same file).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from oauth_callback import ClientInfo, FileStore, OAuthSession, Tokens
from oauth_callback.errors import StoreEncryptedError, StoreWrongKeyError
from oauth_callback.storage import SQLiteStore, migrate
from oauth_callback.storage.encrypted import ENVELOPE_FIELD, MARKER, EncryptedStore
from oauth_callback.storage.key_sources import encode_key, generate_key, key_id
from oauth_callback.storage.url import open_store

from .conftest import ROOT

SECRET = "at-MIGRATE-SECRET-0123456789abcdef"


def fill(store: object) -> None:
    for n in ("a", "b"):
        store.set(n, Tokens(f"{SECRET}-{n}", refresh_token=f"rt-{n}",  # type: ignore[attr-defined]
                            extra={"id_token": "x.y.z", "customField": [n]}))
        store.set_client(n, ClientInfo(f"cid-{n}", client_secret=f"cs-{n}"))  # type: ignore[attr-defined]
    store.set_session("a", OAuthSession("v" * 43, "st"))  # type: ignore[attr-defined]


def contents(store: object) -> dict:
    s = store
    return {
        "keys": sorted(s.keys()),  # type: ignore[attr-defined]
        "tokens": {k: s.get(k) for k in ("a", "b")},  # type: ignore[attr-defined]
        "clients": {k: s.get_client(k) for k in ("a", "b")},  # type: ignore[attr-defined]
        "session": s.get_session("a"),  # type: ignore[attr-defined]
    }


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes]:
    a, b = generate_key(), generate_key()
    monkeypatch.setenv("OC_KEY_A", encode_key(a))
    monkeypatch.setenv("OC_KEY_B", encode_key(b))
    return a, b


def kids_in(path: Path) -> set[str]:
    doc = json.loads(path.read_text())
    found = {r[ENVELOPE_FIELD]["kid"] for k, r in doc.items() if k != "$oauth_callback"
             and ENVELOPE_FIELD in r}
    meta = doc.get("$oauth_callback", {})
    for section in ("clients", "sessions"):
        found |= {r[ENVELOPE_FIELD]["kid"] for r in meta.get(section, {}).values()
                  if ENVELOPE_FIELD in r}
    return found


def test_plaintext_to_encrypted_to_plaintext(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    plain = FileStore(tmp_path / "plain.json")
    fill(plain)
    expected = contents(plain)
    encrypted = open_store(f"sqlite:{tmp_path}/enc.db?encryption=env:OC_KEY_A")
    report = migrate(plain, encrypted)
    assert report.ok and len(report.verified) == 5
    assert contents(encrypted) == expected
    assert SECRET.encode() not in (tmp_path / "enc.db").read_bytes()
    back = FileStore(tmp_path / "back.json")
    assert migrate(encrypted, back).ok
    assert contents(back) == expected
    assert json.loads((tmp_path / "back.json").read_text())["a"]["customField"] == ["a"]


def test_key_a_to_key_b(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    old = open_store(f"file:{tmp_path}/a.json?encryption=env:OC_KEY_A")
    fill(old)
    new = open_store(f"file:{tmp_path}/b.json?encryption=env:OC_KEY_B")
    assert migrate(old, new).ok
    assert contents(new) == contents(old)
    assert kids_in(tmp_path / "b.json") == {key_id(keys[1])}
    # The old file under the new key: every record is refused, nothing changes.
    before = (tmp_path / "a.json").read_bytes()
    wrong = open_store(f"file:{tmp_path}/a.json?encryption=env:OC_KEY_B")
    with pytest.raises(StoreWrongKeyError):
        wrong.get("a")
    with pytest.raises(StoreWrongKeyError):
        migrate(new, wrong, overwrite=True)
    assert (tmp_path / "a.json").read_bytes() == before


def test_plaintext_to_encrypted_in_place(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    path = tmp_path / "tokens.json"
    plain = FileStore(path)
    fill(plain)
    expected = contents(plain)
    report = migrate(FileStore(path), open_store(f"file:{path}?encryption=env:OC_KEY_A"))
    assert report.ok and not report.failures
    assert SECRET not in path.read_text()
    assert kids_in(path) == {key_id(keys[0])}
    encrypted = EncryptedStore(FileStore(path), "env:OC_KEY_A")
    assert {s.state for s in encrypted.audit()} == {"encrypted"}
    assert contents(encrypted) == expected


def cli(*args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "oauth_callback", *args],
                          capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_tokens_migrate_command(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    key_env = {"OC_KEY_A": encode_key(keys[0]), "OC_KEY_B": encode_key(keys[1])}
    fill(FileStore(tmp_path / "plain.json"))
    steps = [
        (f"file:{tmp_path}/plain.json", f"sqlite:{tmp_path}/a.db?encryption=env:OC_KEY_A"),
        (f"sqlite:{tmp_path}/a.db?encryption=env:OC_KEY_A",
         f"file:{tmp_path}/b.json?encryption=env:OC_KEY_B"),
        (f"file:{tmp_path}/b.json?encryption=env:OC_KEY_B", f"file:{tmp_path}/out.json"),
    ]
    for source, target in steps:
        result = cli("tokens", "migrate", "--from", source, "--to", target, env_extra=key_env)
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert "verified" in result.stdout
    assert contents(FileStore(tmp_path / "out.json")) == contents(FileStore(tmp_path / "plain.json"))
    assert kids_in(tmp_path / "b.json") == {key_id(keys[1])}
    assert SECRET.encode() not in (tmp_path / "a.db").read_bytes()
    # A missing key: a clear error naming the source, exit status 1, nothing written.
    result = cli("tokens", "migrate", "--from", f"file:{tmp_path}/plain.json",
                 "--to", f"file:{tmp_path}/never.json?encryption=env:OC_KEY_UNSET",
                 env_extra=key_env)
    assert result.returncode != 0
    assert "env:OC_KEY_UNSET" in result.stderr and "not set" in result.stderr
    assert not (tmp_path / "never.json").exists()
    for value in key_env.values():
        assert value not in result.stdout + result.stderr


def test_encrypted_sqlite_target_keeps_envelopes(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    store = EncryptedStore(SQLiteStore(tmp_path / "x.db"), "env:OC_KEY_A")
    store.set("k", Tokens("t"))
    with sqlite3.connect(tmp_path / "x.db") as db:
        (raw,) = db.execute("SELECT record FROM records WHERE section = 'tokens' AND key = 'k'"
                            ).fetchone()
    record = json.loads(raw)
    assert record["accessToken"] == MARKER and ENVELOPE_FIELD in record
    # Opened without encryption, the store says so instead of handing out the marker.
    with pytest.raises(StoreEncryptedError, match=r"'k' .* is encrypted"):
        SQLiteStore(tmp_path / "x.db").get("k")
