"""Provider text made safe to put in an exception message, a log line or a terminal."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from ._lazy import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

__all__ = ["REDACTED", "clip", "escape_control", "redact", "secret_forms"]

REDACTED = "<redacted>"
MAX_TEXT = 300
MIN_SECRET = 4  # shorter values would redact ordinary words
_CONTROL = dict.fromkeys([*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)], " ")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def _lower_hex(text: str) -> str:
    return _PERCENT.sub(lambda m: m.group(0).lower(), text)


def _one_line(text: str) -> str:
    return " ".join(text.translate(_CONTROL).split())


def secret_forms(secret: str) -> set[str]:
    """Every spelling of ``secret`` a provider may echo back.

    The raw value; percent-encoded (upper- and lower-case hex, ``/`` kept or
    encoded); form-encoded (``+`` for a space, RFC 6749 2.3.1 and
    ``application/x-www-form-urlencoded`` bodies); JSON-string escaped; and
    each of those on one line (as :func:`clip` shows provider text). Base64 of
    HTTP Basic credentials is a secret of its own: the request lists it (see
    ``TokenRequest.secrets``).
    """
    from urllib.parse import quote, quote_plus  # here: 'oauth-callback tokens list' needs none

    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    forms |= {_lower_hex(form) for form in forms}
    forms |= {_one_line(form) for form in forms}
    return {form for form in forms if len(form) >= MIN_SECRET}


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form (:func:`secret_forms`) of every secret replaced by
    ``<redacted>``; longest first, so a secret holding another one is replaced
    whole, not around the shorter one (which would leave the rest visible)."""
    forms: set[str] = set()
    for secret in secrets:
        if isinstance(secret, str):
            forms |= secret_forms(secret)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def escape_control(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1) shown as ``\\xNN`` escapes, so a
    value printed for a person cannot drive the terminal (no escape sequences)."""
    if text.isprintable():
        return text
    return "".join(
        f"\\x{ord(ch):02x}" if ord(ch) in _CONTROL else ch for ch in text
    )


def clip(text: Any, secrets: Iterable[str] = ()) -> str | None:
    """``text`` on one line without control characters (no terminal escapes), at
    most :data:`MAX_TEXT` characters, with every value in ``secrets`` (what the
    request sent: a code, refresh token, client secret, ...) replaced by
    ``<redacted>`` in every encoding (:func:`secret_forms`), since a provider
    may echo them. ``None`` for a non-string or empty ``text``."""
    if not isinstance(text, str) or not text:
        return None
    # After joining the lines, with the one-line spelling of each secret too: a
    # secret with a space or a control character in it is not hidden by the rewrite.
    line = redact(_one_line(text), secrets)
    return line if len(line) <= MAX_TEXT else line[: MAX_TEXT - 1] + "…"
