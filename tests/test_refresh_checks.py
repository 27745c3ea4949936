"""The refresh decision under the lock that no other test pinned: tokens another
process saved while this one waited for the refresh lock are used even when they fall
inside the refresh margin (here: a record without a known lifetime, so the margin is the
whole 60 s skew), instead of being refreshed again by every waiter in turn. Real
FileStore, real MockProvider; the waiter's view (``seen``) is given directly, so nothing
races the clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oauth_callback import FileStore, Tokens
from oauth_callback.manager import TokenManager
from oauth_callback.testing import MockProvider

from .test_refresh import KEY, expire, login


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


def test_tokens_saved_by_another_refresher_while_waiting_are_used(
    provider: MockProvider, tmp_path: Path
) -> None:
    store = FileStore(tmp_path / "tokens.json")
    login(provider, store)
    seen = expire(provider, store)  # what this caller read before waiting for the lock
    assert seen.is_expired(0)
    # Meanwhile another process refreshed and saved this (45 s left, lifetime unknown).
    theirs = Tokens("access-saved-by-another-refresher", refresh_token="rt-theirs",
                    expires_at=time.time() + 45)
    store.set(KEY, theirs)
    manager = TokenManager(FileStore(tmp_path / "tokens.json"), KEY)
    assert manager.needs_refresh(theirs)  # inside the margin: the branch under test
    got = manager._refresh_locked(seen)
    assert got.access_token == theirs.access_token
    assert provider.refresh_requests == 0
