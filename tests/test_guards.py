"""Safety guards pinned from more than one side.

Each guard here once rested on a single assertion, so a mutation that kept
that one case working survived. These cases fail under such mutations: the
state check, the S256 and https rules of metadata, the OAuthSession repr.
"""

from __future__ import annotations

from typing import Any

import pytest

from oauth_callback import DiscoveryError, OAuthError, OAuthSession, OAuthStateError
from oauth_callback.loopback import CallbackResult
from oauth_callback.models import fingerprint
from oauth_callback.protocol import ServerMetadata, check_callback

STATE = "state-0123456789abcdef"


def _result(state: str | None, code: str | None = "the-code", **params: str) -> CallbackResult:
    base = {"code": code} if code is not None else {}
    if state is not None:
        base["state"] = state
    return CallbackResult(code=code, state=state, iss=None, params={**base, **params})


# --------------------------------------------------------------------------- state


def test_state_check_accepts_only_the_exact_state() -> None:
    assert check_callback(_result(STATE), STATE, None) == "the-code"


@pytest.mark.parametrize(
    "state",
    [
        None,  # missing
        "",  # empty
        STATE[:-1],  # a prefix of the expected value
        STATE + "x",  # the expected value is a prefix of it
        STATE[:-1] + "F",  # differs in the last character only
        "x" + STATE[1:],  # differs in the first character only
        STATE.upper(),  # case matters
        f" {STATE}",  # no trimming
    ],
    ids=["missing", "empty", "prefix", "longer", "last-char", "first-char", "case", "space"],
)
def test_state_check_rejects_every_near_miss(state: str | None) -> None:
    with pytest.raises(OAuthStateError):
        check_callback(_result(state), STATE, None)


def test_state_is_checked_before_the_error_and_the_code() -> None:
    # A forged callback cannot pick the error the application shows.
    with pytest.raises(OAuthStateError):
        check_callback(_result("forged", error="access_denied"), STATE, None)
    with pytest.raises(OAuthStateError):
        check_callback(_result(None, code=None, error="access_denied"), STATE, None)
    with pytest.raises(OAuthError, match="access_denied"):
        check_callback(_result(STATE, error="access_denied"), STATE, None)
    with pytest.raises(OAuthError, match="no code"):
        check_callback(_result(STATE, code=None), STATE, None)
    with pytest.raises(OAuthError, match="no code"):
        check_callback(_result(STATE, code=""), STATE, None)


# --------------------------------------------------------------------------- metadata

ISS = "https://as.example.com"


def _meta(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": ISS,
        "authorization_endpoint": ISS + "/authorize",
        "token_endpoint": ISS + "/token",
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize(
    "methods", [None, ["S256"], ["plain", "S256"], ["S256", "plain"]], ids=repr
)
def test_s256_accepted_when_offered_or_not_advertised(methods: list[str] | None) -> None:
    meta = ServerMetadata.from_json(_meta(code_challenge_methods_supported=methods), issuer=ISS)
    assert meta.code_challenge_methods_supported == (tuple(methods) if methods else None)


@pytest.mark.parametrize("methods", [[], ["plain"], ["s256"], ["S256 "], ["S384"]], ids=repr)
def test_s256_required_when_methods_are_advertised(methods: list[str]) -> None:
    with pytest.raises(DiscoveryError, match="S256"):
        ServerMetadata.from_json(_meta(code_challenge_methods_supported=methods), issuer=ISS)


@pytest.mark.parametrize("field", ["authorization_endpoint", "token_endpoint",
                                   "registration_endpoint", "revocation_endpoint",
                                   "userinfo_endpoint"])
@pytest.mark.parametrize(
    "url",
    [
        "http://as.example.com/x",  # plain http off loopback
        "http://127.0.0.1.evil.example/x",  # looks like loopback, is not
        "http://localhost.evil.example/x",
        "http://10.0.0.1/x",
        "https:///x",  # no host
        "ftp://as.example.com/x",
        "/relative/x",
        "javascript:alert(1)",
    ],
)
def test_every_endpoint_must_be_https_or_loopback_http(field: str, url: str) -> None:
    with pytest.raises(DiscoveryError, match=field):
        ServerMetadata.from_json(_meta(**{field: url}), issuer=ISS)


@pytest.mark.parametrize(
    "url", ["https://as.example.com/x", "http://127.0.0.1:8080/x", "http://localhost/x",
            "http://[::1]:9/x", "http://127.5.6.7/x", "http://LOCALHOST/x"]
)
def test_https_and_loopback_http_endpoints_accepted(url: str) -> None:
    meta = ServerMetadata.from_json(_meta(token_endpoint=url, registration_endpoint=url),
                                    issuer=ISS)
    assert meta.token_endpoint == url and meta.registration_endpoint == url


def test_http_issuer_only_on_loopback() -> None:
    local = "http://127.0.0.1:9000"
    assert ServerMetadata.from_json(
        {"issuer": local, "authorization_endpoint": local + "/a", "token_endpoint": local + "/t"},
        issuer=local,
    ).issuer == local
    remote = "http://as.example.com"
    with pytest.raises(DiscoveryError, match="issuer"):
        ServerMetadata.from_json(
            {"issuer": remote, "authorization_endpoint": ISS + "/a", "token_endpoint": ISS + "/t"},
            issuer=remote,
        )


# --------------------------------------------------------------------------- OAuthSession repr


def test_session_repr_shows_each_fingerprint_and_no_value() -> None:
    verifier, state = "verifier-" + "v" * 40, "state-value-987654321"
    session = OAuthSession(code_verifier=verifier, state=state, created_at=5.0,
                           extra={"redirectUri": "http://127.0.0.1:1234/cb", "note": "x-extra-x"})
    for text in (repr(session), str(session), f"{session}", repr([session])):
        assert verifier not in text and state not in text
        # Each field shows its own fingerprint (not the other's, not a constant).
        assert f"code_verifier={fingerprint(verifier)}" in text
        assert f"state={fingerprint(state)}" in text
        assert "x-extra-x" not in text  # extra is not shown: it may hold anything
    assert fingerprint(verifier) != fingerprint(state)
    empty = repr(OAuthSession())
    assert "code_verifier=None" in empty and "state=None" in empty
