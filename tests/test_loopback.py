"""Real HTTP against the loopback callback server on 127.0.0.1 and ::1."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
import sys
import threading
import webbrowser
from urllib.parse import parse_qs, quote, urlsplit

import httpx2
import pytest

from oauth_callback.errors import (
    CallbackCancelled,
    CallbackTimeout,
    InsecureHostError,
    OAuthError,
    OAuthStateError,
    PortInUseError,
)
from oauth_callback.loopback import (
    CallbackResult,
    CallbackServer,
    RequestInfo,
    get_auth_code,
    get_auth_code_async,
    open_url,
)

pytestmark = pytest.mark.timeout(30)

CODE = "SplxlOBeZQQYbYS6WxSbIA"
STATE = "xyzSTATEvalue1234567890"


def _ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_available()
needs_ipv6 = pytest.mark.skipif(
    not HAS_IPV6, reason="IPv6 loopback (::1) is not available on this machine"
)

SECURITY_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "content-type": "text/html; charset=utf-8",
    "connection": "close",
}


@pytest.fixture
def client():
    with httpx2.Client(trust_env=False, timeout=5.0) as c:
        yield c


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_exchange(host: str, port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read the reply until the server closes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect((host, port))
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_security_headers(response: httpx2.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp


def callback_url(server: CallbackServer, base: str | None = None, **params: str) -> str:
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
    return f"{base or server.redirect_uri}?{query}"


# --------------------------------------------------------------------------- success


def test_success_on_ipv4_literal(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        assert server.redirect_uri == f"http://127.0.0.1:{server.port}/callback"
        response = client.get(
            callback_url(server, code=CODE, state=STATE, iss="https://issuer.example", x="1")
        )
        assert response.status_code == 200
        assert "close this tab" in response.text
        assert_security_headers(response)
        result = server.wait_for_callback(timeout=5, expected_state=STATE)
    assert result.code == CODE
    assert result.state == STATE
    assert result.iss == "https://issuer.example"
    assert dict(result.params) == {
        "code": CODE,
        "state": STATE,
        "iss": "https://issuer.example",
        "x": "1",
    }


@needs_ipv6
def test_success_on_ipv6_literal(client):
    with CallbackServer(host="::1", port=0) as server:
        assert server.redirect_uri == f"http://[::1]:{server.port}/callback"
        response = client.get(callback_url(server, code=CODE, state=STATE))
        assert response.status_code == 200
        result = server.wait_for_callback(timeout=5, expected_state=STATE)
    assert result.code == CODE


def test_port_zero_gives_real_port_in_redirect_uri():
    with CallbackServer(port=0) as server:
        match = re.fullmatch(r"http://localhost:(\d+)/callback", server.redirect_uri)
        assert match is not None
        assert int(match.group(1)) == server.port != 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass


@needs_ipv6
@pytest.mark.parametrize(("probe", "deliver"), [("127.0.0.1", "[::1]"), ("[::1]", "127.0.0.1")])
def test_localhost_listens_on_both_families(client, probe, deliver):
    with CallbackServer(host="localhost", port=0) as server:
        port = server.port
        headers = {"Host": f"localhost:{port}"}
        probe_response = client.get(f"http://{probe}:{port}/favicon.ico", headers=headers)
        assert probe_response.status_code == 404
        response = client.get(
            f"http://{deliver}:{port}/callback?code={CODE}&state={STATE}", headers=headers
        )
        assert response.status_code == 200
        assert server.wait_for_callback(timeout=5).code == CODE


# --------------------------------------------------------------------------- provider errors, state


def test_provider_error_raises_oauth_error(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        response = client.get(
            callback_url(
                server,
                error="access_denied",
                error_description="The user said no",
                error_uri="https://provider.example/errors/1",
                state=STATE,
            )
        )
        assert response.status_code == 400
        assert "access_denied" in response.text
        assert "The user said no" in response.text
        assert "close this tab" in response.text
        assert_security_headers(response)
        with pytest.raises(OAuthError) as excinfo:
            server.wait_for_callback(timeout=5, expected_state=STATE)
    assert excinfo.value.error == "access_denied"
    assert excinfo.value.description == "The user said no"
    assert excinfo.value.uri == "https://provider.example/errors/1"


def test_state_mismatch_known_at_construction(client):
    """A wrong state gets the error page and is ignored: the real callback still wins."""
    with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE) as server:
        response = client.get(callback_url(server, code=CODE, state="attacker-state"))
        assert response.status_code == 400
        assert "state_mismatch" in response.text
        with pytest.raises(CallbackTimeout) as excinfo:
            server.wait_for_callback(timeout=0.2)
        assert client.get(callback_url(server, code="real", state=STATE)).status_code == 200
        assert server.wait_for_callback(timeout=5).code == "real"
    message = str(excinfo.value)
    assert "1 callback(s) with a wrong or missing state were rejected" in message
    assert STATE not in message
    assert "attacker-state" not in message
    assert CODE not in message


def test_state_mismatch_given_only_to_wait(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        assert client.get(callback_url(server, code=CODE, state="other")).status_code == 200
        with pytest.raises(OAuthStateError):
            server.wait_for_callback(timeout=5, expected_state=STATE)


def test_missing_state_is_a_mismatch(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        client.get(callback_url(server, code=CODE))
        with pytest.raises(OAuthStateError):
            server.wait_for_callback(timeout=5, expected_state=STATE)


def test_duplicate_parameters_first_value_wins(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        client.get(f"{server.redirect_uri}?code=first&code=second&state={STATE}")
        result = server.wait_for_callback(timeout=5, expected_state=STATE)
    assert result.code == "first"
    assert result.params["code"] == "first"


# --------------------------------------------------------------------------- robustness


def test_noise_before_callback_does_not_end_the_flow(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert client.get(f"{base}/favicon.ico").status_code == 404
        assert client.get(f"{base}/").status_code == 404
        assert client.get(f"{base}/callback/extra?code=x").status_code == 404
        assert client.head(f"{base}/favicon.ico").status_code == 404
        for method in ("HEAD", "OPTIONS", "POST", "PUT", "DELETE"):
            response = client.request(method, f"{server.redirect_uri}?code=nope&state=nope")
            assert response.status_code == 405, method
            assert response.headers["allow"] == "GET"
            assert_security_headers(response)
        odd = f"GET //evil/callback?code=x HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"
        assert b" 404 " in raw_exchange("127.0.0.1", server.port, odd.encode()).split(b"\r\n")[0]
        garbage = raw_exchange("127.0.0.1", server.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.")
        assert b" 400 " in garbage.split(b"\r\n")[0]
        with pytest.raises(CallbackTimeout):
            server.wait_for_callback(timeout=0.05)
        assert client.get(callback_url(server, code=CODE, state=STATE)).status_code == 200
        result = server.wait_for_callback(timeout=5, expected_state=STATE)
    assert result.code == CODE


def test_idle_and_half_open_connections_do_not_block(client):
    with CallbackServer(host="127.0.0.1", port=0, connection_timeout=30.0) as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        half = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            partial = "GET /callback?code=evil&state=evil HTTP/1.1\r\n"
            half.sendall(f"{partial}Host: 127.0.0.1:{server.port}\r\n".encode())
            # A serial server would be stuck reading the idle connections for 30 s.
            response = client.get(callback_url(server, code=CODE, state=STATE))
            assert response.status_code == 200
            result = server.wait_for_callback(timeout=5, expected_state=STATE)
            assert result.code == CODE
            server.close()
            # close() drops the lingering connections instead of leaking them (an
            # idle one may never have been handed over: Linux's TCP_DEFER_ACCEPT
            # keeps it in the kernel; whatever it sends now is refused).
            for sock in (idle, half):
                try:
                    sock.sendall(b"\r\n")
                    assert sock.recv(1024) == b""
                except (ConnectionResetError, BrokenPipeError):
                    pass
        finally:
            idle.close()
            half.close()


@pytest.mark.parametrize(
    "host_header",
    [
        "evil.example:{port}",
        "attacker.example",
        "localhost:{other}",
        "127.0.0.1",
        "127.0.0.1.nip.io:{port}",
        "localhost:{port}.evil.example",
    ],
)
def test_wrong_host_header_rejected(client, host_header):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        port = server.port
        value = host_header.format(port=port, other=port + 1 if port < 65535 else port - 1)
        response = client.get(
            callback_url(server, code="rebound", state=STATE), headers={"Host": value}
        )
        assert response.status_code == 421
        assert_security_headers(response)
        assert client.get(callback_url(server, code=CODE, state=STATE)).status_code == 200
        assert server.wait_for_callback(timeout=5).code == CODE


def test_missing_or_repeated_host_header_rejected(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        port = server.port
        reply = raw_exchange("127.0.0.1", port, b"GET /callback?code=x HTTP/1.0\r\n\r\n")
        assert b" 400 " in reply.split(b"\r\n")[0]
        reply = raw_exchange(
            "127.0.0.1",
            port,
            b"GET /callback?code=x HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{port}\r\nHost: evil\r\n\r\n".encode(),
        )
        assert b" 400 " in reply.split(b"\r\n")[0]
        assert client.get(callback_url(server, code=CODE)).status_code == 200
        assert server.wait_for_callback(timeout=5).code == CODE


@pytest.mark.parametrize("host_name", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST"])
def test_every_loopback_host_name_accepted(client, host_name):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        response = client.get(
            callback_url(server, code=CODE), headers={"Host": f"{host_name}:{server.port}"}
        )
        assert response.status_code == 200
        assert server.wait_for_callback(timeout=5).code == CODE


def test_second_callback_cannot_change_the_result(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        assert client.get(callback_url(server, code=CODE, state=STATE)).status_code == 200
        first = server.wait_for_callback(timeout=5, expected_state=STATE)
        # The server stopped accepting once the callback arrived.
        with pytest.raises(httpx2.ConnectError):
            client.get(callback_url(server, code="second", state=STATE))
        again = server.wait_for_callback(timeout=5, expected_state=STATE)
    assert first.code == again.code == CODE


# --------------------------------------------------------------------------- pages and headers


def test_xss_in_error_fields_is_escaped_on_default_page(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        response = client.get(
            callback_url(
                server,
                error="<img src=x onerror=alert(1)>",
                error_description="<script>alert('xss')</script>",
                error_uri='javascript:alert(1)"><script>',
            )
        )
        with pytest.raises(OAuthError):
            server.wait_for_callback(timeout=5)
    body = response.text
    assert "<script>" not in body
    assert "<img" not in body
    assert "&lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


def test_custom_error_html_placeholders_are_escaped(client):
    template = (
        "<html><body><h1 id=e>{{error}}</h1><p>{{error_description}}</p>"
        '<a href="{{error_uri}}">more</a></body></html>'
    )
    with CallbackServer(host="127.0.0.1", port=0, error_html=template) as server:
        response = client.get(
            callback_url(
                server,
                error="<b>bad</b>",
                error_description="<script>x()</script>",
                error_uri='x" onclick="evil()',
            )
        )
        with pytest.raises(OAuthError):
            server.wait_for_callback(timeout=5)
    assert response.status_code == 400
    assert response.text == (
        "<html><body><h1 id=e>&lt;b&gt;bad&lt;/b&gt;</h1><p>&lt;script&gt;x()&lt;/script&gt;</p>"
        '<a href="x&quot; onclick=&quot;evil()">more</a></body></html>'
    )
    assert_security_headers(response)


def test_custom_success_html_served_as_given(client):
    page = "<html><body><b>Done, {{error}} stays literal</b></body></html>"
    with CallbackServer(host="127.0.0.1", port=0, success_html=page) as server:
        response = client.get(callback_url(server, code=CODE))
        server.wait_for_callback(timeout=5)
    assert response.text == page
    assert_security_headers(response)


def test_security_headers_on_every_response(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        responses = [
            client.get(f"http://127.0.0.1:{server.port}/favicon.ico"),
            client.options(server.redirect_uri),
            client.get(server.redirect_uri, headers={"Host": "evil.example"}),
            client.get(callback_url(server, code=CODE)),
        ]
        server.wait_for_callback(timeout=5)
    assert [r.status_code for r in responses] == [404, 405, 421, 200]
    for response in responses:
        assert_security_headers(response)


# --------------------------------------------------------------------------- timeout, cancel


def test_timeout_raises_callback_timeout():
    with CallbackServer(host="127.0.0.1", port=0) as server:
        with pytest.raises(CallbackTimeout) as excinfo:
            server.wait_for_callback(timeout=0.3)
        uri = server.redirect_uri
    assert isinstance(excinfo.value, TimeoutError)
    assert uri in str(excinfo.value)
    assert "0.3" in str(excinfo.value)


def test_cancel_event_from_another_thread():
    cancel = threading.Event()
    with CallbackServer(host="127.0.0.1", port=0) as server:
        timer = threading.Timer(0.1, cancel.set)
        timer.start()
        try:
            # Fails with CallbackTimeout (not CallbackCancelled) if cancel is ignored.
            with pytest.raises(CallbackCancelled):
                server.wait_for_callback(timeout=10, cancel=cancel)
        finally:
            timer.cancel()


def test_close_wakes_a_waiter():
    server = CallbackServer(host="127.0.0.1", port=0)
    server.start()
    timer = threading.Timer(0.1, server.close)
    timer.start()
    try:
        with pytest.raises(CallbackCancelled):
            server.wait_for_callback(timeout=10)
    finally:
        timer.cancel()
        server.close()


def test_wait_before_start_is_an_error():
    server = CallbackServer(host="127.0.0.1", port=0)
    with pytest.raises(RuntimeError):
        server.wait_for_callback(timeout=1)
    with pytest.raises(RuntimeError):
        _ = server.redirect_uri


# --------------------------------------------------------------------------- asyncio


@pytest.mark.asyncio
async def test_async_success(client):
    async with CallbackServer(host="127.0.0.1", port=0) as server:
        task = asyncio.create_task(server.wait_for_callback_async(timeout=5, expected_state=STATE))
        response = await asyncio.to_thread(client.get, callback_url(server, code=CODE, state=STATE))
        assert response.status_code == 200
        result = await task
    assert result.code == CODE


@pytest.mark.asyncio
async def test_async_provider_error(client):
    async with CallbackServer(host="127.0.0.1", port=0) as server:
        await asyncio.to_thread(client.get, callback_url(server, error="invalid_scope"))
        with pytest.raises(OAuthError) as excinfo:
            await server.wait_for_callback_async(timeout=5)
    assert excinfo.value.error == "invalid_scope"


@pytest.mark.asyncio
async def test_async_timeout():
    async with CallbackServer(host="127.0.0.1", port=0) as server:
        with pytest.raises(CallbackTimeout):
            await server.wait_for_callback_async(timeout=0.2)


@pytest.mark.asyncio
async def test_async_cancellation_propagates_and_frees_the_port():
    async with CallbackServer(host="127.0.0.1", port=0) as server:
        port = server.port
        task = asyncio.create_task(server.wait_for_callback_async(timeout=30))
        await asyncio.sleep(0)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with CallbackServer(host="127.0.0.1", port=port) as again:
        assert again.port == port


@pytest.mark.asyncio
async def test_get_auth_code_async_cancelled_closes_server():
    port = free_port()
    opened: list[str] = []
    task = asyncio.create_task(
        get_auth_code_async(
            "https://auth.example/authorize",
            host="127.0.0.1",
            port=port,
            open_browser=opened.append,
            timeout=30,
        )
    )
    for _ in range(500):  # the opener runs in a worker thread: wait until it ran
        if opened:
            break
        await asyncio.sleep(0.01)
    assert opened == ["https://auth.example/authorize"]
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with CallbackServer(host="127.0.0.1", port=port) as again:
        assert again.port == port


# --------------------------------------------------------------------------- binding


def test_port_in_use_raises():
    with CallbackServer(host="127.0.0.1", port=0) as first:
        with pytest.raises(PortInUseError) as excinfo:
            CallbackServer(host="127.0.0.1", port=first.port).start()
    assert excinfo.value.port == first.port
    assert "port=0" in str(excinfo.value)


@needs_ipv6
def test_localhost_port_in_use_on_ipv6_only_raises():
    with CallbackServer(host="::1", port=0) as v6:
        with pytest.raises(PortInUseError):
            with CallbackServer(host="localhost", port=v6.port):
                pass


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "[::]"])
def test_non_loopback_host_refused(host):
    with pytest.raises(InsecureHostError) as excinfo:
        CallbackServer(host=host, port=0)
    assert isinstance(excinfo.value, ValueError)
    assert "allow_non_loopback" in str(excinfo.value)


def test_non_loopback_opt_in_binds_wildcard(client):
    with CallbackServer(host="0.0.0.0", port=0, allow_non_loopback=True) as server:
        assert server.redirect_uri == f"http://localhost:{server.port}/callback"
        response = client.get(
            f"http://127.0.0.1:{server.port}/callback?code={CODE}",
            headers={"Host": f"localhost:{server.port}"},
        )
        assert response.status_code == 200
        assert server.wait_for_callback(timeout=5).code == CODE


# --------------------------------------------------------------------------- get_auth_code


def _deliver_from_authorization_url(client, code: str):
    """An ``open_browser`` callable that plays the provider: redirect back with ``code``."""
    threads: list[threading.Thread] = []
    seen: list[str] = []

    def open_browser(url: str) -> None:
        seen.append(url)
        query = parse_qs(urlsplit(url).query)
        target = f"{query['redirect_uri'][0]}?code={code}&state={query['state'][0]}"
        thread = threading.Thread(target=client.get, args=(target,), daemon=True)
        thread.start()
        threads.append(thread)

    return open_browser, threads, seen


def test_get_auth_code_with_callable_browser(client):
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/callback"
    url = f"https://auth.example/authorize?redirect_uri={quote(redirect, safe='')}&state={STATE}"
    opener, threads, seen = _deliver_from_authorization_url(client, CODE)
    result = get_auth_code(
        url, host="127.0.0.1", port=port, open_browser=opener, expected_state=STATE, timeout=5
    )
    for thread in threads:
        thread.join(5)
    assert seen == [url]
    assert result.code == CODE
    assert result.state == STATE
    with CallbackServer(host="127.0.0.1", port=port) as again:  # closed on return
        assert again.port == port


@pytest.mark.asyncio
async def test_get_auth_code_async_with_callable_browser(client):
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/callback"
    url = f"https://auth.example/authorize?redirect_uri={quote(redirect, safe='')}&state={STATE}"
    opener, threads, _ = _deliver_from_authorization_url(client, CODE)
    result = await get_auth_code_async(
        url, host="127.0.0.1", port=port, open_browser=opener, expected_state=STATE, timeout=5
    )
    for thread in threads:
        thread.join(5)
    assert result.code == CODE


def test_get_auth_code_closes_server_on_error(client):
    port = free_port()
    with pytest.raises(CallbackTimeout):
        get_auth_code(
            "https://a.example/",
            host="127.0.0.1",
            port=port,
            open_browser=lambda url: None,
            timeout=0.1,
        )
    with pytest.raises(RuntimeError, match="boom"):
        get_auth_code(
            "https://a.example/",
            host="127.0.0.1",
            port=port,
            open_browser=lambda url: (_ for _ in ()).throw(RuntimeError("boom")),
        )
    with CallbackServer(host="127.0.0.1", port=port) as again:
        assert again.port == port


def test_get_auth_code_open_browser_false_prints_url(capsys):
    url = "https://auth.example/authorize?client_id=abc"
    with pytest.raises(CallbackTimeout):
        get_auth_code(url, host="127.0.0.1", port=free_port(), open_browser=False, timeout=0.1)
    assert f"Open this URL in your browser: {url}" in capsys.readouterr().err


def test_open_url_true_uses_webbrowser(monkeypatch, capsys):
    opened: list[str] = []
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    open_url("https://auth.example/x", True)
    assert opened == ["https://auth.example/x"]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("failure", ["false", "raise"])
def test_open_url_prints_when_browser_fails(monkeypatch, capsys, failure):
    def fake_open(url):
        if failure == "raise":
            raise webbrowser.Error("no runnable browser")
        return False

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(webbrowser, "open", fake_open)
    open_url("https://auth.example/x", True)
    assert "Open this URL in your browser: https://auth.example/x" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="headless detection is Linux/BSD")
def test_open_url_headless_linux_prints_without_launching(monkeypatch, capsys):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    launched: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: launched.append(url) or True)
    open_url("https://auth.example/x", True)
    assert launched == []
    assert "Open this URL in your browser: https://auth.example/x" in capsys.readouterr().err


# --------------------------------------------------------------------------- no secrets leak


def test_on_request_gets_redacted_query(client):
    seen: list[RequestInfo] = []
    with CallbackServer(host="127.0.0.1", port=0, on_request=seen.append) as server:
        client.get(f"http://127.0.0.1:{server.port}/favicon.ico")
        client.get(
            callback_url(server, code=CODE, state=STATE),
            headers={
                "Cookie": "session=topsecret",
                "Referer": f"http://127.0.0.1:{server.port}/callback?code={CODE}",
            },
        )
        server.wait_for_callback(timeout=5)
    assert [(info.method, info.path) for info in seen] == [
        ("GET", "/favicon.ico"),
        ("GET", "/callback?code=<redacted>&state=<redacted>"),
    ]
    headers = seen[1].headers
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["cookie"] == "<redacted>"
    assert headers["referer"] == f"http://127.0.0.1:{server.port}/callback?code=<redacted>"
    assert CODE not in repr(seen)
    assert STATE not in repr(seen)


def test_on_request_unredacted_when_asked(client):
    seen: list[RequestInfo] = []
    with CallbackServer(
        host="127.0.0.1", port=0, on_request=seen.append, redact_query=False
    ) as server:
        client.get(callback_url(server, code=CODE, state=STATE))
        server.wait_for_callback(timeout=5)
    assert seen[0].path == f"/callback?code={CODE}&state={STATE}"


def test_callback_result_repr_hides_secrets():
    result = CallbackResult(code=CODE, state=STATE, iss=None, params={"code": CODE, "state": STATE})
    text = repr(result) + str(result)
    assert CODE not in text
    assert STATE not in text
    assert "code" in text
    assert "state" in text


def test_no_secrets_in_logs(client, caplog, capsys):
    caplog.set_level(logging.DEBUG, logger="oauth_callback")
    messages: list[str] = []

    def on_request(info: RequestInfo) -> None:
        raise RuntimeError(f"hook failed on {info.path}")  # logged by type only

    with CallbackServer(host="127.0.0.1", port=0, on_request=on_request) as server:
        client.get(f"http://127.0.0.1:{server.port}/x?code={CODE}")
        client.get(f"{server.redirect_uri}?code={CODE}", headers={"Host": "evil"})
        client.get(callback_url(server, code=CODE, state="wrong-" + STATE))
        with pytest.raises(OAuthStateError) as excinfo:
            server.wait_for_callback(timeout=5, expected_state=STATE)
        messages.append(str(excinfo.value))
    with CallbackServer(host="127.0.0.1", port=0) as server:
        client.get(callback_url(server, code=CODE, state=STATE))
        messages.append(repr(server.wait_for_callback(timeout=5, expected_state=STATE)))
    with CallbackServer(host="127.0.0.1", port=0) as server, pytest.raises(CallbackTimeout) as te:
        server.wait_for_callback(timeout=0.05)
    messages.append(str(te.value))
    captured = capsys.readouterr()
    everything = caplog.text + "\n".join(messages) + captured.out + captured.err
    assert "RuntimeError" in caplog.text  # the logs were captured at all
    assert CODE not in everything
    assert STATE not in everything


# --------------------------------------------------------------------------- dual stack


def _failing_ipv6(monkeypatch, err: int, times: int) -> list[int]:
    """Make the first ``times`` binds on ::1 fail with ``err``; return the ports tried."""
    import oauth_callback.loopback as loopback

    real_listen = loopback._listen
    tried: list[int] = []

    def listen(family, address, port):
        if family == socket.AF_INET6 and len(tried) < times:
            tried.append(port)
            raise OSError(err, "simulated")
        return real_listen(family, address, port)

    monkeypatch.setattr(loopback, "_listen", listen)
    return tried


def test_localhost_without_ipv6_serves_ipv4_only(monkeypatch, client):
    _failing_ipv6(monkeypatch, errno.EADDRNOTAVAIL, times=100)
    with CallbackServer(host="localhost", port=0) as server:
        assert server.redirect_uri == f"http://localhost:{server.port}/callback"
        response = client.get(
            f"http://127.0.0.1:{server.port}/callback?code={CODE}",
            headers={"Host": f"localhost:{server.port}"},
        )
        assert response.status_code == 200
        assert server.wait_for_callback(timeout=5).code == CODE


@needs_ipv6
def test_port_zero_retries_when_ipv6_side_is_taken(monkeypatch):
    tried = _failing_ipv6(monkeypatch, errno.EADDRINUSE, times=2)
    with CallbackServer(host="localhost", port=0) as server:
        assert len(tried) == 2
        with socket.create_connection(("::1", server.port), timeout=5):
            pass
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass


def test_fixed_port_taken_on_ipv6_side_is_port_in_use(monkeypatch):
    _failing_ipv6(monkeypatch, errno.EADDRINUSE, times=100)
    port = free_port()
    with pytest.raises(PortInUseError) as excinfo:
        CallbackServer(host="localhost", port=port).start()
    assert excinfo.value.port == port
    with CallbackServer(host="127.0.0.1", port=port) as again:  # the IPv4 socket was released
        assert again.port == port


def test_error_callback_without_the_state_is_a_state_error(client):
    """A page that sends the browser to our port cannot end the login with its own text."""
    with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE) as server:
        response = client.get(callback_url(server, error="access_denied",
                                            error_description="forged\x1b[31m text"))
        assert response.status_code == 400
        assert "forged" not in response.text and "state_mismatch" in response.text
        with pytest.raises(CallbackTimeout, match="1 callback"):
            server.wait_for_callback(timeout=0.2)  # ignored: the login goes on
        assert client.get(callback_url(server, code=CODE, state=STATE)).status_code == 200
        assert server.wait_for_callback(timeout=5).code == CODE


def test_provider_error_text_loses_control_characters(client):
    with CallbackServer(host="127.0.0.1", port=0) as server:
        client.get(callback_url(server, error="access_denied", state=STATE,
                                error_description="line1\nline2\x1b[31mRED"))
        with pytest.raises(OAuthError) as excinfo:
            server.wait_for_callback(timeout=5, expected_state=STATE)
    assert excinfo.value.description == "line1 line2 [31mRED"


def test_async_wait_works_under_trio(client):
    """The async twins are AnyIO-based: they run under trio as well as asyncio."""
    import anyio

    pytest.importorskip("trio", reason="trio is in the test extra; CI installs it")
    from oauth_callback import MemoryStore, Tokens

    async def main() -> str | None:
        store = MemoryStore()
        await store.set_async("k", Tokens("x"))
        async with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE) as server:
            url = callback_url(server, code=CODE, state=STATE)
            await anyio.to_thread.run_sync(client.get, url)
            result = await server.wait_for_callback_async(timeout=5)
        assert await store.get_async("k") == Tokens("x")
        return result.code

    assert anyio.run(main, backend="trio") == CODE
