"""Redaction forms no other test pinned: percent-encoding with ``/`` kept, JSON
escaping that keeps non-ASCII characters, and a provider that breaks its line inside
an echoed secret. Each test fails when the form it names is removed from
oauth_callback._text."""

from __future__ import annotations

import json
from urllib.parse import quote

from oauth_callback._text import REDACTED, clip

SECRET = "cs sec/ret+v&a=l%ue-ü-1234"


def test_percent_encoding_that_keeps_slashes_is_redacted() -> None:
    form = quote(SECRET)  # what a provider re-encoding a path-like value echoes
    assert "/" in form and form != quote(SECRET, safe="")
    assert clip(f"bad secret {form}!", [SECRET]) == f"bad secret {REDACTED}!"


def test_json_escaping_that_keeps_non_ascii_is_redacted() -> None:
    secret = 'pa"ss\\wörd-1234'
    form = json.dumps(secret, ensure_ascii=False)[1:-1]
    assert form not in (secret, json.dumps(secret)[1:-1])
    assert clip(f'{{"error_description": "bad {form}"}}', [secret]) == (
        f'{{"error_description": "bad {REDACTED}"}}'
    )


def test_a_secret_split_across_lines_by_the_provider_is_redacted() -> None:
    # The provider wrapped its text at the space inside the secret: the text is joined
    # into one line before the secrets are looked for.
    wrapped = SECRET.replace(" ", "\n", 1)
    assert clip(f"invalid client secret {wrapped} (sent by you)", [SECRET]) == (
        f"invalid client secret {REDACTED} (sent by you)"
    )
