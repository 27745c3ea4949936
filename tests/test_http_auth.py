"""manager.httpx_auth() and manager.requests_auth() against a real resource server on loopback.

The resource server (tests/resource_server.py) trusts the MockProvider's tokens;
every test asserts what reached it (which token, how many requests) and what the
provider did (how many refreshes).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx2
import pytest

from oauth_callback import FileStore, MemoryStore, ReauthRequired, TokenManager, Tokens
from oauth_callback.bearer import (
    BearerChallenge,
    CurrentToken,
    RefreshRejected,
    SendRequest,
    bearer_challenge,
    bearer_flow,
    check_response,
    is_token_rejection,
    parse_challenges,
)
from oauth_callback.errors import (
    InsufficientScopeError,
    TokenRejectedError,
    UnchangedTokenError,
)
from oauth_callback.testing import MockProvider

from .conftest import python_env, run_python
from .resource_server import ResourceServer
from .test_refresh import KEY, login, wait_until

requests = pytest.importorskip("requests", reason="requests is a test dependency (CI installs it)")
httpx = pytest.importorskip("httpx", reason="httpx is a test dependency (CI installs it)")


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


@pytest.fixture
def api(provider: MockProvider) -> Iterator[ResourceServer]:
    with ResourceServer(provider) as server:
        yield server


@pytest.fixture
def store(provider: MockProvider) -> MemoryStore:
    s = MemoryStore()
    login(provider, s)
    return s


def manager(store: object) -> TokenManager:
    assert isinstance(store, (MemoryStore, FileStore))
    return TokenManager(store, KEY, backoff=0.01)


def stored(store: MemoryStore | FileStore) -> Tokens:
    tokens = store.get(KEY)
    assert tokens is not None
    return tokens


def local_expiry(store: MemoryStore | FileStore, seconds_left: float) -> Tokens:
    """Make the stored token expire in ``seconds_left`` as far as the client knows."""
    tokens = store.update(KEY, lambda t: t.replace(expires_at=time.time() + seconds_left) if t else t)
    assert tokens is not None
    return tokens


# --------------------------------------------------------------------------- the pure pieces


def test_www_authenticate_parsing() -> None:
    header = ('Basic realm="a, b", Bearer realm="api", error="insufficient_scope", '
              'scope="read  admin", error_description="needs \\"admin\\"", '
              'resource_metadata="https://api/.well-known/oauth-protected-resource", '
              "Negotiate abc+/==, DPoP algs=\"ES256\"")
    challenges = parse_challenges(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer", "negotiate", "dpop"]
    assert challenges[0].params["realm"] == "a, b"
    assert challenges[2].token68 == "abc+/=="
    bearer = bearer_challenge({"WWW-Authenticate": header})
    assert bearer == BearerChallenge(
        error="insufficient_scope",
        error_description='needs "admin"',
        scope=("read", "admin"),
        realm="api",
        resource_metadata="https://api/.well-known/oauth-protected-resource",
    )
    assert parse_challenges("Bearer") == [parse_challenges("bearer,")[0]]
    assert bearer_challenge({"www-authenticate": 'Basic realm="x"'}) is None
    assert parse_challenges('Bearer error="unterminated') == [parse_challenges("Bearer")[0]]


@pytest.mark.parametrize(
    ("status", "header", "rejection"),
    [
        (401, 'Bearer error="invalid_token"', True),
        (401, 'Bearer realm="x"', True),  # a bare Bearer challenge
        (401, 'Basic realm="x", Bearer error="invalid_token"', True),
        (401, 'Bearer error="invalid_request"', False),
        (401, 'Bearer error="insufficient_scope"', False),
        (401, 'Basic realm="x"', False),
        (401, None, False),
        (403, 'Bearer error="invalid_token"', False),
        (200, 'Bearer error="invalid_token"', False),
    ],
)
def test_what_counts_as_a_token_rejection(status: int, header: str | None, rejection: bool) -> None:
    headers = {} if header is None else {"WWW-Authenticate": header}
    assert is_token_rejection(status, headers) is rejection


class _Answer:
    def __init__(self, status: int, header: str | None = None) -> None:
        self.status_code = status
        self.headers = {} if header is None else {"www-authenticate": header}


def test_bearer_flow_one_refresh_one_retry_then_the_answer() -> None:
    old, new = Tokens("at-old"), Tokens("at-new")
    flow = bearer_flow()
    assert next(flow) == CurrentToken()
    assert flow.send(old) == SendRequest("Bearer at-old")
    refresh = flow.send(_Answer(401, 'Bearer error="invalid_token"'))
    assert isinstance(refresh, RefreshRejected) and refresh.rejected == "at-old"
    assert flow.send(new) == SendRequest("Bearer at-new")
    with pytest.raises(StopIteration):  # a second 401 ends the flow: no loop
        flow.send(_Answer(401, 'Bearer error="invalid_token"'))
    assert "at-old" not in repr(refresh) and "at-new" not in repr(SendRequest("Bearer at-new"))


def test_bearer_flow_refresh_answering_the_same_token_is_an_error() -> None:
    tokens = Tokens("at-same")
    flow = bearer_flow()
    next(flow)
    flow.send(tokens)
    flow.send(_Answer(401, 'Bearer error="invalid_token"'))
    with pytest.raises(UnchangedTokenError) as info:
        flow.send(Tokens("at-same"))
    assert info.value.status == 401 and "at-same" not in str(info.value)


def test_bearer_flow_does_not_retry_a_stream_but_refreshes() -> None:
    flow = bearer_flow(replayable=False)
    next(flow)
    flow.send(Tokens("at-old"))
    assert isinstance(flow.send(_Answer(401, 'Bearer error="invalid_token"')), RefreshRejected)
    with pytest.raises(StopIteration):
        flow.send(Tokens("at-new"))


def test_import_oauth_callback_loads_no_http_auth_module() -> None:
    result = run_python(
        """
        import sys, oauth_callback
        bad = [m for m in ("requests", "httpx", "oauth_callback.httpx_auth",
                           "oauth_callback.requests_auth", "joserfc") if m in sys.modules]
        print(bad)
        """
    )
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- httpx2, sync


def test_valid_token_is_sent_without_refresh(provider: MockProvider, api: ResourceServer,
                                             store: MemoryStore) -> None:
    auth = manager(store).httpx_auth()
    with httpx2.Client(auth=auth) as http:
        for _ in range(3):
            assert http.get(api.url + "/api").status_code == 200
    assert api.tokens_seen() == [stored(store).access_token] * 3
    assert provider.refresh_requests == 0
    assert stored(store).access_token not in repr(auth)


@pytest.mark.parametrize("seconds_left", [-5, 30])  # expired, and within the 60 s margin
def test_token_is_refreshed_before_the_request(provider: MockProvider, api: ResourceServer,
                                               store: MemoryStore, seconds_left: float) -> None:
    old = local_expiry(store, seconds_left)
    with httpx2.Client(auth=manager(store).httpx_auth()) as http:
        assert http.get(api.url + "/api").status_code == 200
    new = stored(store)
    assert new.access_token != old.access_token
    assert api.tokens_seen() == [new.access_token]  # the old token never left the process
    assert provider.refresh_count == 1


def test_401_invalid_token_refreshes_once_and_retries_once(
    provider: MockProvider, store: MemoryStore
) -> None:
    with ResourceServer(provider, current_only=True) as api:
        old = stored(store)
        auth = manager(store).httpx_auth()
        with httpx2.Client(auth=auth) as http:
            assert http.get(api.url + "/api").status_code == 200
            provider.revoke_access_token(old.access_token)  # the client still thinks it valid
            response = http.get(api.url + "/api")
            assert response.status_code == 200
            assert [r.status_code for r in response.history] == [401]
            new = stored(store)
            assert api.tokens_seen() == [old.access_token, old.access_token, new.access_token]
            assert provider.refresh_count == 1
            assert http.get(api.url + "/api").status_code == 200  # the new token is kept
        assert api.tokens_seen()[-1] == new.access_token and provider.refresh_count == 1


def test_a_token_refreshed_by_another_process_is_used_without_a_new_refresh(
    provider: MockProvider, store: MemoryStore, tmp_path: Path
) -> None:
    with ResourceServer(provider, current_only=True) as api:
        auth = manager(store).httpx_auth()
        with httpx2.Client(auth=auth) as http:
            assert http.get(api.url + "/api").status_code == 200
            old = stored(store)
            other = manager(store).force_refresh()  # "another process" refreshed meanwhile
            assert provider.refresh_count == 1
            response = http.get(api.url + "/api")  # cached old token -> 401 -> store's newer one
        assert response.status_code == 200
        assert api.tokens_seen() == [old.access_token, old.access_token, other.access_token]
        assert provider.refresh_count == 1  # no second refresh


def test_a_newer_but_expired_token_in_the_store_is_refreshed_not_retried(
    provider: MockProvider, store: MemoryStore
) -> None:
    with ResourceServer(provider, current_only=True) as api:
        auth = manager(store).httpx_auth()
        with httpx2.Client(auth=auth) as http:
            assert http.get(api.url + "/api").status_code == 200  # caches the first token
            newer = manager(store).force_refresh()  # another process refreshed ...
            local_expiry(store, -5)  # ... and that token expired too
            provider.revoke_access_token(newer.access_token)
            response = http.get(api.url + "/api")
        assert response.status_code == 200
        assert api.tokens_seen()[-1] == stored(store).access_token != newer.access_token
        assert provider.refresh_count == 2


def test_a_second_401_is_returned_not_looped(provider: MockProvider, api: ResourceServer,
                                             store: MemoryStore) -> None:
    api.reject_all = True
    with httpx2.Client(auth=manager(store).httpx_auth()) as http:
        response = http.get(api.url + "/api")
    assert response.status_code == 401
    assert len(api.tokens_seen()) == 2
    assert provider.refresh_count == 1
    with pytest.raises(TokenRejectedError) as info:
        check_response(response)
    assert info.value.status == 401
    assert isinstance(info.value.challenge, BearerChallenge)
    assert stored(store).access_token not in str(info.value)


def test_403_insufficient_scope_is_returned_with_the_scope(
    provider: MockProvider, api: ResourceServer, store: MemoryStore
) -> None:
    with httpx2.Client(auth=manager(store).httpx_auth()) as http:
        response = http.get(api.url + "/admin")
    assert response.status_code == 403
    challenge = bearer_challenge(response)
    assert challenge is not None and challenge.scope == ("admin", "read")
    assert len(api.tokens_seen("/admin")) == 1 and provider.refresh_requests == 0
    with pytest.raises(InsufficientScopeError) as info:
        check_response(response)
    assert info.value.scope == ("admin", "read")
    assert check_response(httpx2.Response(200)).status_code == 200


def test_other_401s_are_not_refreshed(provider: MockProvider, api: ResourceServer,
                                      store: MemoryStore) -> None:
    with httpx2.Client(auth=manager(store).httpx_auth()) as http:
        assert http.get(api.url + "/basic").status_code == 401
    assert len(api.tokens_seen("/basic")) == 1
    assert provider.refresh_requests == 0


def test_a_streamed_body_is_not_retried(provider: MockProvider, store: MemoryStore) -> None:
    with ResourceServer(provider, current_only=True) as api:
        provider.revoke_access_token(stored(store).access_token)
        with httpx2.Client(auth=manager(store).httpx_auth()) as http:
            streamed = http.post(api.url + "/api", content=iter([b"chunk-1", b"chunk-2"]))
            assert streamed.status_code == 401  # not replayable: the 401 is the answer
            assert provider.refresh_count == 1  # ... but the token was refreshed for the next one
            in_memory = http.post(api.url + "/api", content=b"payload")
        assert in_memory.status_code == 200 and in_memory.json()["body_bytes"] == 7
        assert len(api.tokens_seen()) == 2 and provider.refresh_count == 1


def test_rejected_token_without_refresh_token_requires_login(
    provider: MockProvider, api: ResourceServer
) -> None:
    store = MemoryStore()
    login(provider, store)
    store.update(KEY, lambda t: t.replace(refresh_token=None) if t else t)
    provider.revoke_access_token(stored(store).access_token)
    with httpx2.Client(auth=manager(store).httpx_auth()) as http, pytest.raises(ReauthRequired):
        http.get(api.url + "/api")


# --------------------------------------------------------------------------- async, httpx


async def _async_scenario(client_cls: type, provider: MockProvider, store: MemoryStore) -> None:
    with ResourceServer(provider, current_only=True) as api:
        old = stored(store)
        auth = manager(store).httpx_auth()
        async with client_cls(auth=auth) as http:
            assert (await http.get(api.url + "/api")).status_code == 200
            provider.revoke_access_token(old.access_token)
            response = await http.get(api.url + "/api")
            new = stored(store)
            api.reject_all = True
            second = await http.get(api.url + "/api")
        assert response.status_code == 200 and second.status_code == 401
        assert api.tokens_seen()[:3] == [old.access_token, old.access_token, new.access_token]
        assert len(api.tokens_seen()) == 5
        assert provider.refresh_count == 2


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_async_httpx2(provider: MockProvider, store: MemoryStore, anyio_backend: str) -> None:
    await _async_scenario(httpx2.AsyncClient, provider, store)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_httpx(provider: MockProvider, store: MemoryStore, anyio_backend: str) -> None:
    await _async_scenario(httpx.AsyncClient, provider, store)


def test_sync_httpx(provider: MockProvider, store: MemoryStore) -> None:
    with ResourceServer(provider, current_only=True) as api:
        old = stored(store)
        with httpx.Client(auth=manager(store).httpx_auth()) as http:
            provider.revoke_access_token(old.access_token)
            response = http.get(api.url + "/api")
            streamed = http.post(api.url + "/api", content=iter([b"x"]))
        assert response.status_code == 200 and [r.status_code for r in response.history] == [401]
        assert streamed.status_code == 200
        assert api.tokens_seen() == [old.access_token, stored(store).access_token,
                                     stored(store).access_token]
        assert provider.refresh_count == 1


def test_async_valid_token_runs_in_the_loop(provider: MockProvider, api: ResourceServer,
                                            store: MemoryStore) -> None:
    async def main() -> list[int]:
        async with httpx2.AsyncClient(auth=manager(store).httpx_auth()) as http:
            return [(await http.get(api.url + "/api")).status_code for _ in range(3)]

    assert anyio.run(main) == [200, 200, 200]
    assert provider.refresh_requests == 0


# --------------------------------------------------------------------------- requests


def test_requests_refresh_and_retry(provider: MockProvider, store: MemoryStore) -> None:
    with ResourceServer(provider, current_only=True) as api:
        old = stored(store)
        auth = manager(store).requests_auth()
        with requests.Session() as session:
            assert session.get(api.url + "/api", auth=auth, timeout=10).status_code == 200
            provider.revoke_access_token(old.access_token)
            response = session.post(api.url + "/api", data=b"abc", auth=auth, timeout=10)
            assert response.status_code == 200 and response.json()["body_bytes"] == 3
            assert [r.status_code for r in response.history] == [401]
            assert response.request.headers["Authorization"] == "Bearer " + stored(store).access_token
            api.reject_all = True
            second = session.get(api.url + "/api", auth=auth, timeout=10)
            assert second.status_code == 401
            assert session.get(api.url + "/admin", auth=auth, timeout=10).status_code == 401
        assert provider.refresh_count == 3  # one per rejection, never two in a row
        assert len(api.tokens_seen()) == 5


def test_requests_403_and_stream(provider: MockProvider, api: ResourceServer,
                                 store: MemoryStore) -> None:
    auth = manager(store).requests_auth()
    forbidden = requests.get(api.url + "/admin", auth=auth, timeout=10)
    assert forbidden.status_code == 403
    with pytest.raises(InsufficientScopeError) as info:
        check_response(forbidden)
    assert info.value.scope == ("admin", "read")
    provider.revoke_access_token(stored(store).access_token)
    streamed = requests.post(api.url + "/api", data=(c for c in [b"a", b"b"]), auth=auth,
                             timeout=10)
    assert streamed.status_code == 401 and provider.refresh_count == 1
    assert requests.get(api.url + "/api", auth=auth, timeout=10).status_code == 200
    assert provider.refresh_count == 1


def run_at_once(script: str, args: list[str], barrier: Path, n: int = 8) -> list[str]:
    """Start ``n`` processes running ``script`` with ``args``, then ``barrier`` and the
    child's number; each touches ``barrier/ready-N`` and waits for ``barrier/go``,
    so they all start the measured work together. Returns each one's stdout, stripped."""
    barrier.mkdir()
    children = [
        subprocess.Popen([sys.executable, "-c", script, *args, str(barrier), str(i)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=python_env())
        for i in range(n)
    ]
    try:
        wait_until(lambda: len(list(barrier.glob("ready-*"))) == n, timeout=60)
        (barrier / "go").touch()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (_out, err) in zip(children, outputs):
        assert child.returncode == 0, err
    return [out.strip() for out, _err in outputs]


REQUESTS_CHILD = r"""
import sys, time
from pathlib import Path
import requests
from oauth_callback import FileStore, TokenManager

path, key, api, barrier, n = sys.argv[1:6]
auth = TokenManager(FileStore(path), key).requests_auth()
Path(barrier, "ready-" + n).touch()
while not Path(barrier, "go").exists():
    time.sleep(0.002)
response = requests.get(api + "/api", auth=auth, timeout=30)
print(response.status_code, response.request.headers["Authorization"], len(response.history))
"""


def test_eight_processes_with_requests_and_an_expired_token_refresh_once(
    provider: MockProvider, tmp_path: Path
) -> None:
    path = tmp_path / "store" / "tokens.json"
    store = FileStore(path)
    login(provider, store)
    provider.expire_access_tokens()
    old = local_expiry(store, -5)
    provider.token_delay = 0.3  # a wide race window
    with ResourceServer(provider, current_only=True) as api:
        outputs = run_at_once(REQUESTS_CHILD, [str(path), KEY, api.url], tmp_path / "barrier")
    new = stored(store)
    assert set(outputs) == {f"200 Bearer {new.access_token} 0"}
    assert new.access_token != old.access_token
    assert provider.refresh_requests == 1 and provider.refresh_count == 1
    assert api.tokens_seen() == [new.access_token] * 8


class _EchoingAPI:
    """A hostile resource server: 401 ``invalid_token`` whose description echoes the
    token it was sent, raw and percent-encoded."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import quote

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "").partition(" ")[2]
                challenge = (f'Bearer error="invalid_token", error_description="bad {token} '
                             f'({quote(token, safe="")})", error_uri="https://x/{token}"')
                self.send_response(401)
                self.send_header("WWW-Authenticate", challenge)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_resource_server_echoing_the_token_never_gets_it_into_the_error(
    provider: MockProvider, store: MemoryStore
) -> None:
    api = _EchoingAPI()
    try:
        with httpx2.Client(auth=manager(store).httpx_auth()) as http:
            response = http.get(api.url)
        sent = response.request.headers["Authorization"].partition(" ")[2]
        with pytest.raises(TokenRejectedError) as info:
            check_response(response)
        challenge = info.value.challenge
        assert isinstance(challenge, BearerChallenge)
        texts = [str(info.value), repr(info.value), repr(challenge),
                 challenge.error_description or "", challenge.error_uri or ""]
        for text in texts:
            assert sent not in text
            assert quote(sent, safe="") not in text
        assert "<redacted>" in (challenge.error_description or "")
        # requests too (its response also knows the request it answers)
        response2 = requests.get(api.url, auth=manager(store).requests_auth(), timeout=30)
        sent2 = response2.request.headers["Authorization"].partition(" ")[2]
        with pytest.raises(TokenRejectedError) as info2:
            check_response(response2)
        assert sent2 not in (info2.value.challenge.error_description or "")
    finally:
        api.close()
