"""EncryptedStore: record format, associated data, wrong/missing keys, plaintext records, caching.

The contract suite runs over encrypted memory, file, SQLite and Redis stores too
(``conftest.BACKENDS["encrypted-*"]``); the grep of every byte left on disk is in
``tests/test_encrypted_at_rest.py``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from oauth_callback import ClientInfo, FileStore, MemoryStore, OAuthSession, Tokens
from oauth_callback.errors import (
    StoreCorruptError,
    StoreDecryptError,
    StoreError,
    StoreKeyError,
    StoreWrongKeyError,
)
from oauth_callback.storage import SQLiteStore
from oauth_callback.storage.encrypted import ENVELOPE_FIELD, MARKER, EncryptedStore
from oauth_callback.storage.key_sources import (
    EnvKey,
    FileKey,
    KeyringKey,
    StaticKey,
    decode_key,
    encode_key,
    generate_key,
    key_id,
    parse_key_source,
    write_key_file,
)

from .conftest import requires_root

SECRET_AT = "at-SECRET-6f1d0c2b9a8e7f60-access"
SECRET_RT = "rt-SECRET-1122334455667788-refresh"


def tokens() -> Tokens:
    return Tokens(SECRET_AT, refresh_token=SECRET_RT, expires_at=1_767_225_600.5, scope="repo",
                  extra={"id_token": "idt-SECRET-x.y.z", "unknownField": {"kept": [1, None]}})


@pytest.fixture
def key() -> bytes:
    return generate_key()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.json"


def enc_file(path: Path, key: bytes) -> EncryptedStore:
    return EncryptedStore(FileStore(path), StaticKey(key, description="test key"))


def raw(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- format


def test_record_format_in_a_file(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    store.set("github", tokens())
    store.set_client("github", ClientInfo("cid", client_secret="cs-SECRET-abcdef"))
    store.set_session("github", OAuthSession("v" * 43, "state-SECRET"))
    doc = raw(path)
    record = doc["github"]
    assert record["accessToken"] == MARKER
    assert record["expiresAt"] == 1_767_225_600_500  # readable, not secret
    envelope = record[ENVELOPE_FIELD]
    assert set(envelope) == {"v", "alg", "kid", "nonce", "ct"}
    assert envelope["v"] == 1 and envelope["alg"] == "A256GCM"
    assert envelope["kid"] == key_id(key) and len(envelope["kid"]) == 16
    assert len(base64.urlsafe_b64decode(envelope["nonce"] + "==")) == 12
    assert set(record) == {"accessToken", "expiresAt", ENVELOPE_FIELD}
    meta = doc["$oauth_callback"]
    assert meta["clients"]["github"]["clientId"] == MARKER
    assert set(meta["sessions"]["github"]) == {ENVELOPE_FIELD}
    text = path.read_text()
    for secret in (SECRET_AT, SECRET_RT, "idt-SECRET", "cs-SECRET", "state-SECRET", "unknownField"):
        assert secret not in text
    # Everything comes back, unknown fields included; key names stay readable.
    fresh = enc_file(path, key)
    assert fresh.get("github") == tokens()
    assert dict(fresh.get("github").extra) == dict(tokens().extra)  # type: ignore[union-attr]
    assert fresh.get_client("github") == ClientInfo("cid", client_secret="cs-SECRET-abcdef")
    assert fresh.get_session("github") == OAuthSession("v" * 43, "state-SECRET")
    assert FileStore(path).keys() == ["github"]


def test_fresh_nonce_per_write(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    nonces = set()
    for _ in range(20):
        store.set("k", Tokens("same"))
        nonces.add(raw(path)["k"][ENVELOPE_FIELD]["nonce"])
    assert len(nonces) == 20


def test_other_records_and_unknown_fields_of_the_file_survive(path: Path, key: bytes) -> None:
    path.parent.mkdir(parents=True)
    original = (
        b'{\n  "npm-app": {"accessToken": "plain", "someNpmField": 1},\n'
        b'  "$oauth_callback": {"version": 1, "futureField": {"x": 1}, "clients": {}, '
        b'"sessions": {}}\n}\n'
    )
    path.write_bytes(original)
    store = enc_file(path, key)
    store.set("mine", tokens())
    doc = raw(path)
    assert doc["npm-app"] == {"accessToken": "plain", "someNpmField": 1}
    assert doc["$oauth_callback"]["futureField"] == {"x": 1}
    assert b'"npm-app": {"accessToken": "plain", "someNpmField": 1}' in path.read_bytes()


def test_fields_added_beside_the_envelope_survive_rewrites(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    store.set("a", tokens())
    doc = raw(path)
    doc["a"]["addedByAnotherTool"] = {"x": 1}
    path.write_text(json.dumps(doc))
    store.update("a", lambda cur: cur.replace(access_token="new"))  # type: ignore[union-attr]
    record = raw(path)["a"]
    assert record["addedByAnotherTool"] == {"x": 1}
    assert enc_file(path, key).get("a") == tokens().replace(access_token="new")
    # A plaintext record's fields are never left in clear beside the ciphertext.
    FileStore(path).set("p", tokens())
    store.update("p", lambda cur: cur)
    assert set(raw(path)["p"]) == {"accessToken", "expiresAt", ENVELOPE_FIELD}


def test_sqlite_record_is_the_envelope(tmp_path: Path, key: bytes) -> None:
    import sqlite3

    db = tmp_path / "t.db"
    store = EncryptedStore(SQLiteStore(db), StaticKey(key))
    store.set("k", tokens())
    store.close()
    conn = sqlite3.connect(db)
    (record,) = conn.execute("SELECT record FROM records WHERE key = 'k'").fetchone()
    conn.close()
    parsed = json.loads(record)
    assert parsed["accessToken"] == MARKER and parsed[ENVELOPE_FIELD]["kid"] == key_id(key)
    assert SECRET_AT not in record


# --------------------------------------------------------------------------- associated data


def test_ciphertext_moved_to_another_key_name_fails(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    store.set("a", Tokens("token-a"))
    store.set("b", Tokens("token-b"))
    doc = raw(path)
    doc["b"] = doc["a"]  # someone with write access swaps the records
    path.write_text(json.dumps(doc))
    with pytest.raises(StoreDecryptError) as info:
        enc_file(path, key).get("b")
    assert "'b'" in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, StoreCorruptError)
    assert enc_file(path, key).get("a") == Tokens("token-a")


def test_ciphertext_moved_to_another_section_fails(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    store.set("a", Tokens("token-a"))
    store.set_client("a", ClientInfo("cid"))
    doc = raw(path)
    # The client envelope, planted as the session of the same key.
    doc["$oauth_callback"]["sessions"]["a"] = {
        ENVELOPE_FIELD: doc["$oauth_callback"]["clients"]["a"][ENVELOPE_FIELD]
    }
    path.write_text(json.dumps(doc))
    with pytest.raises(StoreDecryptError):
        enc_file(path, key).get_session("a")


@pytest.mark.parametrize("field", ["ct", "nonce"])
def test_modified_ciphertext_fails_and_refuses_writes(path: Path, key: bytes, field: str) -> None:
    store = enc_file(path, key)
    store.set("a", tokens())
    doc = raw(path)
    value = doc["a"][ENVELOPE_FIELD][field]
    doc["a"][ENVELOPE_FIELD][field] = value[:5] + ("A" if value[5] != "A" else "B") + value[6:]
    path.write_text(json.dumps(doc))
    before = path.read_bytes()
    fresh = enc_file(path, key)
    with pytest.raises(StoreDecryptError) as info:
        fresh.get("a")
    assert "test key" in str(info.value) and info.value.key_source == "test key"
    with pytest.raises(StoreDecryptError):
        fresh.set("a", Tokens("new"))
    assert path.read_bytes() == before


def test_relabelled_key_id_fails(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    store.set("a", Tokens("token-a"))
    doc = raw(path)
    doc["a"][ENVELOPE_FIELD]["kid"] = "0" * 16
    path.write_text(json.dumps(doc))
    with pytest.raises(StoreWrongKeyError):
        enc_file(path, key).get("a")


def test_newer_record_format_is_not_read_or_overwritten(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    store.set("a", Tokens("token-a"))
    doc = raw(path)
    doc["a"][ENVELOPE_FIELD]["v"] = 2
    path.write_text(json.dumps(doc))
    before = path.read_bytes()
    fresh = enc_file(path, key)
    with pytest.raises(StoreDecryptError, match="format 2"):
        fresh.get("a")
    with pytest.raises(StoreDecryptError):
        fresh.update("a", lambda cur: Tokens("x"))
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- wrong and missing keys


def test_wrong_key_read_names_store_and_source_never_the_key(
    path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc_file(path, key).set("a", tokens())
    other = generate_key()
    monkeypatch.setenv("OC_TEST_KEY", encode_key(other))
    store = EncryptedStore(FileStore(path), "env:OC_TEST_KEY")
    with pytest.raises(StoreWrongKeyError) as info:
        store.get("a")
    message = str(info.value)
    assert str(path) in message and "env:OC_TEST_KEY" in message
    assert key_id(key) in message and key_id(other) in message
    assert info.value.key_id == key_id(key) and info.value.expected_key_id == key_id(other)
    assert info.value.key_source == "env:OC_TEST_KEY"
    for secret in (encode_key(key), encode_key(other), SECRET_AT):
        assert secret not in message and secret not in repr(store)


def test_write_with_the_wrong_key_is_refused(path: Path, key: bytes) -> None:
    enc_file(path, key).set("a", tokens())
    enc_file(path, key).set_client("a", ClientInfo("cid"))
    before = path.read_bytes()
    wrong = enc_file(path, generate_key())
    with pytest.raises(StoreWrongKeyError):
        wrong.set("a", Tokens("overwrite"))
    with pytest.raises(StoreWrongKeyError):
        wrong.delete("a")
    with pytest.raises(StoreWrongKeyError):
        wrong.set_client("a", ClientInfo("other"))
    # Not even beside the records it cannot read.
    with pytest.raises(StoreWrongKeyError):
        wrong.set("new-key", Tokens("beside"))
    assert path.read_bytes() == before
    assert enc_file(path, key).get("a") == tokens()


def test_wrong_key_is_refused_on_every_backend_record(tmp_path: Path, key: bytes) -> None:
    inner = MemoryStore()
    EncryptedStore(inner, StaticKey(key)).set_session("s", OAuthSession("v", "s"))
    wrong = EncryptedStore(inner, StaticKey(generate_key()))
    with pytest.raises(StoreWrongKeyError):
        wrong.get_session("s")
    with pytest.raises(StoreWrongKeyError):
        wrong.set("t", Tokens("x"))
    assert inner.keys() == []


def test_missing_env_var(path: Path, monkeypatch: pytest.MonkeyPatch, key: bytes) -> None:
    enc_file(path, key).set("a", Tokens("token-a"))
    monkeypatch.delenv("OC_MISSING_KEY", raising=False)
    store = EncryptedStore(FileStore(path), "env:OC_MISSING_KEY")
    for op in (lambda: store.get("a"), lambda: store.set("b", Tokens("b"))):
        with pytest.raises(StoreKeyError) as info:
            op()
        assert "OC_MISSING_KEY is not set" in str(info.value) and str(path) in str(info.value)
        assert info.value.key_source == "env:OC_MISSING_KEY"


@pytest.mark.parametrize("value", ["", "not base64 !", encode_key(generate_key())[:-4],
                                   base64.urlsafe_b64encode(os.urandom(16)).decode()])
def test_malformed_env_key(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OC_BAD_KEY", value)
    with pytest.raises(StoreKeyError) as info:
        EnvKey("OC_BAD_KEY").load()
    assert "OC_BAD_KEY" in str(info.value)
    if value:
        assert value not in str(info.value)


def test_key_text_forms() -> None:
    key = generate_key()
    text = encode_key(key)
    assert len(text) == 43 and "=" not in text
    assert decode_key(text) == key
    assert decode_key(text + "=\n") == key
    assert decode_key("  " + text + "  ") == key
    with pytest.raises(ValueError):
        decode_key(base64.b64encode(key).decode().replace("-", "+") + "+/")


def test_key_file_made_by_keygen(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "oc.key"
    kid = write_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    key = FileKey(path).load()
    assert key_id(key) == kid
    assert path.read_text().strip() == encode_key(key)
    assert [p.name for p in path.parent.iterdir()] == ["oc.key"]  # no temp file left
    with pytest.raises(FileExistsError):
        write_key_file(path)
    assert FileKey(path).load() == key  # never overwritten


def test_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "oc.key"
    write_key_file(path)
    os.chmod(path, 0o640)
    with pytest.raises(StoreKeyError) as info:
        FileKey(path).load()
    assert "0640" in str(info.value) and str(path) in str(info.value)
    os.chmod(path, 0o400)
    assert len(FileKey(path).load()) == 32


def test_key_file_missing_or_malformed(tmp_path: Path) -> None:
    with pytest.raises(StoreKeyError, match="no key file"):
        FileKey(tmp_path / "nope.key").load()
    bad = tmp_path / "bad.key"
    bad.write_text("hello")
    os.chmod(bad, 0o600)
    with pytest.raises(StoreKeyError, match="does not hold a key"):
        FileKey(bad).load()
    with pytest.raises(StoreKeyError, match="not a regular file"):
        FileKey(tmp_path).load()


@requires_root
def test_key_file_owned_by_another_user(tmp_path: Path) -> None:
    path = tmp_path / "oc.key"
    write_key_file(path)
    os.chown(path, 65534, 65534)  # nobody
    with pytest.raises(StoreKeyError) as info:
        FileKey(path).load()
    assert "owned by uid 65534" in str(info.value)


def test_parse_key_source() -> None:
    assert isinstance(parse_key_source("keyring"), KeyringKey)
    assert parse_key_source("env:X").description == "env:X"
    assert parse_key_source("file:/k").description == "file:/k"
    for bad in ("", "env:", "file:", "keyring:x", "plain", "ENV:X"):
        with pytest.raises(ValueError, match="keyring, env:NAME or file:PATH"):
            parse_key_source(bad)


# --------------------------------------------------------------------------- keyring key source


def test_keyring_key_is_created_once_by_the_first_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("keyring")
    monkeypatch.setenv("OAUTH_CALLBACK_LOCK_DIR", str(tmp_path / "locks"))
    from .test_keyring_store import DirKeyring

    backend = DirKeyring(tmp_path / "keychain")
    source = KeyringKey(keyring_backend=backend)
    assert source.load() is None  # a read never creates a key
    path = tmp_path / "tokens.json"
    store = EncryptedStore(FileStore(path), source)
    assert store.get("a") is None
    assert not (tmp_path / "keychain").exists()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def first_write(i: int) -> None:
        own = EncryptedStore(FileStore(path), KeyringKey(keyring_backend=backend))
        barrier.wait()
        try:
            own.set(f"k{i}", Tokens(f"t{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stored = backend.get_password("oauth-callback-encryption", "default")
    assert stored is not None and len(decode_key(stored)) == 32
    fresh = EncryptedStore(FileStore(path), KeyringKey(keyring_backend=backend))
    assert sorted(fresh.keys()) == ["k0", "k1", "k2", "k3"]
    assert fresh.get("k2") == Tokens("t2")
    assert fresh.key_id == key_id(decode_key(stored))


def test_keyring_without_a_key_cannot_read_or_write(
    tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("keyring")
    monkeypatch.setenv("OAUTH_CALLBACK_LOCK_DIR", str(tmp_path / "locks"))
    from .test_keyring_store import DirKeyring

    path = tmp_path / "tokens.json"
    enc_file(path, key).set("a", Tokens("token-a"))
    backend = DirKeyring(tmp_path / "k")
    store = EncryptedStore(FileStore(path), KeyringKey(keyring_backend=backend))
    with pytest.raises(StoreWrongKeyError, match="keychain holds no key"):
        store.get("a")
    with pytest.raises(StoreWrongKeyError, match="keychain holds no key"):
        store.set("b", Tokens("b"))
    # No new key was made for a store whose records are under another one.
    assert backend.get_password("oauth-callback-encryption", "default") is None


def test_keyring_unusable_is_a_key_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("keyring")
    monkeypatch.setenv("OAUTH_CALLBACK_LOCK_DIR", str(tmp_path / "locks"))
    from keyring.backends import fail

    store = EncryptedStore(FileStore(tmp_path / "t.json"),
                           KeyringKey(keyring_backend=fail.Keyring()))
    with pytest.raises(StoreKeyError, match="no usable keychain") as info:
        store.set("a", Tokens("x"))
    assert info.value.key_source == "keyring"
    assert not (tmp_path / "t.json").exists()


# --------------------------------------------------------------------------- plaintext records


def test_plaintext_record_is_read_reported_and_encrypted_on_next_write(
    path: Path, key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    FileStore(path).set("old", tokens())  # written before encryption was on (or by npm)
    FileStore(path).set("other", Tokens("other-plain"))
    store = enc_file(path, key)
    with caplog.at_level(logging.WARNING, logger="oauth_callback"):
        assert store.get("old") == tokens()
        assert store.get("old") == tokens()
    warnings = [r.getMessage() for r in caplog.records if "not encrypted" in r.getMessage()]
    assert len(warnings) == 1 and "'old'" in warnings[0] and SECRET_AT not in caplog.text
    states = {(s.key, s.state) for s in store.audit()}
    assert states == {("old", "plaintext"), ("other", "plaintext")}
    # An update that changes nothing still encrypts (tokens migrate relies on it).
    assert store.update("old", lambda cur: cur) == tokens()
    assert raw(path)["old"]["accessToken"] == MARKER
    assert raw(path)["other"] == {"accessToken": "other-plain"}
    store.set("other", Tokens("other-new"))
    assert SECRET_AT not in path.read_text() and "other-new" not in path.read_text()
    assert {s.state for s in enc_file(path, key).audit()} == {"encrypted"}
    assert enc_file(path, key).get("old") == tokens()


def test_audit_reports_records_under_another_key(path: Path, key: bytes) -> None:
    old = generate_key()
    enc_file(path, old).set("a", Tokens("token-a"))
    inner = FileStore(path)
    new = EncryptedStore(inner, StaticKey(key))
    # A record under the new key, written beside (as a migration would).
    doc = raw(path)
    other = MemoryStore()
    EncryptedStore(other, StaticKey(key)).set("b", Tokens("token-b"))
    doc["b"] = other._read("tokens", "b").to_record()  # the inner record, as stored
    path.write_text(json.dumps(doc))
    statuses = {s.key: s for s in new.audit()}
    assert statuses["a"].state == "other-key" and statuses["a"].key_id == key_id(old)
    assert statuses["b"].state == "encrypted" and statuses["b"].key_id == key_id(key)


# --------------------------------------------------------------------------- caching and atomicity


def test_warm_get_does_not_decrypt_again(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    store.set("a", tokens())
    calls = []
    decrypt = store._decrypt

    def counting(*args: object) -> object:
        calls.append(args)
        return decrypt(*args)  # type: ignore[arg-type]

    store._decrypt = counting  # type: ignore[method-assign]
    for _ in range(50):
        assert store.get("a") == tokens()
    assert calls == []  # the write cached what it stored
    other = enc_file(path, key)
    other.set("a", Tokens("changed"))  # another handle changes the record
    assert store.get("a") == Tokens("changed")
    assert store.get("a") == Tokens("changed")
    assert len(calls) == 1


def test_sqlite_warm_get_uses_the_cache_across_rereads(tmp_path: Path, key: bytes) -> None:
    store = EncryptedStore(SQLiteStore(tmp_path / "t.db"), StaticKey(key))
    store.set("a", tokens())
    reader = EncryptedStore(SQLiteStore(tmp_path / "t.db"), StaticKey(key))
    calls = []
    decrypt = reader._decrypt
    reader._decrypt = lambda *a: calls.append(a) or decrypt(*a)  # type: ignore[method-assign]
    for _ in range(10):
        assert reader.get("a") == tokens()
    assert len(calls) == 1  # equal ciphertext, new object each read: decrypted once


def test_update_runs_inside_the_inner_update(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    store.set("n", Tokens("0"))
    errors: list[BaseException] = []

    def bump() -> None:
        own = enc_file(path, key)
        try:
            for _ in range(25):
                own.update("n", lambda cur: Tokens(str(int(cur.access_token) + 1)))  # type: ignore[union-attr]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert enc_file(path, key).get("n") == Tokens("100")


def test_update_exception_writes_nothing_and_returns(path: Path, key: bytes) -> None:
    store = enc_file(path, key)
    store.set("a", Tokens("a"))
    before = path.read_bytes()

    def boom(cur: Tokens | None) -> Tokens:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.update("a", boom)
    assert store.update("a", lambda cur: cur) == Tokens("a")
    assert path.read_bytes() == before  # unchanged encrypted record: no write


def test_describe_and_repr_name_the_source_not_the_key(path: Path, key: bytes,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OC_TEST_KEY", encode_key(key))
    store = EncryptedStore(FileStore(path), "env:OC_TEST_KEY")
    store.set("a", Tokens("x"))
    for text in (store.describe(), repr(store), repr(store.key_source)):
        assert "env:OC_TEST_KEY" in text and encode_key(key) not in text
    assert str(path) in store.describe()


def test_wrapping_rules(key: bytes) -> None:
    inner = EncryptedStore(MemoryStore(), StaticKey(key))
    with pytest.raises(TypeError):
        EncryptedStore(inner, StaticKey(key))
    with pytest.raises(TypeError):
        EncryptedStore("file:x", StaticKey(key))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StaticKey(b"short")
    assert issubclass(StoreKeyError, StoreError)


# --------------------------------------------------------------------------- store URLs


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    key = generate_key()
    monkeypatch.setenv("OC_URL_KEY", encode_key(key))
    return key


def _check_encrypted(store: object, inner_type: type, key: bytes) -> None:
    assert isinstance(store, EncryptedStore)
    assert isinstance(store.store, inner_type)
    store.set("k", Tokens(SECRET_AT))
    assert store.get("k") == Tokens(SECRET_AT)
    inner = store.store._read("tokens", "k")
    assert inner.access_token == MARKER and inner.extra[ENVELOPE_FIELD]["kid"] == key_id(key)
    assert store.key_source.description == "env:OC_URL_KEY"


def test_encryption_parameter_on_every_scheme(tmp_path: Path, env_key: bytes) -> None:
    from oauth_callback.storage.url import open_store

    for url, inner_type in [
        (f"file:{tmp_path}/t.json?encryption=env:OC_URL_KEY", FileStore),
        (f"{tmp_path}/bare.json", FileStore),  # a bare path takes no parameters: plain
        (f"sqlite:{tmp_path}/t.db?encryption=env:OC_URL_KEY", SQLiteStore),
        ("memory:?encryption=env:OC_URL_KEY", MemoryStore),
    ]:
        store = open_store(url)
        if url.endswith("bare.json"):
            assert isinstance(store, FileStore)
            continue
        _check_encrypted(store, inner_type, env_key)
        store.close()
    assert not any("?" in p.name for p in tmp_path.iterdir())


def test_encryption_parameter_on_redis_and_keyring(tmp_path: Path, env_key: bytes) -> None:
    from oauth_callback.storage.url import open_store

    from .redis_server import require_redis, session_url

    require_redis()
    from oauth_callback.storage.redis import RedisStore

    store = open_store(session_url(tmp_path) + "&encryption=env:OC_URL_KEY")
    _check_encrypted(store, RedisStore, env_key)
    assert store.store.prefix.startswith("t-")  # type: ignore[attr-defined]
    store.close()
    pytest.importorskip("keyring")
    from oauth_callback.storage.keyring import KeyringStore

    from .test_keyring_store import contract_url

    store = open_store(contract_url(tmp_path) + "?encryption=env:OC_URL_KEY")
    _check_encrypted(store, KeyringStore, env_key)


@pytest.mark.parametrize("value", ["bogus", "env:", "file:", "keyring:x", ""])
def test_bad_encryption_parameter_is_an_error_creating_nothing(
    tmp_path: Path, value: str
) -> None:
    from oauth_callback.storage.url import open_store

    with pytest.raises(ValueError, match="encryption") as info:
        open_store(f"file:{tmp_path}/t.json?encryption={value}")
    assert "keyring, env:NAME or file:PATH" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_store_env_var_may_name_an_encrypted_store(
    tmp_path: Path, env_key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauth_callback.storage.url import open_store

    monkeypatch.setenv("OAUTH_CALLBACK_STORE", f"file:{tmp_path}/t.json?encryption=env:OC_URL_KEY")
    store = open_store()
    _check_encrypted(store, FileStore, env_key)
    # FileStore() alone cannot apply the parameter: an error, never a plaintext file.
    with pytest.raises(ValueError, match="open_store"):
        FileStore()
    names = os.listdir(tmp_path)
    assert "t.json" in names and not any("?" in n for n in names)


def test_missing_key_through_a_url_names_store_and_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauth_callback.storage.url import open_store

    monkeypatch.delenv("OC_NOT_SET", raising=False)
    store = open_store(f"sqlite:{tmp_path}/t.db?encryption=env:OC_NOT_SET")
    with pytest.raises(StoreKeyError) as info:
        store.set("k", Tokens("x"))
    assert "env:OC_NOT_SET" in str(info.value) and f"{tmp_path}/t.db" in str(info.value)
    key_file = tmp_path / "missing.key"
    store = open_store(f"file:{tmp_path}/t.json?encryption=file:{key_file}")
    with pytest.raises(StoreKeyError, match="no key file"):
        store.set("k", Tokens("x"))


# --------------------------------------------------------------------------- doctor


def test_doctor_reports_plaintext_old_key_and_undecryptable_records(path: Path, key: bytes) -> None:
    from oauth_callback.doctor import check_encryption, has_problems

    store = enc_file(path, key)
    store.set("good", Tokens("g"))
    assert [f.check for f in check_encryption(store)] == ["encryption"]
    assert not has_problems(check_encryption(store))
    FileStore(path).set("plain", Tokens(SECRET_AT))  # e.g. written by the npm package
    old_key = generate_key()
    other = MemoryStore()
    EncryptedStore(other, StaticKey(old_key)).set("old", Tokens("o"))
    doc = raw(path)
    doc["old"] = other._read("tokens", "old").to_record()  # the inner record, as stored
    doc["moved"] = doc["good"]  # a ciphertext copied under another key name
    path.write_text(json.dumps(doc))
    findings = {f.check: f for f in check_encryption(enc_file(path, key))}
    assert set(findings) == {"plaintext-records", "old-key-records", "undecryptable-records",
                             "encryption"}
    assert "'tokens:plain'" in findings["plaintext-records"].message
    assert key_id(old_key) in findings["old-key-records"].message
    assert key_id(key) in findings["old-key-records"].message
    assert "'tokens:moved'" in findings["undecryptable-records"].message
    assert "1 record encrypted" in findings["encryption"].message
    text = json.dumps([f.to_dict() for f in findings.values()])
    assert SECRET_AT not in text and encode_key(key) not in text


def test_doctor_reports_a_plaintext_backup_after_encrypting_in_place(
    path: Path, key: bytes
) -> None:
    from oauth_callback.doctor import check_encryption

    FileStore(path).set("a", Tokens(SECRET_AT))
    FileStore(path).set("b", Tokens("b"))
    store = enc_file(path, key)
    for k in ("a", "b"):
        store.update(k, lambda cur: cur)  # encrypts in place
    assert SECRET_AT not in path.read_text()
    findings = {f.check: f for f in check_encryption(store)}
    assert "plaintext-records" not in findings
    assert findings["plaintext-copy"].path == str(path) + ".bak"
    assert "1 record in plaintext" in findings["plaintext-copy"].message
    store.set("c", Tokens("c"))  # the next write: the backup is the encrypted version
    assert "plaintext-copy" not in {f.check for f in check_encryption(store)}
    assert SECRET_AT not in (path.parent / "tokens.json.bak").read_text()


def test_doctor_without_the_key(path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from oauth_callback.doctor import Severity, check_encryption

    enc_file(path, key).set("a", Tokens("x"))
    monkeypatch.delenv("OC_GONE", raising=False)
    (finding,) = check_encryption(EncryptedStore(FileStore(path), "env:OC_GONE"))
    assert finding.check == "encryption-key" and finding.severity is Severity.ERROR
    assert "env:OC_GONE" in finding.message


def test_redis_record_expiry_still_works_under_encryption(tmp_path: Path, key: bytes) -> None:
    from .redis_server import require_redis, session_url

    require_redis()
    from oauth_callback.storage.redis import RedisStore

    inner = RedisStore(session_url(tmp_path), ttl_from_refresh=True)
    store = EncryptedStore(inner, StaticKey(key))
    store.set("k", Tokens(SECRET_AT, extra={"refresh_token_expires_in": 3600}))
    pttl = inner._client.pttl(inner.redis_key("tokens", "k"))
    assert 3_500_000 < pttl <= 3_600_000
    assert store.get("k") == Tokens(SECRET_AT, extra={"refresh_token_expires_in": 3600})
    store.close()


def test_keyring_key_first_use_in_many_processes_agrees_on_one_key(tmp_path: Path) -> None:
    """Processes starting at once: the inter-process lock makes one of them create the key."""
    pytest.importorskip("keyring")
    pytest.importorskip("keyrings.alt")
    import subprocess
    import sys
    import time

    from .conftest import ROOT, python_env

    env = python_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env["PYTHONPATH"]])
    env["PYTHON_KEYRING_BACKEND"] = "tests.test_keyring_store.DirKeyring"
    env["OAUTH_CALLBACK_TEST_KEYRING_DIR"] = str(tmp_path / "keychain")
    env["OAUTH_CALLBACK_LOCK_DIR"] = str(tmp_path / "locks")
    go = tmp_path / "go"
    path = tmp_path / "tokens.json"
    code = (
        "import os, sys, time\n"
        "from oauth_callback import FileStore, Tokens\n"
        "from oauth_callback.storage.encrypted import EncryptedStore\n"
        "from oauth_callback.storage.key_sources import KeyringKey\n"
        "from tests.test_keyring_store import DirKeyring\n"
        "class SlowKeyring(DirKeyring):  # widens the window between 'no key' and 'key set'\n"
        "    def set_password(self, service, username, password):\n"
        "        time.sleep(0.3)\n"
        "        super().set_password(service, username, password)\n"
        "source = KeyringKey(service='oc-test-many', keyring_backend=SlowKeyring())\n"
        "store = EncryptedStore(FileStore(sys.argv[1]), source)\n"
        "open(sys.argv[2] + '-ready-' + sys.argv[3], 'w').close()\n"
        "while not os.path.exists(sys.argv[2]):\n"
        "    time.sleep(0.005)\n"
        "store.set('k' + sys.argv[3], Tokens('t' + sys.argv[3]))\n"
        "print(store.key_id)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(go), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go-ready-*"))) < 4:  # every child is waiting at the gate
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    ids = set()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ids.add(out.strip())
    assert len(ids) == 1
    from .test_keyring_store import DirKeyring

    stored = DirKeyring(tmp_path / "keychain").get_password("oc-test-many", "default")
    assert stored is not None and {key_id(decode_key(stored))} == ids
    store = EncryptedStore(FileStore(path), StaticKey(decode_key(stored)))
    assert sorted(store.keys()) == ["k0", "k1", "k2", "k3"]
    assert store.get("k3") == Tokens("t3")
