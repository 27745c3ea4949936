"""Power loss after a durable ``delete_session()`` returned: no file of the store (the
store, its backup, any temp file) holds the finished login's PKCE verifier or state.
The backup is relinked to the new file and that link is fsynced; without the directory
fsync of ``fs.refresh_backup`` a power loss brings the old backup, with the verifier,
back. (A deleted token stays in the backup until the next write: documented in the
README's Guarantees, not tested here.) Uses the in-process file-system recorder of
tests/fsrecord.py (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oauth_callback import FileStore, OAuthSession, Tokens

from .fsrecord import Recorder, crash_states, materialize

VERIFIER = "verifier-of-a-finished-login-" + "v" * 20
SESSION = OAuthSession(code_verifier=VERIFIER, state="state-of-a-finished-login-0123")
B = Tokens("access-b-" + "b" * 300, refresh_token="refresh-b", expires_at=2e9)


def test_a_durable_session_delete_leaves_the_verifier_in_no_file_after_a_power_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    path = root / "tokens.json"
    store = FileStore(path)
    store.set_session("b", SESSION)
    store.set("b", B)  # the backup now holds the session too
    assert VERIFIER.encode() in (root / "tokens.json.bak").read_bytes()
    with Recorder(root, monkeypatch) as rec:
        FileStore(path).delete_session("b")
    returned = [state for k, state in crash_states(rec) if k == len(rec.ops)]
    assert returned
    work = tmp_path / "replay"
    work.mkdir()
    for n, state in enumerate(returned):
        into = work / f"state-{n}"
        into.mkdir(mode=0o700)
        materialize(state, str(root.resolve()), into)
        files = sorted(p for p in into.rglob("*") if p.is_file())
        assert files
        for file in files:
            data = file.read_bytes()
            assert VERIFIER.encode() not in data and b"state-of-a-finished" not in data, (
                n, file.name)
        assert FileStore(into / "tokens.json").get("b") == B
