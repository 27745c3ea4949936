"""Who is logged in: OIDC ID Token validation (JWKS, rotation, claims), userinfo, the
identity kept with the client registration, and no silent overwrite of another account.

Everything runs against a real MockProvider (ID Tokens signed by real RS256 keys)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from oauth_callback import (
    AccountMismatchError,
    ClientInfo,
    FileStore,
    Identity,
    IdTokenError,
    TokenStore,
)
from oauth_callback.flow import OAuthClient
from oauth_callback.identity import Fetch, identify_flow, oidc_nonce
from oauth_callback.models import Tokens
from oauth_callback.oidc import JwksCache, default_jwks_cache, id_token_flow, validate_id_token
from oauth_callback.protocol import RawResponse, ServerMetadata
from oauth_callback.testing import MockProvider

from .test_flow import Browser

KEY = "acct"


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        p.add_user("test-user", email="alice@example.com", name="Alice",
                   preferred_username="alice")
        p.add_user("bob-sub", email="bob@example.com", name="Bob")
        default_jwks_cache().clear()
        yield p


@pytest.fixture
def fstore(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "tokens.json", durable=False)


def _client(provider: MockProvider, scope: str = "openid email profile") -> OAuthClient:
    return OAuthClient.discover(provider.issuer, provider.client_id, scope=scope)


def _login(client: OAuthClient, store: TokenStore, key: str = KEY, **kw: object) -> Browser:
    browser = Browser()
    client.login(store, key, open_browser=browser, timeout=20, **kw)  # type: ignore[arg-type]
    browser.join()
    return browser


# --------------------------------------------------------------------------- login


def test_openid_login_sends_a_nonce_validates_and_keeps_the_identity(
    provider: MockProvider, fstore: FileStore
) -> None:
    browser = _login(_client(provider), fstore)
    nonce = parse_qs(urlsplit(browser.urls[0]).query)["nonce"]
    assert len(nonce) == 1 and len(nonce[0]) >= 32
    info = fstore.get_client(KEY)
    assert info is not None and info.identity is not None
    assert info.identity == Identity(
        "test-user", issuer=provider.issuer, email="alice@example.com", name="Alice",
        preferred_username="alice", source="id_token",
    )
    assert info.identity.label == "alice@example.com"
    assert provider.jwks_requests == 1 and provider.userinfo_requests == 0
    # A second login uses the cached key set.
    _login(_client(provider), fstore)
    assert provider.jwks_requests == 1


def test_two_logins_never_share_a_nonce(provider: MockProvider, fstore: FileStore) -> None:
    a = _login(_client(provider), fstore)
    b = _login(_client(provider), fstore)
    nonces = [parse_qs(urlsplit(x.urls[0]).query)["nonce"][0] for x in (a, b)]
    assert nonces[0] != nonces[1]


def test_key_rotation_refetches_the_key_set_once(provider: MockProvider, fstore: FileStore) -> None:
    _login(_client(provider), fstore)
    assert provider.jwks_requests == 1
    provider.rotate_signing_key(keep_old=False)
    _login(_client(provider), fstore)
    assert provider.jwks_requests == 2  # unknown kid: fetched again, once
    _login(_client(provider), fstore)
    assert provider.jwks_requests == 2


@pytest.mark.parametrize(
    ("tamper", "claim", "message"),
    [
        (lambda p: p.forge_next_id_token(), "signature",
         "the ID Token's signature does not verify against the provider's keys (jwks_uri); "
         "it may be forged"),
        (lambda p: p.alter_next_id_token(nonce="another-nonce"), "nonce",
         "the ID Token's nonce does not match the one sent (possible replay)"),
        (lambda p: p.alter_next_id_token(nonce=None), "nonce",
         "the ID Token's nonce does not match the one sent (possible replay)"),
        (lambda p: p.alter_next_id_token(exp=int(time.time()) - 3600), "exp",
         "the ID Token has expired (exp)"),
        (lambda p: p.alter_next_id_token(iat=int(time.time()) + 3600), "iat",
         "the ID Token was issued in the future (iat); check the clock"),
        (lambda p: p.alter_next_id_token(aud="someone-else"), "aud",
         "the ID Token is meant for ['someone-else'], not for client 'test-client'"),
        (lambda p: p.alter_next_id_token(aud=["test-client", "other"]), "azp",
         "the ID Token has several audiences but no 'azp' claim"),
        (lambda p: p.alter_next_id_token(azp="other"), "azp",
         "the ID Token was issued to another party (azp), not to client 'test-client'"),
        (lambda p: p.alter_next_id_token(iss="https://evil.example"), "iss",
         None),
        (lambda p: p.alter_next_id_token(sub=None), "sub", "the ID Token has no 'sub' claim"),
    ],
)
def test_a_bad_id_token_fails_the_login_and_stores_nothing(
    provider: MockProvider, fstore: FileStore, tamper, claim: str, message: str | None
) -> None:
    before = ClientInfo("kept", identity=Identity("someone", issuer=provider.issuer))
    fstore.set_client(KEY, before)
    fstore.set(KEY, Tokens("old-access"))
    tamper(provider)
    with pytest.raises(IdTokenError) as info:
        _login(_client(provider), fstore)
    assert info.value.claim == claim
    if message is not None:
        assert str(info.value) == message
    else:
        assert str(info.value) == (
            f"the ID Token was issued by 'https://evil.example', expected {provider.issuer!r}")
    assert fstore.get_client(KEY) == before and fstore.get(KEY) == Tokens("old-access")
    assert fstore.get_session(KEY) is None


def test_a_missing_id_token_fails_an_openid_login(
    provider: MockProvider, fstore: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    orig = provider._grant_code

    def no_id_token(client, form):  # the provider "forgets" the id_token
        payload = orig(client, form)
        payload.pop("id_token", None)
        return payload

    monkeypatch.setattr(provider, "_grant_code", no_id_token)
    with pytest.raises(IdTokenError, match=r"no ID Token although 'openid' was requested"):
        _login(_client(provider), fstore)
    assert fstore.get(KEY) is None and fstore.get_client(KEY) is None


def test_without_openid_the_identity_comes_from_userinfo(
    provider: MockProvider, fstore: FileStore
) -> None:
    browser = _login(_client(provider, scope="read"), fstore)
    assert "nonce" not in parse_qs(urlsplit(browser.urls[0]).query)
    info = fstore.get_client(KEY)
    assert info is not None and info.identity == Identity(
        "test-user", issuer=provider.issuer, email="alice@example.com", name="Alice",
        preferred_username="alice", source="userinfo",
    )
    assert provider.userinfo_requests == 1 and provider.jwks_requests == 0


def test_userinfo_failure_leaves_the_account_unknown_but_logs_in(
    provider: MockProvider, fstore: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauth_callback.testing import _json_response

    monkeypatch.setattr(provider, "_userinfo", lambda headers: _json_response(500, {}))
    _login(_client(provider, scope="read"), fstore)
    info = fstore.get_client(KEY)
    assert info is not None and info.identity is None and fstore.get(KEY) is not None


def test_relogin_from_the_stored_registration_validates_without_discovery(
    provider: MockProvider, fstore: FileStore
) -> None:
    _login(_client(provider), fstore)
    info = fstore.get_client(KEY)
    assert info is not None
    assert info.extra["jwksUri"] == provider.jwks_uri
    assert info.extra["revocationEndpoint"] == provider.revocation_endpoint
    again = OAuthClient.from_client_info(info)
    assert again.metadata is not None and again.metadata.jwks_uri == provider.jwks_uri
    provider.alter_next_id_token(nonce="wrong")
    with pytest.raises(IdTokenError):
        _login(again, fstore)
    _login(OAuthClient.from_client_info(info), fstore)
    assert fstore.get_client(KEY).identity.sub == "test-user"  # type: ignore[union-attr]


def test_async_login_keeps_the_identity_too(provider: MockProvider, fstore: FileStore) -> None:
    async def main() -> None:
        client = await OAuthClient.discover_async(provider.issuer, provider.client_id,
                                                  scope="openid email")
        browser = Browser()
        await client.login_async(fstore, KEY, open_browser=browser, timeout=20)
        browser.join()

    anyio.run(main)
    info = fstore.get_client(KEY)
    assert info is not None and info.identity is not None
    assert info.identity.email == "alice@example.com" and info.identity.source == "id_token"


# --------------------------------------------------------------------------- other accounts


def test_another_account_under_the_same_key_is_refused(
    provider: MockProvider, fstore: FileStore
) -> None:
    _login(_client(provider), fstore)
    before_client, before_tokens = fstore.get_client(KEY), fstore.get(KEY)
    provider.approving_user = "bob-sub"
    with pytest.raises(AccountMismatchError) as info:
        _login(_client(provider), fstore)
    assert str(info.value) == (
        "'acct' holds the login of 'alice@example.com', but this login authenticated "
        "'bob@example.com'; nothing was stored")
    assert info.value.key == KEY and info.value.new.sub == "bob-sub"
    assert fstore.get_client(KEY) == before_client and fstore.get(KEY) == before_tokens
    # Under another key both accounts live side by side; replace_account replaces.
    _login(_client(provider), fstore, key="acct-2")
    assert fstore.get_client("acct-2").identity.sub == "bob-sub"  # type: ignore[union-attr]
    _login(_client(provider), fstore, replace_account=True)
    assert fstore.get_client(KEY).identity.sub == "bob-sub"  # type: ignore[union-attr]


def test_the_same_account_replaces_as_before(provider: MockProvider, fstore: FileStore) -> None:
    _login(_client(provider), fstore)
    first = fstore.get(KEY)
    _login(_client(provider), fstore)
    assert fstore.get(KEY) != first and fstore.get_client(KEY).identity.sub == "test-user"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- identity records


def test_identity_survives_every_backend(store: TokenStore) -> None:
    ident = Identity("sub-1", issuer="https://as.example", email="e@x", name="N",
                     preferred_username="u", source="id_token", extra={"future": 1})
    info = ClientInfo("cid", issuer="https://as.example", extra={"jwksUri": "https://j"},
                      identity=ident)
    store.set_client("k", info)
    got = store.get_client("k")
    assert got == info and got is not None and got.identity == ident
    assert got.identity.extra == {"future": 1}
    assert ClientInfo.from_record(info.to_record()) == info


def test_identity_record_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="identity record has no 'sub' string"):
        ClientInfo.from_record({"clientId": "c", "identity": {"email": "x"}})
    with pytest.raises(ValueError, match="field 'identity' must be a JSON object"):
        ClientInfo.from_record({"clientId": "c", "identity": "alice"})
    with pytest.raises(ValueError, match="field 'email' must be a string"):
        ClientInfo.from_record({"clientId": "c", "identity": {"sub": "s", "email": 3}})


def test_identity_label_and_same_account() -> None:
    assert Identity("s").label == "s"
    assert Identity("s", name="N").label == "N"
    assert Identity("s", name="N", preferred_username="u").label == "u"
    a = Identity("s", issuer="https://a/")
    assert a.same_account(Identity("s", issuer="https://a"))
    assert not a.same_account(Identity("t", issuer="https://a"))
    assert not a.same_account(Identity("s", issuer="https://b"))


# --------------------------------------------------------------------------- pure validation


@pytest.fixture
def keyset(provider: MockProvider):
    body = httpx2.get(provider.jwks_uri).content
    from oauth_callback.oidc import parse_jwks

    return parse_jwks(body, provider.jwks_uri)


def _validate(provider: MockProvider, token: str, keys, nonce: str | None = "n", **kw):
    return validate_id_token(token, keys, issuer=provider.issuer, client_id=provider.client_id,
                             nonce=nonce, **kw)


def test_leeway_tolerates_small_clock_differences(provider: MockProvider, keyset) -> None:
    now = int(time.time())
    token = provider.make_id_token(provider.client_id, nonce="n", exp=now - 30, iat=now + 30)
    assert _validate(provider, token, keyset).sub == "test-user"
    with pytest.raises(IdTokenError, match=r"expired"):
        _validate(provider, token, keyset, leeway=10)


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_unsigned_and_symmetric_tokens_are_refused(
    provider: MockProvider, keyset, alg: str
) -> None:
    claims = {"iss": provider.issuer, "sub": "x", "aud": provider.client_id,
              "iat": int(time.time()), "exp": int(time.time()) + 60, "nonce": "n"}
    if alg == "none":
        import base64
        import json

        def b64(d: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

        token = f"{b64({'alg': 'none'})}.{b64(claims)}."
    else:
        token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key("s" * 32),
                           algorithms=["HS256"])
    with pytest.raises(IdTokenError) as info:
        _validate(provider, token, keyset)
    assert info.value.claim == "header"
    assert str(info.value).startswith(f"the ID Token is signed with {alg!r}; only asymmetric")


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b.c.d.e", "ä.b.c"])
def test_garbage_is_a_typed_error(provider: MockProvider, keyset, token: str) -> None:
    with pytest.raises(IdTokenError) as info:
        _validate(provider, token, keyset)
    assert info.value.claim == "header"


def test_error_messages_never_quote_the_token(provider: MockProvider, keyset) -> None:
    provider.forge_next_id_token()
    token = provider.make_id_token(provider.client_id, nonce="n")
    with pytest.raises(IdTokenError) as info:
        _validate(provider, token, keyset)
    for part in token.split("."):
        assert part not in str(info.value) and part not in repr(info.value)


def test_a_key_signed_but_not_published_is_refused_after_one_refetch(
    provider: MockProvider,
) -> None:
    stranger = RSAKey.generate_key(2048, auto_kid=True)
    now = int(time.time())
    token = jwt.encode({"alg": "RS256", "kid": stranger.kid},
                       {"iss": provider.issuer, "sub": "x", "aud": provider.client_id,
                        "iat": now, "exp": now + 60}, stranger, algorithms=["RS256"])
    cache = JwksCache()
    fetched: list[str] = []

    def run() -> None:
        gen = id_token_flow(token, issuer=provider.issuer, client_id=provider.client_id,
                            jwks_uri=provider.jwks_uri, nonce=None, cache=cache)
        url = next(gen)
        while True:
            fetched.append(url)
            r = httpx2.get(url)
            url = gen.send(RawResponse(r.status_code, dict(r.headers), r.content))

    with pytest.raises(IdTokenError, match=r"signed with a key the provider does not publish"):
        run()
    assert fetched == [provider.jwks_uri]  # fetched once: no second fetch of a fresh set
    # With the set cached (as after a rotation): one refetch and no more.
    fetched.clear()
    with pytest.raises(IdTokenError, match=r"signed with a key the provider does not publish"):
        run()
    assert fetched == [provider.jwks_uri]


def test_jwks_unreachable_is_a_discovery_error(provider: MockProvider) -> None:
    from oauth_callback.errors import DiscoveryError

    token = provider.make_id_token(provider.client_id)
    gen = id_token_flow(token, issuer=provider.issuer, client_id=provider.client_id,
                        jwks_uri=provider.jwks_uri, nonce=None, cache=JwksCache())
    assert next(gen) == provider.jwks_uri
    with pytest.raises(DiscoveryError, match=r"could not fetch the provider's keys"):
        gen.send(DiscoveryError("connection refused"))
    gen = id_token_flow(token, issuer=provider.issuer, client_id=provider.client_id,
                        jwks_uri=provider.jwks_uri, nonce=None, cache=JwksCache())
    next(gen)
    with pytest.raises(DiscoveryError, match=r"has no 'keys' list"):
        gen.send(RawResponse(200, {}, b'{"nokeys": 1}'))


def test_identify_flow_yields_a_bearer_fetch_without_showing_it(provider: MockProvider) -> None:
    meta = ServerMetadata(provider.issuer, "https://a/authorize", "https://a/token",
                          userinfo_endpoint=provider.userinfo_endpoint)
    gen = identify_flow(Tokens("at-secret-value"), client_id="c", metadata=meta, nonce=None)
    fetch = next(gen)
    assert isinstance(fetch, Fetch) and fetch.headers["Authorization"] == "Bearer at-secret-value"
    assert "at-secret-value" not in repr(fetch)
    assert oidc_nonce("openid", meta) is None  # no jwks_uri: not an OIDC provider
    assert oidc_nonce("read", meta.__class__(**{**meta.__dict__, "jwks_uri": "https://j"})) is None


def test_a_signed_payload_nested_deeper_than_the_parser_is_a_typed_error(
    provider: MockProvider, keyset
) -> None:
    """A provider's signed payload ``[[[[...`` is an IdTokenError, never a RecursionError."""
    from joserfc import jws

    key = provider._current_key()
    token = jws.serialize_compact({"alg": "RS256", "kid": str(key.kid)}, b"[" * 50_000, key,
                                  algorithms=["RS256"])
    with pytest.raises(IdTokenError) as info:
        _validate(provider, token, keyset)
    assert info.value.claim == "payload"
