"""Values: Tokens, ClientInfo, OAuthSession, and the error hierarchy."""

from __future__ import annotations

import dataclasses
import re

import pytest

import oauth_callback
from oauth_callback import ClientInfo, OAuthSession, Tokens, errors

SECRET = "very-secret-value-123"


def test_from_response_makes_expiry_absolute() -> None:
    t = Tokens.from_response(
        {"access_token": "a", "token_type": "bearer", "expires_in": 3600, "refresh_token": "r",
         "scope": "x y", "id_token": "jwt", "custom": {"n": 1}},
        now=1000.0,
    )
    assert t.expires_at == 4600.0
    assert t.token_type == "Bearer"
    assert t.refresh_token == "r"
    assert t.scope == "x y"
    assert dict(t.extra) == {"id_token": "jwt", "custom": {"n": 1}}


def test_from_response_expires_in_as_string_and_missing() -> None:
    assert Tokens.from_response({"access_token": "a", "expires_in": "60"}, now=0).expires_at == 60
    assert Tokens.from_response({"access_token": "a"}).expires_at is None


@pytest.mark.parametrize("bad", [
    {}, {"access_token": ""}, {"access_token": 5}, {"access_token": "a", "expires_in": "soon"},
    {"access_token": "a", "expires_in": True}, {"access_token": "a", "refresh_token": 3},
    {"access_token": "a", "token_type": 1}, [],
])
def test_from_response_rejects_malformed(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        Tokens.from_response(bad)  # type: ignore[arg-type]
    assert "'" in str(info.value) or "object" in str(info.value)


def test_is_expired_with_skew() -> None:
    t = Tokens("a", expires_at=1000.0)
    assert not t.is_expired(now=900.0)
    assert t.is_expired(now=941.0)
    assert not t.is_expired(skew=0, now=999.0)
    assert t.is_expired(skew=0, now=1000.0)
    assert not Tokens("a").is_expired()
    assert t.expires_in(now=400.0) == 600.0


def test_immutable_and_extra_is_read_only() -> None:
    t = Tokens("a", extra={"k": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.access_token = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.extra["k"] = 2  # type: ignore[index]


def test_record_roundtrip_is_exact() -> None:
    t = Tokens("a", "r", 1767225600.1234, "s", "DPoP", {"x": [1]})
    assert Tokens.from_record(t.to_record()) == t
    assert t.to_record()["expiresAt"] == 1767225600123
    c = ClientInfo("id", "sec", 1.0, 0.0, "iss", "tok", "auth", "redir", "sc", "none", {"y": 2})
    assert ClientInfo.from_record(c.to_record()) == c
    s = OAuthSession("v", "st", 5.0, {"z": 3})
    assert OAuthSession.from_record(s.to_record()) == s


def test_reprs_show_no_secret() -> None:
    values = [
        Tokens(SECRET, refresh_token=SECRET),
        ClientInfo("cid", client_secret=SECRET),
        OAuthSession(code_verifier=SECRET, state=SECRET),
    ]
    for v in values:
        assert SECRET not in repr(v)
        assert SECRET not in str(v)
        assert "sha256:" in repr(v)


def test_client_secret_expiry() -> None:
    assert not ClientInfo("c", client_secret_expires_at=0).is_secret_expired(now=10)
    assert ClientInfo("c", client_secret_expires_at=5).is_secret_expired(now=10)


def test_error_hierarchy_and_reexports() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.OAuthCallbackError)
        assert getattr(oauth_callback, name) is cls
    assert issubclass(errors.StoreLockTimeout, TimeoutError)
    assert issubclass(errors.CallbackTimeout, TimeoutError)
    assert issubclass(errors.StorePermissionError, PermissionError)
    e = errors.StoreWriteError("could not write /x", path="/x", errno=28)
    assert (e.path, e.errno) == ("/x", 28)
    o = errors.OAuthError("invalid_grant", "expired", "https://e/doc")
    assert (o.error, o.description, o.uri) == ("invalid_grant", "expired", "https://e/doc")
    assert "invalid_grant" in str(o)
    r = errors.ReauthRequired("github")
    assert "github" in str(r)
    assert isinstance(r, errors.OAuthError)
    p = errors.PortInUseError(3000, "localhost")
    assert "3000" in str(p)
    assert "port=0" in str(p)


def test_values_are_hashable_consistently_with_equality() -> None:
    a, b = Tokens("a", extra={"x": [1]}), Tokens("a", extra={"x": [1]})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, Tokens("c")}) == 2
    assert len({ClientInfo("c"), ClientInfo("c")}) == 1
    assert len({OAuthSession("v"), OAuthSession("v")}) == 1


def test_refresh_margin_is_bounded_by_the_lifetime() -> None:
    t = Tokens.from_response({"access_token": "a", "expires_in": 20}, now=1000.0)
    assert t.lifetime == 20 and t.refresh_margin(60) == 10 and t.refresh_margin(5) == 5
    assert not t.needs_refresh(60, now=1000.0)  # fresh: used for half its life
    assert not t.needs_refresh(60, now=1009.0)
    assert t.needs_refresh(60, now=1010.0)
    unknown = Tokens("a", expires_at=1020.0)  # a record without the lifetime
    assert unknown.refresh_margin(60) == 60 and unknown.needs_refresh(60, now=1000.0)
    assert not Tokens("a").needs_refresh(60)  # no expiry: never


def test_lifetime_round_trips_through_the_record() -> None:
    t = Tokens.from_response({"access_token": "a", "expires_in": 3600}, now=0)
    record = t.to_record()
    assert record["expiresIn"] == 3600
    assert Tokens.from_record(record) == t
    assert "expiresIn" not in Tokens("a").to_record()
    assert Tokens.from_record({"accessToken": "a", "expiresIn": -5}).lifetime is None


def test_the_error_tree_in_the_docstring_names_every_exception() -> None:
    tree = errors.__doc__ or ""
    for name in errors.__all__:
        assert re.search(rf"(^| ){name}( |$)", tree, re.M), f"{name} is not in the errors.py tree"
    from oauth_callback.storage import MigrationError, MigrationVerifyError

    assert MigrationError is errors.MigrationError
    assert MigrationVerifyError is errors.MigrationVerifyError


def test_error_kinds_of_issue_11() -> None:
    # An RFC 9207 mix-up is not a failure of the loopback capture.
    assert not issubclass(errors.IssuerMismatchError, errors.CallbackError)
    # Registration and token endpoint failures share a base, neither is the other.
    assert issubclass(errors.RegistrationError, errors.EndpointError)
    assert issubclass(errors.TokenEndpointError, errors.EndpointError)
    assert not issubclass(errors.RegistrationError, errors.TokenEndpointError)
    e = errors.RegistrationError("registration endpoint answered HTTP 502", status_code=502)
    assert e.status_code == 502 and e.retry_after is None
