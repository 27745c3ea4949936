"""PKCE (RFC 7636) and ``state`` values for the authorization code flow.

Every value comes from :mod:`secrets`. None of them is ever logged by this
library; treat the verifier and ``state`` as secrets until the flow ends.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string

__all__ = ["generate_pkce", "generate_state", "pkce_challenge"]

# RFC 7636 4.1: code-verifier = 43*128unreserved, ALPHA / DIGIT / "-" / "." / "_" / "~"
_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_UNRESERVED_SET = frozenset(_UNRESERVED)
_MIN_VERIFIER = 43
_MAX_VERIFIER = 128


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier``: BASE64URL(SHA256(verifier)), no padding.

    Raises :class:`ValueError` if ``verifier`` is not 43..128 characters of the
    RFC 7636 unreserved alphabet (the message never contains the verifier).
    """
    if not _MIN_VERIFIER <= len(verifier) <= _MAX_VERIFIER:
        raise ValueError(
            f"PKCE code verifier must be {_MIN_VERIFIER}..{_MAX_VERIFIER} characters, "
            f"got {len(verifier)}"
        )
    if not _UNRESERVED_SET.issuperset(verifier):
        raise ValueError(
            "PKCE code verifier may only contain ASCII letters, digits and '-', '.', '_', '~'"
        )
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def generate_pkce(length: int = 64) -> tuple[str, str]:
    """A fresh ``(verifier, challenge)`` pair for ``code_challenge_method=S256``.

    The verifier is ``length`` (43..128, default 64) random characters of the
    unreserved alphabet, about 6 bits of entropy each. Raises :class:`ValueError`
    for a length outside 43..128.
    """
    if not _MIN_VERIFIER <= length <= _MAX_VERIFIER:
        raise ValueError(
            f"PKCE verifier length must be {_MIN_VERIFIER}..{_MAX_VERIFIER}, got {length}"
        )
    verifier = "".join(secrets.choice(_UNRESERVED) for _ in range(length))
    return verifier, pkce_challenge(verifier)


def generate_state(nbytes: int = 32) -> str:
    """A fresh, URL-safe ``state`` value carrying ``nbytes`` (>= 16, default 32) random bytes.

    Raises :class:`ValueError` if ``nbytes`` is below 16 (128 bits).
    """
    if nbytes < 16:
        raise ValueError(f"state needs at least 16 random bytes (128 bits), got {nbytes}")
    return secrets.token_urlsafe(nbytes)
