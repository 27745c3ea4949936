"""No repr or str of a key source or of an EncryptedStore shows the key, in any of its
spellings (raw bytes, base64url text, hex), also once the key is loaded and used.
Fails when a ``__repr__`` of oauth_callback.storage.key_sources or .encrypted is
removed or made to show the object's fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from oauth_callback import FileStore, MemoryStore, Tokens
from oauth_callback.storage.encrypted import EncryptedStore
from oauth_callback.storage.key_sources import (
    EnvKey,
    FileKey,
    KeySource,
    StaticKey,
    decode_key,
    encode_key,
    generate_key,
    write_key_file,
)


def _spellings(key: bytes) -> list[str]:
    return [repr(key), repr(key)[2:-1][:24], encode_key(key), encode_key(key)[:16],
            key.hex(), key.hex()[:16]]


def _assert_hidden(obj: object, key: bytes) -> None:
    for text in (repr(obj), str(obj)):
        for spelling in _spellings(key):
            assert spelling not in text, (type(obj).__name__, text)


@pytest.mark.parametrize("kind", ["static", "env", "file"])
def test_key_sources_and_encrypted_stores_never_show_the_key(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source: KeySource
    if kind == "static":
        key = generate_key()
        source = StaticKey(key)
    elif kind == "env":
        key = generate_key()
        monkeypatch.setenv("OC_REVIEW_KEY", encode_key(key))
        source = EnvKey("OC_REVIEW_KEY")
    else:
        path = tmp_path / "store.key"
        write_key_file(path)
        key = decode_key(path.read_text())
        source = FileKey(str(path))
    assert source.load() == key
    _assert_hidden(source, key)
    for inner in (MemoryStore(), FileStore(tmp_path / "tokens.json", durable=False)):
        store = EncryptedStore(inner, source)
        store.set("a", Tokens("token-a-0123456789"))  # the key is loaded and used
        assert store.get("a") == Tokens("token-a-0123456789")
        _assert_hidden(store, key)
        for spelling in _spellings(key):
            assert spelling not in store.describe()
