"""What ``oauth-callback login`` shows while it waits: the device code (and a QR
code of it), and the ``--json`` progress events for wrappers."""

from __future__ import annotations

import io
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ..device import DeviceAuthorization

__all__ = ["Events", "qr_lines", "show_device_code"]

_BOLD, _RESET = "\x1b[1m", "\x1b[0m"


class Events:
    """``--json``: one JSON object per line on stdout, ``{"event": NAME, ...}``; silent otherwise.

    Events: ``method`` (the way chosen, and why when automatic),
    ``authorization_url``, ``device_code``, then ``logged_in`` or ``error``.
    None carries a secret (the user code is meant to be shown).
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream

    def emit(self, event: str, **fields: Any) -> None:
        if self.enabled:
            stream = self.stream if self.stream is not None else sys.stdout
            print(json.dumps({"event": event, **fields}), file=stream, flush=True)


def qr_lines(data: str) -> list[str] | None:
    """A QR code of ``data`` drawn with block characters, or ``None`` without
    ``segno`` (the ``qr`` extra: ``pip install 'oauth-callback[qr]'``)."""
    try:
        import segno
    except ImportError:
        return None
    buffer = io.StringIO()
    segno.make(data, error="l").terminal(out=buffer, compact=True, border=2)
    return buffer.getvalue().splitlines()


def show_device_code(grant: DeviceAuthorization, stream: TextIO, *, qr: bool | None) -> None:
    """The URL and the code on lines of their own (bold on a terminal), so they copy cleanly.

    ``qr``: ``True`` always adds a QR code of ``verification_uri_complete`` (when
    segno is installed); ``None`` only on a terminal; ``False`` never.
    """
    tty = bool(getattr(stream, "isatty", lambda: False)())

    def bold(text: str) -> str:
        return f"{_BOLD}{text}{_RESET}" if tty else text

    lines = [
        "",
        "  To sign in, open this page on any device:",
        "",
        f"      {bold(grant.verification_uri)}",
        "",
        "  and enter the code:",
        "",
        f"      {bold(grant.user_code)}",
        "",
    ]
    complete = grant.verification_uri_complete
    if complete:
        lines += [f"  (or open {complete} , which carries the code)", ""]
        drawn = qr_lines(complete) if qr or (qr is None and tty) else None
        if drawn:
            lines += [f"  {row}" for row in drawn] + [""]
    stream.write("\n".join(lines) + "\n")
    stream.flush()
