"""OAuthClient.login(paste=...): the loopback callback OR a pasted redirect URL, whichever first."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from oauth_callback import FileStore, OAuthClient
from oauth_callback.errors import OAuthError
from oauth_callback.testing import MockProvider


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


@pytest.fixture
def pipe() -> Iterator[tuple[int, io.TextIOWrapper]]:
    r, w = os.pipe()
    reader = os.fdopen(r, "r")
    try:
        yield w, reader
    finally:
        reader.close()
        try:
            os.close(w)
        except OSError:
            pass


def redirect_of(url: str) -> str:
    """What the person's browser ends on: the provider's redirect, not followed
    (the loopback address is unreachable from the person's machine)."""
    response = httpx2.get(url, follow_redirects=False, timeout=10)
    assert response.status_code == 302
    return response.headers["location"]


def test_pasted_url_completes_the_login_after_wrong_pastes(
    provider: MockProvider, pipe: tuple[int, io.TextIOWrapper], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    w, reader = pipe
    store = FileStore(tmp_path / "tokens.json")
    hits: list[str] = []

    def person(url: str) -> None:
        landed = redirect_of(url)
        wrong_state = landed.replace("state=", "state=x")
        os.write(w, b"not a url\n" + url.encode() + b"\n" + wrong_state.encode() + b"\n")
        os.write(w, landed.encode() + b"\n")

    client = OAuthClient(provider.client_id, issuer=provider.issuer)
    tokens = client.login(store, "k", open_browser=person, paste=reader, timeout=60,
                          on_request=lambda info: hits.append(info.path))
    assert hits == []  # the loopback server never saw the callback: the paste did it
    assert store.get("k") == tokens and provider.is_access_token_active(tokens.access_token)
    assert store.get_client("k") is not None and store.get_session("k") is None
    err = capsys.readouterr().err
    assert "not a URL" in err
    assert "that is the authorization URL" in err
    assert "belongs to another sign-in" in err


def test_pasted_provider_error_ends_the_login_like_a_callback(
    provider: MockProvider, pipe: tuple[int, io.TextIOWrapper], tmp_path: Path
) -> None:
    w, reader = pipe
    provider.next_authorize_error = "access_denied"
    client = OAuthClient(provider.client_id, issuer=provider.issuer)
    store = FileStore(tmp_path / "tokens.json")
    with pytest.raises(OAuthError) as info:
        client.login(store, "k", open_browser=lambda url: os.write(w, redirect_of(url).encode() + b"\n"),
                     paste=reader, timeout=60)
    assert info.value.error == "access_denied"
    assert store.get("k") is None


def test_end_of_input_keeps_waiting_for_the_loopback_callback(
    provider: MockProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = OAuthClient(provider.client_id, issuer=provider.issuer)
    store = FileStore(tmp_path / "tokens.json")
    with open(os.devnull) as devnull:

        def browser(url: str) -> None:
            def later() -> None:
                # Only once stdin has been seen closed, the browser completes the callback.
                import time

                deadline = time.monotonic() + 30
                while "no more input" not in capsys.readouterr().err and time.monotonic() < deadline:
                    time.sleep(0.02)
                httpx2.get(url, follow_redirects=True, timeout=10)

            threading.Thread(target=later, daemon=True).start()

        tokens = client.login(store, "k", open_browser=browser, paste=devnull, timeout=60)
    assert store.get("k") == tokens


def test_loopback_callback_wins_while_the_paste_path_is_open(
    provider: MockProvider, pipe: tuple[int, io.TextIOWrapper], tmp_path: Path
) -> None:
    w, reader = pipe
    client = OAuthClient(provider.client_id, issuer=provider.issuer)
    store = FileStore(tmp_path / "tokens.json")
    tokens = client.login(
        store, "k", paste=reader, timeout=60,
        open_browser=lambda url: threading.Thread(
            target=httpx2.get, args=(url,), kwargs={"follow_redirects": True, "timeout": 10},
            daemon=True).start(),
    )
    assert store.get("k") == tokens
    os.write(w, b"late line\n")  # nobody reads it any more; no error


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_paste(provider: MockProvider, pipe: tuple[int, io.TextIOWrapper], tmp_path: Path,
                     backend: str) -> None:
    w, reader = pipe
    client = OAuthClient(provider.client_id, issuer=provider.issuer)
    store = FileStore(tmp_path / "tokens.json")

    def person(url: str) -> None:  # a plain callable runs in a worker thread
        os.write(w, redirect_of(url).encode() + b"\n")

    async def main() -> None:
        tokens = await client.login_async(store, "k", open_browser=person, paste=reader, timeout=60)
        assert store.get("k") == tokens

    anyio.run(main, backend=backend)
