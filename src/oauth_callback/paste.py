"""Paste-back: finish a loopback login with the redirect URL pasted on stdin.

Over SSH the browser runs on another machine: after approval the provider
sends it to ``http://localhost:PORT/callback?code=...``, which that machine
cannot reach. The address bar still shows the URL, and the person pastes it
into the terminal. :func:`parse_pasted_redirect` turns the pasted text into
the same :class:`~oauth_callback.protocol.CallbackResult` a real callback
gives, so it goes through the one callback check
(:func:`oauth_callback.protocol.check_callback`: ``state``, ``iss``,
``error``) and nothing else; :class:`PasteListener` reads the lines.

Rules, numbered so tests can name them:

1. Blank lines are ignored; surrounding whitespace, quotes and ``<>`` are
   stripped; a URL without its scheme (``localhost:PORT/callback?...``, as
   some address bars copy it) gets ``http://``.
2. The URL must be the redirect URI of this login (scheme, host, port and
   path) with a query; anything else is explained and asked again. The
   authorization URL itself is recognised and explained.
3. A URL of this login whose ``state`` or ``iss`` does not match is
   explained and asked again (:func:`judge_pasted`); one that carries a
   provider ``error`` with the right ``state`` ends the login like a real
   callback would.
4. End of input (``</dev/null``, a closed pipe, a service) only ends the
   paste path: the loopback callback is still awaited.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from collections.abc import Callable
from types import MappingProxyType
from typing import IO, TextIO
from urllib.parse import parse_qsl, urlsplit

from .errors import IssuerMismatchError, OAuthError, OAuthStateError
from .protocol import CallbackResult, check_callback

__all__ = ["PasteListener", "judge_pasted", "parse_pasted_redirect"]

_MAX_FIELDS = 200
_MAX_LINE = 64 * 1024
_POLL = 0.05  # seconds between checks of the stop flag while reading
_AUTHORIZE_PARAMS = frozenset({"response_type", "client_id"})
_LOOPBACK_ALIASES = frozenset({"localhost", "127.0.0.1", "::1"})


def _clean(text: str) -> str:
    text = text.strip().strip("'\"").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def parse_pasted_redirect(text: str, redirect_uri: str) -> CallbackResult | str | None:
    """The callback in a pasted redirect URL, or why it is not one (rules 1 and 2).

    Returns ``None`` for a blank line, a :class:`CallbackResult` (query
    parameters, first value of each name) for the redirect URI of this login,
    or a one-line explanation to show before asking again. Pure: it checks no
    ``state`` (:func:`judge_pasted` does, with the one callback check).
    """
    text = _clean(text)
    if not text:
        return None
    if "://" not in text and text.split("/", 1)[0].split(":", 1)[0].lower() in _LOOPBACK_ALIASES:
        text = "http://" + text
    expected = urlsplit(redirect_uri)
    try:
        got = urlsplit(text)
        port = got.port
    except ValueError:
        return "that is not a URL; paste the whole address from the browser's address bar"
    if got.scheme not in ("http", "https") or not got.netloc:
        return (
            "that is not a URL; paste the whole address from the browser's address bar "
            f"(it starts with {redirect_uri})"
        )
    try:
        fields = parse_qsl(got.query, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except ValueError:
        return "that address has too many query parameters to be the redirect of this login"
    params: dict[str, str] = {}
    for name, value in fields:
        params.setdefault(name, value)  # first value wins, as on the loopback server
    same_host = (got.hostname or "").lower() == (expected.hostname or "").lower() or (
        (got.hostname or "").lower() in _LOOPBACK_ALIASES
        and (expected.hostname or "").lower() in _LOOPBACK_ALIASES
    )
    ours = same_host and port == expected.port and got.path == expected.path
    if not ours:
        if _AUTHORIZE_PARAMS.issubset(params):
            return (
                "that is the authorization URL: open it in a browser, approve, then paste the "
                f"address the browser ends on (it starts with {redirect_uri})"
            )
        return (
            f"that address is not this login's redirect; it must start with {redirect_uri} "
            "(a page that cannot load is expected: copy its address)"
        )
    if got.scheme != expected.scheme:
        return f"that address must start with {redirect_uri}"
    if "code" not in params and "error" not in params:
        return (
            "that address carries no authorization code; paste it after approving, "
            "when the browser shows the page that cannot be reached"
        )
    return CallbackResult(
        code=params.get("code"),
        state=params.get("state"),
        iss=params.get("iss"),
        params=MappingProxyType(params),
    )


def judge_pasted(
    text: str,
    redirect_uri: str,
    expected_state: str,
    expected_issuer: str | None,
    *,
    iss_required: bool = False,
) -> CallbackResult | str | None:
    """:func:`parse_pasted_redirect`, then the one callback check (rule 3).

    A ``state`` or ``iss`` mismatch (:class:`OAuthStateError`,
    :class:`IssuerMismatchError`) becomes an
    explanation; a provider ``error`` with the right ``state`` is accepted (the
    flow raises it as :class:`OAuthError`, exactly as for a real callback).
    """
    verdict = parse_pasted_redirect(text, redirect_uri)
    if not isinstance(verdict, CallbackResult):
        return verdict
    try:
        check_callback(verdict, expected_state, expected_issuer, iss_required=iss_required)
    except OAuthStateError as exc:
        if verdict.state is None or "state" in str(exc).split(";")[0]:
            return (
                "that address belongs to another sign-in (its state does not match this one); "
                "paste the address from the tab that opened the URL above"
            )
        return f"that address was not accepted: {exc}"
    except IssuerMismatchError as exc:
        return f"that address was not accepted: {exc}"
    except OAuthError:
        pass  # the provider's answer, right state: the flow reports it
    return verdict


class PasteListener:
    """Reads pasted lines from ``stream`` in a daemon thread until one is accepted.

    ``judge`` gets each line and returns a :class:`CallbackResult` (accepted:
    :attr:`result` is set, ``on_accept`` is called and reading stops), an
    explanation (written to ``out`` with the prompt again) or ``None``
    (ignored). At end of input :attr:`closed` is set and reading stops (rule 4).
    :meth:`stop` ends the reading promptly when ``stream`` has a file
    descriptor that :func:`select.select` accepts (POSIX terminals and pipes);
    otherwise the thread stays blocked in ``readline`` until a line or end of
    input, and discards it.
    """

    def __init__(
        self,
        stream: IO[str],
        judge: Callable[[str], CallbackResult | str | None],
        *,
        out: TextIO | None = None,
        prompt: str = "Or paste the address your browser ends on here: ",
        on_accept: Callable[[], object] | None = None,
    ) -> None:
        self._stream = stream
        self._judge = judge
        self._out = out if out is not None else sys.stderr
        self.prompt = prompt
        self._on_accept = on_accept
        self._stop = threading.Event()
        self.done = threading.Event()
        self.result: CallbackResult | None = None
        self.closed = False
        #: Whether the input is a terminal, which echoes the line and its newline.
        self.echoes = bool(getattr(stream, "isatty", lambda: False)())
        self._buffer = b""
        self._thread: threading.Thread | None = None

    def start(self) -> PasteListener:
        self._say(self.prompt, newline=False)
        self._thread = threading.Thread(target=self._run, name="oauth-callback-paste", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading (idempotent); waits briefly for the thread. Ends the prompt's
        line unless the person's Enter on a terminal already did."""
        first = not self._stop.is_set()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if first and self._thread is not None and not self.closed and not (
            self.echoes and self.result is not None
        ):
            self._say("")

    def __enter__(self) -> PasteListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _say(self, text: str, *, newline: bool = True) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._out.write(text + ("\n" if newline else ""))
            self._out.flush()

    def _fd(self) -> int | None:
        if os.name == "nt":
            return None
        try:
            fd = self._stream.fileno()
            select.select([fd], [], [], 0)
        except (AttributeError, OSError, ValueError):
            return None
        return fd

    def _next_line(self, fd: int | None) -> str | None:
        """The next line, or ``None`` at end of input or once stopped."""
        if fd is None:
            return self._stream.readline() or None
        while not self._stop.is_set():
            if b"\n" in self._buffer or len(self._buffer) > _MAX_LINE:
                line, _, self._buffer = self._buffer.partition(b"\n")
                return line.decode("utf-8", "replace")
            ready, _, _ = select.select([fd], [], [], _POLL)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:  # end of input; a last line without newline still counts
                line, self._buffer = self._buffer, b""
                return line.decode("utf-8", "replace") if line.strip() else None
            self._buffer += chunk
        return None

    def _run(self) -> None:
        self._buffer = b""
        try:
            fd = self._fd()
            while not self._stop.is_set():
                try:
                    line = self._next_line(fd)
                except (OSError, ValueError):
                    line = None
                if line is None or self._stop.is_set():
                    break
                verdict = self._judge(line)
                if isinstance(verdict, CallbackResult):
                    self.result = verdict
                    self.done.set()
                    if self._on_accept is not None:
                        self._on_accept()
                    return
                if verdict is not None:
                    newline = "" if self.echoes else "\n"  # a pipe does not echo the Enter
                    self._say(f"{newline}  {verdict}")
                    self._say(self.prompt, newline=False)
            if not self._stop.is_set():
                self.closed = True
                self._say("")
                self._say("(no more input on stdin; still waiting for the browser's callback)")
        finally:
            self.done.set()
