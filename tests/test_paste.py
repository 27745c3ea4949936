"""Paste-back (oauth_callback.paste): judging pasted redirect URLs and reading them from a pipe or a TTY."""

from __future__ import annotations

import io
import os
import pty
import threading
import time
from collections.abc import Iterator

import pytest

from oauth_callback.loopback import CallbackResult
from oauth_callback.paste import PasteListener, judge_pasted, parse_pasted_redirect

REDIRECT = "http://localhost:53682/callback"
STATE = "st_abcdefghijklmnopqrstuvwxyz012345"
ISSUER = "https://as.example"
GOOD = f"{REDIRECT}?code=ac_123&state={STATE}&iss=https%3A%2F%2Fas.example"


def judge(text: str) -> CallbackResult | str | None:
    return judge_pasted(text, REDIRECT, STATE, ISSUER, iss_required=True)


@pytest.mark.parametrize("text", [
    GOOD,
    f"  {GOOD}  \n",
    f"'{GOOD}'",
    f"<{GOOD}>",
    GOOD.replace("http://", ""),  # rule 1: an address bar that drops the scheme
    GOOD.replace("localhost", "127.0.0.1"),
])
def test_rule_1_2_the_redirect_url_is_accepted(text: str) -> None:
    verdict = judge(text)
    assert isinstance(verdict, CallbackResult)
    assert (verdict.code, verdict.state, verdict.iss) == ("ac_123", STATE, ISSUER)


def test_rule_1_blank_lines_are_ignored() -> None:
    assert parse_pasted_redirect("   \n", REDIRECT) is None


@pytest.mark.parametrize(("text", "needle"), [
    ("hello world", "not a URL"),
    ("ftp://localhost:53682/callback?code=x", "not a URL"),
    ("http://localhost:99999/callback?code=x", "not a URL"),
    (f"https://as.example/authorize?response_type=code&client_id=c&redirect_uri={REDIRECT}",
     "that is the authorization URL"),
    (f"http://localhost:53683/callback?code=x&state={STATE}", "not this login's redirect"),
    (f"http://localhost:53682/other?code=x&state={STATE}", "not this login's redirect"),
    (f"http://evil.example:53682/callback?code=x&state={STATE}", "not this login's redirect"),
    ("http://localhost:53682/callback", "carries no authorization code"),
    (f"http://localhost:53682/callback?state={STATE}", "carries no authorization code"),
    (f"https://localhost:53682/callback?code=x&state={STATE}", "must start with"),
    (f"{REDIRECT}?code=ac_1&state=someone-elses", "belongs to another sign-in"),
    (f"{REDIRECT}?code=ac_1", "belongs to another sign-in"),
    (f"{REDIRECT}?code=ac_1&state={STATE}&iss=https%3A%2F%2Fevil.example", "mix-up"),
    (f"{REDIRECT}?code=ac_1&state={STATE}", "carries no 'iss'"),
])
def test_rule_2_3_wrong_pastes_are_explained(text: str, needle: str) -> None:
    verdict = judge(text)
    assert isinstance(verdict, str), verdict
    assert needle in verdict
    assert STATE not in verdict and "ac_1" not in verdict


def test_rule_3_a_provider_error_with_the_right_state_is_the_answer() -> None:
    verdict = judge(f"{REDIRECT}?error=access_denied&state={STATE}&iss=https%3A%2F%2Fas.example")
    assert isinstance(verdict, CallbackResult) and verdict.params["error"] == "access_denied"
    # ...but an error without our state is somebody else's text: asked again.
    assert isinstance(judge(f"{REDIRECT}?error=access_denied"), str)


def test_first_value_wins_like_the_loopback_server() -> None:
    verdict = judge(f"{GOOD}&code=ac_evil")
    assert isinstance(verdict, CallbackResult) and verdict.code == "ac_123"


# --------------------------------------------------------------------------- the listener


@pytest.fixture
def pipe() -> Iterator[tuple[int, io.TextIOWrapper]]:
    r, w = os.pipe()
    reader = os.fdopen(r, "r")
    try:
        yield w, reader
    finally:
        reader.close()
        try:
            os.close(w)
        except OSError:
            pass


def test_listener_explains_then_accepts_through_a_pipe(pipe: tuple[int, io.TextIOWrapper]) -> None:
    w, reader = pipe
    out = io.StringIO()
    accepted = threading.Event()
    with PasteListener(reader, judge, out=out, on_accept=accepted.set) as listener:
        os.write(w, b"garbage\n\n" + f"{REDIRECT}?code=ac_1&state=nope\n".encode())
        os.write(w, GOOD.encode() + b"\n")
        assert accepted.wait(10)
    assert listener.result is not None and listener.result.code == "ac_123"
    text = out.getvalue()
    assert "not a URL" in text and "belongs to another sign-in" in text
    assert text.count("paste the address your browser ends on") == 3  # asked again each time
    assert not listener.closed


def test_listener_accepts_a_last_line_without_newline(pipe: tuple[int, io.TextIOWrapper]) -> None:
    w, reader = pipe
    listener = PasteListener(reader, judge, out=io.StringIO()).start()
    os.write(w, GOOD.encode())
    os.close(w)
    assert listener.done.wait(10)
    assert listener.result is not None


def test_rule_4_end_of_input_only_closes_the_paste_path(pipe: tuple[int, io.TextIOWrapper]) -> None:
    w, reader = pipe
    out = io.StringIO()
    listener = PasteListener(reader, judge, out=out).start()
    os.close(w)
    assert listener.done.wait(10)
    assert listener.closed and listener.result is None
    assert "still waiting for the browser's callback" in out.getvalue()
    listener.stop()


def test_devnull_is_end_of_input() -> None:
    with open(os.devnull) as devnull:
        listener = PasteListener(devnull, judge, out=io.StringIO()).start()
        assert listener.done.wait(10)
        assert listener.closed


def test_stop_is_prompt_on_an_idle_pipe(pipe: tuple[int, io.TextIOWrapper]) -> None:
    _w, reader = pipe
    listener = PasteListener(reader, judge, out=io.StringIO()).start()
    started = time.monotonic()
    listener.stop()
    assert listener.done.wait(5)
    assert not listener.closed and listener.result is None
    assert time.monotonic() - started < 5


def test_listener_on_a_real_tty() -> None:
    controller, terminal = pty.openpty()
    with os.fdopen(terminal, "r", closefd=True) as tty:
        listener = PasteListener(tty, judge, out=io.StringIO()).start()
        os.write(controller, GOOD.encode() + b"\n")
        assert listener.done.wait(10)
        assert listener.result is not None and listener.result.code == "ac_123"
    os.close(controller)


# --------------------------------------------------------------------------- delivery to the server


def test_deliver_completes_the_wait_first_wins() -> None:
    import httpx2

    from oauth_callback.loopback import CallbackServer

    with CallbackServer("127.0.0.1", 0, expected_state=STATE) as server:
        verdict = judge_pasted(f"{server.redirect_uri}?code=ac_9&state={STATE}",
                               server.redirect_uri, STATE, None)
        assert isinstance(verdict, CallbackResult)
        assert server.deliver(verdict.params)
        assert not server.deliver({"code": "ac_other", "state": STATE})
        assert server.wait_for_callback(5, STATE).code == "ac_9"
        # The browser's callback, arriving late, cannot replace it.
        with pytest.raises(httpx2.TransportError):
            httpx2.get(f"{server.redirect_uri}?code=ac_late&state={STATE}", timeout=2)


def test_deliver_after_a_real_callback_changes_nothing() -> None:
    import httpx2

    from oauth_callback.loopback import CallbackServer

    with CallbackServer("127.0.0.1", 0, expected_state=STATE) as server:
        assert httpx2.get(f"{server.redirect_uri}?code=ac_real&state={STATE}", timeout=5).status_code == 200
        assert server.wait_for_callback(5, STATE).code == "ac_real"
        assert not server.deliver({"code": "ac_pasted", "state": STATE})
        assert server.wait_for_callback(5, STATE).code == "ac_real"
