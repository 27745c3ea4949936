from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauth_callback.pkce import generate_pkce, generate_state, pkce_challenge

UNRESERVED = re.compile(r"\A[A-Za-z0-9\-._~]+\Z")
BASE64URL = re.compile(r"\A[A-Za-z0-9\-_]+\Z")


def test_rfc7636_appendix_b_vector():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_generate_pkce_default_shape():
    verifier, challenge = generate_pkce()
    assert len(verifier) == 64
    assert UNRESERVED.match(verifier)
    assert challenge == pkce_challenge(verifier)
    assert len(challenge) == 43  # 32 bytes, base64url, no padding
    assert BASE64URL.match(challenge)
    assert "=" not in challenge


@pytest.mark.parametrize("length", [43, 100, 128])
def test_generate_pkce_lengths(length):
    verifier, challenge = generate_pkce(length)
    assert len(verifier) == length
    assert UNRESERVED.match(verifier)
    assert challenge == pkce_challenge(verifier)


@pytest.mark.parametrize("length", [0, 42, 129])
def test_generate_pkce_rejects_bad_length(length):
    with pytest.raises(ValueError, match=r"43\.\.128"):
        generate_pkce(length)


def test_generate_pkce_is_random():
    pairs = {generate_pkce() for _ in range(50)}
    assert len(pairs) == 50


@pytest.mark.parametrize(
    "verifier",
    ["a" * 42, "a" * 129, "a" * 42 + " ", "a" * 42 + "+", "a" * 42 + "é", "a" * 42 + "="],
)
def test_pkce_challenge_rejects_invalid_verifier_without_echoing_it(verifier):
    with pytest.raises(ValueError) as excinfo:
        pkce_challenge(verifier)
    assert verifier not in str(excinfo.value)


@given(st.text(alphabet="ABCXYZabcxyz0189-._~", min_size=43, max_size=128))
def test_pkce_challenge_always_unpadded_base64url_sha256(verifier):
    challenge = pkce_challenge(verifier)
    assert len(challenge) == 43
    assert BASE64URL.match(challenge)


def test_generate_state_entropy_and_alphabet():
    state = generate_state()
    assert BASE64URL.match(state)
    assert len(state) >= 22  # >= 128 bits in base64url
    assert len({generate_state() for _ in range(50)}) == 50
    assert len(generate_state(16)) >= 22


def test_generate_state_refuses_less_than_128_bits():
    with pytest.raises(ValueError, match="128 bits"):
        generate_state(15)
