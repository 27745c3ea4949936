"""EncryptedStore envelope checks no other test pinned: the algorithm named in the
envelope and the nonce length. A record whose envelope says anything but what this
version writes is refused as malformed (typed, nothing changed), never decrypted as if
it were A256GCM with a 96-bit nonce. Each test fails when the check is deleted from
oauth_callback.storage.encrypted."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from oauth_callback import FileStore, Tokens
from oauth_callback.errors import StoreDecryptError
from oauth_callback.storage.encrypted import ENVELOPE_FIELD, EncryptedStore
from oauth_callback.storage.key_sources import StaticKey, generate_key


def _store(path: Path, key: bytes) -> EncryptedStore:
    return EncryptedStore(FileStore(path), StaticKey(key, description="test key"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("change", [
    {"alg": "A128GCM"},
    {"alg": None},
    {"nonce": _b64(b"")},
    {"nonce": _b64(b"n" * 16)},
], ids=["other-alg", "no-alg", "empty-nonce", "long-nonce"])
def test_an_envelope_this_version_does_not_write_is_malformed(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    path, key = tmp_path / "tokens.json", generate_key()
    _store(path, key).set("a", Tokens("token-a-0123456789"))
    doc = json.loads(path.read_text())
    envelope = doc["a"][ENVELOPE_FIELD]
    for name, value in change.items():
        if value is None:
            envelope.pop(name)
        else:
            envelope[name] = value
    path.write_text(json.dumps(doc))
    before = path.read_bytes()
    fresh = _store(path, key)
    with pytest.raises(StoreDecryptError, match=r"has a malformed '\$encrypted' field"):
        fresh.get("a")
    with pytest.raises(StoreDecryptError, match=r"malformed"):
        fresh.update("a", lambda current: Tokens("replaced-0123456789"))
    assert path.read_bytes() == before
