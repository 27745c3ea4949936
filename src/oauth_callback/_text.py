"""Provider text made safe to put in an exception message, a log line or a terminal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "clip"]

REDACTED = "<redacted>"
MAX_TEXT = 300
_CONTROL = dict.fromkeys([*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)], " ")


def clip(text: Any, secrets: Iterable[str] = ()) -> str | None:
    """``text`` on one line without control characters (no terminal escapes), at
    most :data:`MAX_TEXT` characters, with every value in ``secrets`` (what the
    request sent: a code, refresh token, client secret, ...) replaced by
    ``<redacted>``, since a provider may echo them. ``None`` for a non-string
    or empty ``text``."""
    if not isinstance(text, str) or not text:
        return None
    line = " ".join(text.translate(_CONTROL).split())
    for secret in secrets:
        if secret and len(secret) >= 4:
            line = line.replace(secret, REDACTED)
    return line if len(line) <= MAX_TEXT else line[: MAX_TEXT - 1] + "…"
