"""OAuthClient and the pure protocol layer, against a real MockProvider and CallbackServer."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import httpx2
import pytest

from oauth_callback import (
    CallbackServer,
    CallbackTimeout,
    DiscoveryError,
    FileStore,
    IssuerMismatchError,
    OAuthError,
    OAuthStateError,
    TokenEndpointError,
    Tokens,
)
from oauth_callback.flow import OAuthClient
from oauth_callback.loopback import CallbackResult
from oauth_callback.pkce import generate_pkce, generate_state, pkce_challenge
from oauth_callback.protocol import (
    Backoff,
    RawResponse,
    ServerMetadata,
    authorization_code_request,
    build_authorization_url,
    check_callback,
    discovery_flow,
    discovery_urls,
    is_retryable,
    merge_refreshed,
    parse_token_response,
    refresh_request,
    token_flow,
)
from oauth_callback.testing import MockProvider

KEY = "mock"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "tokens.json", durable=False)


class Browser:
    """A headless 'browser': an open_browser callable that follows the flow in a thread."""

    def __init__(
        self,
        *,
        consent: str | None = None,
        rewrite: Callable[[str], str] | None = None,
    ) -> None:
        self.consent = consent  # None: auto-approve; "approve" / "deny": answer the form
        self.rewrite = rewrite
        self.errors: list[BaseException] = []
        self.urls: list[str] = []
        self.final: httpx2.Response | None = None
        self._threads: list[threading.Thread] = []

    def __call__(self, url: str) -> None:
        self.urls.append(url)
        thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, url: str) -> None:
        try:
            if self.rewrite is not None:
                url = self.rewrite(url)
            with httpx2.Client(follow_redirects=True, timeout=10) as http:
                response = http.get(url)
                if self.consent is not None:
                    match = re.search(r"name='request_id' value='([^']+)'", response.text)
                    assert match, "no consent form"
                    action = urlsplit(url)._replace(path="/authorize", query="")
                    response = http.post(
                        urlunsplit(action),
                        data={"request_id": match.group(1), "action": self.consent},
                    )
                self.final = response
        except BaseException as exc:  # surfaced by join()
            self.errors.append(exc)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(10)
        if self.errors:
            raise self.errors[0]


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    pairs = [(k, changes.get(k, v)) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def _userinfo(provider: MockProvider, token: str) -> httpx2.Response:
    return httpx2.get(provider.userinfo_endpoint, headers={"Authorization": f"Bearer {token}"})


# --------------------------------------------------------------------------- discovery


def test_discovery_urls_root_issuer() -> None:
    assert discovery_urls("https://as.example.com") == [
        "https://as.example.com/.well-known/oauth-authorization-server",
        "https://as.example.com/.well-known/openid-configuration",
    ]
    assert discovery_urls("https://as.example.com/") == discovery_urls("https://as.example.com")


def test_discovery_urls_path_insertion() -> None:
    assert discovery_urls("https://as.example.com/tenant/1") == [
        "https://as.example.com/.well-known/oauth-authorization-server/tenant/1",
        "https://as.example.com/.well-known/openid-configuration/tenant/1",
        "https://as.example.com/tenant/1/.well-known/openid-configuration",
    ]


@pytest.mark.parametrize(
    "issuer", ["https://as.example.com/?a=1", "https://as.example.com/#x", "as.example.com", ""]
)
def test_discovery_urls_reject_bad_issuer(issuer: str) -> None:
    with pytest.raises(DiscoveryError):
        discovery_urls(issuer)


def _meta(issuer: str, **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "code_challenge_methods_supported": ["S256"],
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def test_metadata_validation() -> None:
    iss = "https://as.example.com"
    meta = ServerMetadata.from_json(_meta(iss, registration_endpoint=iss + "/reg"), issuer=iss)
    assert meta.token_endpoint == iss + "/token"
    assert meta.registration_endpoint == iss + "/reg"
    assert not meta.authorization_response_iss_parameter_supported
    with pytest.raises(DiscoveryError, match="issuer"):
        ServerMetadata.from_json(_meta("https://evil.example.com"), issuer=iss)
    with pytest.raises(DiscoveryError, match="token_endpoint"):
        ServerMetadata.from_json(_meta(iss, token_endpoint=None), issuer=iss)
    with pytest.raises(DiscoveryError, match="authorization_endpoint"):
        ServerMetadata.from_json(_meta(iss, authorization_endpoint=None), issuer=iss)
    with pytest.raises(DiscoveryError, match="https"):
        ServerMetadata.from_json(_meta(iss, token_endpoint="http://as.example.com/t"), issuer=iss)
    with pytest.raises(DiscoveryError, match="S256"):
        ServerMetadata.from_json(_meta(iss, code_challenge_methods_supported=["plain"]), issuer=iss)
    with pytest.raises(DiscoveryError):
        ServerMetadata.from_json(["not", "an", "object"], issuer=iss)


def test_discovery_flow_falls_back_to_oidc() -> None:
    iss = "https://as.example.com/tenant"
    flow = discovery_flow(iss)
    assert next(flow).endswith("/.well-known/oauth-authorization-server/tenant")
    assert flow.send(RawResponse(404, {}, b"")).endswith("/.well-known/openid-configuration/tenant")
    import json

    with pytest.raises(StopIteration) as stop:
        flow.send(RawResponse(200, {}, json.dumps(_meta(iss)).encode()))
    assert stop.value.value.issuer == iss


def test_discovery_flow_all_fail_names_urls() -> None:
    flow = discovery_flow("https://as.example.com")
    next(flow)
    flow.send(RawResponse(404, {}, b""))
    with pytest.raises(DiscoveryError, match="openid-configuration: HTTP 500"):
        flow.send(RawResponse(500, {}, b""))


def test_discover_against_provider(provider: MockProvider) -> None:
    client = OAuthClient.discover(provider.issuer, "test-client")
    assert client.token_endpoint == provider.token_endpoint
    assert client.authorization_endpoint == provider.authorization_endpoint
    assert client.metadata is not None
    assert client.metadata.authorization_response_iss_parameter_supported


def test_discover_issuer_mismatch_and_missing(provider: MockProvider) -> None:
    # The provider serves metadata for its root issuer only: a path issuer finds nothing.
    with pytest.raises(DiscoveryError, match="no authorization server metadata"):
        OAuthClient.discover(provider.issuer + "/tenant", "test-client")
    # Same host under another name: the document names a different issuer.
    other = provider.issuer.replace("127.0.0.1", "localhost")
    with pytest.raises(DiscoveryError, match="RFC 8414"):
        OAuthClient.discover(other, "test-client")


async def _discover_async(issuer: str) -> OAuthClient:
    return await OAuthClient.discover_async(issuer, "test-client")


@pytest.mark.asyncio
async def test_discover_async(provider: MockProvider) -> None:
    client = await _discover_async(provider.issuer)
    assert client.token_endpoint == provider.token_endpoint


# --------------------------------------------------------------------------- authorization URL


def test_authorization_url_contents() -> None:
    verifier, challenge = generate_pkce()
    url = build_authorization_url(
        "https://as.example.com/authorize?tenant=a",
        client_id="cli",
        redirect_uri="http://127.0.0.1:5000/callback",
        state="st-123",
        code_challenge=challenge,
        scope=["read", "write"],
        resource=["https://api.example.com", "https://files.example.com"],
        extra_params={"prompt": "consent"},
    )
    q = _query(url)
    assert url.startswith("https://as.example.com/authorize?")
    assert q["tenant"] == ["a"]
    assert q["response_type"] == ["code"]
    assert q["client_id"] == ["cli"]
    assert q["redirect_uri"] == ["http://127.0.0.1:5000/callback"]
    assert q["scope"] == ["read write"]
    assert q["state"] == ["st-123"]
    assert q["code_challenge"] == [pkce_challenge(verifier)]
    assert q["code_challenge_method"] == ["S256"]
    assert q["resource"] == ["https://api.example.com", "https://files.example.com"]
    assert q["prompt"] == ["consent"]
    with pytest.raises(ValueError, match="state"):
        build_authorization_url(
            "https://as.example.com/authorize", client_id="c", redirect_uri="r", state="s",
            code_challenge=challenge, extra_params={"state": "x"},
        )


def test_client_authorization_url_with_resource(provider: MockProvider) -> None:
    client = OAuthClient("test-client", issuer=provider.issuer, scope="read",
                         resource="https://api.example.com")
    url = client.authorization_url("http://localhost:1/cb", "s" * 43, "c" * 43)
    q = _query(url)
    assert url.startswith(provider.authorization_endpoint)  # discovered lazily
    assert q["resource"] == ["https://api.example.com"]
    assert q["code_challenge_method"] == ["S256"]
    assert q["scope"] == ["read"]


# --------------------------------------------------------------------------- token requests


def test_client_secret_basic_is_form_encoded_before_base64() -> None:
    req = authorization_code_request(
        "https://as/token", code="c", redirect_uri="r", code_verifier="v",
        client_id="my client:1", client_secret="p@ss w/rd+",
    )
    scheme, _, value = req.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == "my+client%3A1:p%40ss+w%2Frd%2B"
    assert "client_secret" not in req.form and "client_id" not in req.form
    assert "p@ss" not in repr(req) and "code_verifier" in repr(req)


def test_client_auth_none_and_post() -> None:
    public = refresh_request("https://as/token", refresh_token="rt", client_id="cli")
    assert public.form["client_id"] == "cli" and "Authorization" not in public.headers
    post = refresh_request("https://as/token", refresh_token="rt", client_id="cli",
                           client_secret="sec", auth_method="client_secret_post",
                           resource=["https://a", "https://b"])
    assert post.form["client_secret"] == "sec" and "Authorization" not in post.headers
    assert parse_qs(post.body.decode())["resource"] == ["https://a", "https://b"]
    with pytest.raises(ValueError, match="client_secret"):
        refresh_request("https://as/token", refresh_token="rt", client_id="c",
                        auth_method="client_secret_basic")


def test_parse_token_response() -> None:
    ok = parse_token_response(200, {}, b'{"access_token":"at","expires_in":10,"token_type":"bearer"}',
                              now=1000.0)
    assert ok.access_token == "at" and ok.expires_at == 1010.0 and ok.token_type == "Bearer"
    with pytest.raises(OAuthError) as info:
        parse_token_response(400, {}, b'{"error":"invalid_grant","error_description":"gone"}')
    assert info.value.error == "invalid_grant" and info.value.description == "gone"
    with pytest.raises(TokenEndpointError) as te:
        parse_token_response(503, {}, b'{"error":"temporarily_unavailable"}')
    assert te.value.status_code == 503 and is_retryable(te.value)
    secret_body = b"<html>at_SECRET</html>"
    with pytest.raises(TokenEndpointError) as te:
        parse_token_response(200, {"content-type": "text/html"}, secret_body)
    assert "SECRET" not in str(te.value) and not is_retryable(te.value)
    with pytest.raises(TokenEndpointError, match="access_token"):
        parse_token_response(200, {}, b'{"token_type":"Bearer","refresh_token":"rt_SECRET"}')
    with pytest.raises(TokenEndpointError):
        parse_token_response(401, {}, b"nope")
    assert is_retryable(TokenEndpointError("x", status_code=429))
    assert is_retryable(TokenEndpointError("network"))
    assert not is_retryable(OAuthError("invalid_grant"))


def test_merge_refreshed_keeps_old_refresh_token_and_scope() -> None:
    old = Tokens("a1", "r1", scope="read")
    assert merge_refreshed(old, Tokens("a2")).refresh_token == "r1"
    assert merge_refreshed(old, Tokens("a2")).scope == "read"
    assert merge_refreshed(old, Tokens("a2", "r2", scope="x")).refresh_token == "r2"


def test_token_flow_retries_then_gives_up() -> None:
    req = refresh_request("https://as/token", refresh_token="rt", client_id="c")
    flow = token_flow(req, max_retries=2, backoff=0.5)
    assert next(flow) is req
    assert flow.send(TokenEndpointError("down")) == Backoff(0.5)
    assert flow.send(None) is req
    assert flow.send(RawResponse(503, {}, b"")) == Backoff(1.0)
    assert flow.send(None) is req
    with pytest.raises(TokenEndpointError) as info:
        flow.send(RawResponse(502, {}, b""))
    assert info.value.status_code == 502
    # An OAuth error is final, never retried.
    flow = token_flow(req, max_retries=5)
    next(flow)
    with pytest.raises(OAuthError):
        flow.send(RawResponse(400, {}, b'{"error":"invalid_grant"}'))


def test_check_callback_iss_rules() -> None:
    def result(state: str = "s", iss: str | None = None, **params: str) -> CallbackResult:
        return CallbackResult(code="c", state=state, iss=iss, params={"code": "c", **params})

    assert check_callback(result(iss="https://as"), "s", "https://as", iss_required=True) == "c"
    assert check_callback(result(), "s", "https://as") == "c"  # not advertised: optional
    with pytest.raises(IssuerMismatchError, match="RFC 9207"):
        check_callback(result(), "s", "https://as", iss_required=True)
    with pytest.raises(IssuerMismatchError, match="mix-up"):
        check_callback(result(iss="https://evil"), "s", "https://as")
    with pytest.raises(OAuthStateError):
        check_callback(result(state="other"), "s", "https://as")
    with pytest.raises(OAuthError, match="access_denied"):
        check_callback(result(error="access_denied"), "s", None)


# --------------------------------------------------------------------------- login end to end


def test_login_end_to_end(provider: MockProvider, store: FileStore) -> None:
    client = OAuthClient.discover(provider.issuer, "test-client", scope="read write")
    browser = Browser()
    tokens = client.login(store, KEY, open_browser=browser, timeout=10)
    browser.join()
    assert browser.final is not None and browser.final.status_code == 200
    # The URL the browser got.
    q = _query(browser.urls[0])
    assert q["code_challenge_method"] == ["S256"] and q["redirect_uri"][0].startswith(
        "http://localhost:"
    )
    # Stored for a later process; the session is gone.
    assert store.get(KEY) == tokens
    assert store.get_session(KEY) is None
    info = store.get_client(KEY)
    assert info is not None
    assert info.client_id == "test-client"
    assert info.token_endpoint == provider.token_endpoint
    assert info.issuer == provider.issuer
    assert info.authorization_endpoint == provider.authorization_endpoint
    assert info.token_endpoint_auth_method == "none"
    assert info.scope == "read write"
    assert tokens.refresh_token and tokens.expires_at is not None
    assert provider.code_exchanges == 1
    me = _userinfo(provider, tokens.access_token)
    assert me.status_code == 200 and me.json()["sub"] == "test-user"
    # A second process-like client rebuilt from the store refreshes with it.
    again = OAuthClient.from_client_info(info).refresh(tokens.refresh_token)
    assert provider.is_access_token_active(again.access_token)


def test_login_session_is_stored_while_waiting(provider: MockProvider, store: FileStore) -> None:
    client = OAuthClient("test-client", issuer=provider.issuer)
    seen: list[object] = []

    def browser(url: str) -> None:
        session = store.get_session(KEY)
        assert session is not None
        assert session.state == _query(url)["state"][0]
        assert session.code_verifier is not None
        assert pkce_challenge(session.code_verifier) == _query(url)["code_challenge"][0]
        seen.append(session)
        Browser()(url)

    client.login(store, KEY, open_browser=browser, timeout=10)
    assert seen and store.get_session(KEY) is None


def test_login_with_consent_page(store: FileStore) -> None:
    with MockProvider(consent=True) as provider:
        client = OAuthClient.discover(provider.issuer, "test-client")
        browser = Browser(consent="approve")
        tokens = client.login(store, KEY, open_browser=browser, timeout=10)
        browser.join()
        assert _userinfo(provider, tokens.access_token).status_code == 200


def test_login_consent_denied(store: FileStore) -> None:
    with MockProvider(consent=True) as provider:
        client = OAuthClient.discover(provider.issuer, "test-client")
        with pytest.raises(OAuthError) as info:
            client.login(store, KEY, open_browser=Browser(consent="deny"), timeout=10)
        assert info.value.error == "access_denied"
        assert store.get(KEY) is None and store.get_session(KEY) is None


def test_provider_error_redirect(provider: MockProvider, store: FileStore) -> None:
    provider.next_authorize_error = "temporarily_unavailable"
    client = OAuthClient.discover(provider.issuer, "test-client")
    with pytest.raises(OAuthError) as info:
        client.login(store, KEY, open_browser=Browser(), timeout=10)
    assert info.value.error == "temporarily_unavailable"
    assert store.get(KEY) is None and store.get_client(KEY) is None
    assert store.get_session(KEY) is None


def test_state_mismatch(provider: MockProvider, store: FileStore) -> None:
    """A callback with a wrong state is ignored (error page); no code is exchanged and
    the login ends at its timeout, saying why."""
    client = OAuthClient.discover(provider.issuer, "test-client")
    browser = Browser(rewrite=lambda url: _with_query(url, state=generate_state()))
    with pytest.raises(CallbackTimeout):
        client.login(store, KEY, open_browser=browser, timeout=3)
    browser.join()
    assert browser.final is not None and browser.final.status_code == 400
    assert provider.code_exchanges == 0
    assert store.get(KEY) is None and store.get_session(KEY) is None


def test_forged_callback_first_then_the_real_one_logs_in(
    provider: MockProvider, store: FileStore
) -> None:
    """Another local process sends a forged callback before the browser's: it is
    ignored and the real redirect completes the login."""
    client = OAuthClient.discover(provider.issuer, "test-client")
    real_codes: list[str] = []

    def browser(url: str) -> None:
        redirect = _query(url)["redirect_uri"][0]
        with httpx2.Client(trust_env=False, timeout=10) as http:
            forged = http.get(redirect, params={"code": "forged-code", "state": "forged"})
            assert forged.status_code == 400
            no_state = http.get(redirect, params={"error": "access_denied"})
            assert no_state.status_code == 400
            location = http.get(url).headers["location"]
            real_codes.append(_query(location)["code"][0])
            assert http.get(location).status_code == 200

    tokens = client.login(store, KEY, open_browser=browser, timeout=30)
    assert tokens.access_token
    assert [r["code"] for r in provider.token_requests] == real_codes
    assert store.get(KEY) == tokens and store.get_session(KEY) is None


def test_iss_mismatch(provider: MockProvider, store: FileStore) -> None:
    # The client believes in another issuer; the response says who really answered.
    client = OAuthClient(
        "test-client",
        issuer="https://as.example.com",
        authorization_endpoint=provider.authorization_endpoint,
        token_endpoint=provider.token_endpoint,
    )
    with pytest.raises(IssuerMismatchError, match="mix-up"):
        client.login(store, KEY, open_browser=Browser(), timeout=10)
    assert provider.code_exchanges == 0


def test_iss_missing_although_advertised(store: FileStore) -> None:
    with MockProvider(include_iss=False) as provider:
        client = OAuthClient.discover(provider.issuer, "test-client")
        with pytest.raises(IssuerMismatchError, match="RFC 9207"):
            client.login(store, KEY, open_browser=Browser(), timeout=10)
        assert provider.code_exchanges == 0


def _get_code(provider: MockProvider, client: OAuthClient, challenge: str) -> tuple[str, str]:
    """A real authorization code delivered to a real CallbackServer: (code, redirect_uri)."""
    state = generate_state()
    with CallbackServer("127.0.0.1", 0, expected_state=state) as server:
        Browser()(client.authorization_url(server.redirect_uri, state, challenge))
        result = server.wait_for_callback(10)
        code = check_callback(result, state, provider.issuer, iss_required=True)
        return code, server.redirect_uri


def test_pkce_enforced(provider: MockProvider) -> None:
    client = OAuthClient.discover(provider.issuer, "test-client")
    _verifier, challenge = generate_pkce()
    code, redirect_uri = _get_code(provider, client, challenge)
    wrong, _ = generate_pkce()
    with pytest.raises(OAuthError) as info:
        client.exchange_code(code, redirect_uri, wrong)
    assert info.value.error == "invalid_grant"
    assert wrong not in str(info.value) and code not in str(info.value)


def test_exchange_code_right_verifier(provider: MockProvider) -> None:
    client = OAuthClient.discover(provider.issuer, "test-client")
    verifier, challenge = generate_pkce()
    code, redirect_uri = _get_code(provider, client, challenge)
    tokens = client.exchange_code(code, redirect_uri, verifier)
    assert provider.is_access_token_active(tokens.access_token)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_confidential_client(method: str, store: FileStore) -> None:
    client_id, secret = "conf client:1", "s3cr:t +/=&"
    with MockProvider(clients={client_id: secret}) as provider:
        client = OAuthClient.discover(
            provider.issuer, client_id, client_secret=secret,
            token_endpoint_auth_method=None if method == "client_secret_basic" else method,
        )
        assert client.token_endpoint_auth_method == method
        tokens = client.login(store, KEY, open_browser=Browser(), timeout=10)
        form = provider.token_requests[-1]
        if method == "client_secret_basic":
            assert "client_secret" not in form
        else:
            assert form["client_secret"] == secret and form["client_id"] == client_id
        info = store.get_client(KEY)
        assert info is not None and info.client_secret == secret
        assert info.token_endpoint_auth_method == method
        assert tokens.refresh_token is not None
        refreshed = OAuthClient.from_client_info(info).refresh(tokens.refresh_token)
        assert provider.is_access_token_active(refreshed.access_token)
        assert secret not in repr(client) and secret not in repr(info)


def test_wrong_client_secret_is_oauth_error(store: FileStore) -> None:
    with MockProvider(clients={"conf": "right"}) as provider:
        client = OAuthClient.discover(provider.issuer, "conf", client_secret="wrong")
        with pytest.raises(OAuthError) as info:
            client.login(store, KEY, open_browser=Browser(), timeout=10)
        assert info.value.error == "invalid_client"
        assert "wrong" not in str(info.value)


def test_dynamic_client_registration(provider: MockProvider, store: FileStore) -> None:
    client = OAuthClient.register(
        provider.issuer, client_name="cli", redirect_uris=["http://localhost/callback"]
    )
    assert client.client_id.startswith("dcr_") and client.client_secret is None
    tokens = client.login(store, KEY, open_browser=Browser(), timeout=10)
    assert _userinfo(provider, tokens.access_token).status_code == 200
    assert provider.registrations == 1


@pytest.mark.asyncio
async def test_login_async(provider: MockProvider, store: FileStore) -> None:
    client = await OAuthClient.discover_async(provider.issuer, "test-client")
    browser = Browser()
    tokens = await client.login_async(store, KEY, open_browser=browser, timeout=10)
    browser.join()
    assert await store.get_async(KEY) == tokens
    assert await store.get_client_async(KEY) is not None
    assert await store.get_session_async(KEY) is None
    refreshed = await client.refresh_async(tokens.refresh_token or "")
    async with httpx2.AsyncClient() as http:
        me = await http.get(provider.userinfo_endpoint,
                            headers={"Authorization": f"Bearer {refreshed.access_token}"})
    assert me.status_code == 200


@pytest.mark.asyncio
async def test_login_async_state_mismatch(provider: MockProvider, store: FileStore) -> None:
    client = await OAuthClient.discover_async(provider.issuer, "test-client")
    browser = Browser(rewrite=lambda url: _with_query(url, state=generate_state()))
    with pytest.raises(CallbackTimeout):  # the forged callback was ignored
        await client.login_async(store, KEY, open_browser=browser, timeout=3)
    assert provider.code_exchanges == 0
    assert await store.get_session_async(KEY) is None


def test_nothing_secret_in_logs_or_errors(
    provider: MockProvider, store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client_id, secret = "conf", "cs_very_secret_value"
    with MockProvider(clients={client_id: secret}) as conf_provider:
        client = OAuthClient.discover(conf_provider.issuer, client_id, client_secret=secret)
        browser = Browser()
        tokens = client.login(store, KEY, open_browser=browser, timeout=10)
        browser.join()
        url = browser.urls[0]
        form = conf_provider.token_requests[-1]
        assert tokens.refresh_token is not None
        refreshed = client.refresh(tokens.refresh_token)
        # Reusing the rotated token: an error whose message must not echo it.
        with pytest.raises(OAuthError) as reuse:
            client.refresh(tokens.refresh_token)
        messages = [str(reuse.value), repr(reuse.value)]
    # Failing paths against the public provider too.
    public = OAuthClient.discover(provider.issuer, "test-client")
    for rewrite in (lambda u: _with_query(u, state="forged-state-value-123"),):
        with pytest.raises(CallbackTimeout) as state_err:  # the forged callback is ignored
            public.login(store, "other", open_browser=Browser(rewrite=rewrite), timeout=3)
        messages.append(str(state_err.value))
    secrets_ = [
        secret,
        tokens.access_token,
        tokens.refresh_token,
        refreshed.access_token,
        refreshed.refresh_token or "",
        form["code"],
        form["code_verifier"],
        _query(url)["state"][0],
        "forged-state-value-123",
    ]
    # The test's headless browser logs URLs (httpx2, in its own threads); the
    # library's records are its own loggers' and whatever its HTTP client logs
    # in the calling (main) thread.
    ours = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("oauth_callback") or r.threadName == "MainThread"
    ]
    assert any("POST" in m for m in ours)  # the token requests were logged, safely
    text = "\n".join(ours + messages) + repr(client) + repr(tokens)
    for value in secrets_:
        assert value and value not in text


# --------------------------------------------------------------------------- Retry-After


def _drive_once(flow, response):  # type: ignore[no-untyped-def]
    next(flow)  # the request
    return flow.send(response)


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), (None, 0.2)])
def test_retry_after_sets_the_pause(header: str | None, expected: float) -> None:
    from oauth_callback.protocol import Backoff, TokenRequest

    request = TokenRequest("https://as.example/token", {"grant_type": "refresh_token"}, {})
    headers = {"retry-after": header} if header else {}
    flow = token_flow(request, max_retries=2, backoff=0.2)
    step = _drive_once(flow, RawResponse(503, headers, b""))
    assert isinstance(step, Backoff)
    assert step.seconds == expected


def test_retry_after_longer_than_the_cap_ends_the_retries() -> None:
    from oauth_callback.protocol import TokenRequest

    request = TokenRequest("https://as.example/token", {"grant_type": "refresh_token"}, {})
    flow = token_flow(request, max_retries=3, backoff=0.2)
    with pytest.raises(TokenEndpointError) as info:
        _drive_once(flow, RawResponse(429, {"retry-after": "3600"}, b""))
    assert info.value.retry_after == 3600.0
    assert info.value.status_code == 429


# --------------------------------------------------------------------------- no echoed secrets


def test_provider_text_echoing_a_sent_secret_is_redacted(provider: MockProvider,
                                                         store: FileStore) -> None:
    client = OAuthClient.discover(provider.issuer, "test-client")
    tokens = client.login(store, "k", open_browser=Browser(), timeout=10)
    rt = tokens.refresh_token
    assert rt
    body = json.dumps({"error": "invalid_grant",
                       "error_description": f"refresh token {rt} is revoked\x1b[31m"})
    provider.fail_next_token_requests(1, 400, body=body)
    with pytest.raises(OAuthError) as info:
        client.refresh(rt)
    assert rt not in str(info.value)
    assert rt not in repr(info.value)
    assert "<redacted>" in (info.value.description or "")
    assert "\x1b" not in str(info.value)  # no terminal escapes from provider text
    provider.fail_next_token_requests(1, 503, body=json.dumps({"error": f"busy with {rt}"}))
    with pytest.raises(TokenEndpointError) as err:
        client.refresh(rt)
    assert rt not in str(err.value)


def test_protocol_error_bytes_are_not_quoted(tmp_path: Path) -> None:
    """A server answering without a status line: h11 quotes the bytes it got; we do not."""
    import socket

    secret = "RT_supersecret_refresh_token_value"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            body = json.dumps({"access_token": "AT_x", "refresh_token": secret})
            conn.sendall(body.encode() + b"\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = OAuthClient("c", token_endpoint=f"http://127.0.0.1:{port}/token",
                         authorization_endpoint=f"http://127.0.0.1:{port}/authorize")
    try:
        with pytest.raises(TokenEndpointError) as info:
            client.refresh("old-refresh-token")
    finally:
        thread.join(5)
        listener.close()
    assert secret not in str(info.value)
    assert "Protocol" in str(info.value) or "Error" in str(info.value)


def test_iss_check_uses_the_issuer_discovery_validated(provider: MockProvider,
                                                       store: FileStore) -> None:
    """issuer given with a trailing slash: discovery accepts it, and so does the iss check."""
    client = OAuthClient("test-client", issuer=provider.issuer + "/")
    tokens = client.login(store, "k", open_browser=Browser(), timeout=10)
    assert tokens.access_token
