"""The pages people see, rendered in a real headless Chromium with their CSP and
security headers in force: our success and error pages, the mock provider's
consent and device pages, and a whole login clicked through in the browser.

Screenshots are saved under test-artifacts/screenshots/ (see tests/browser.py).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest

from oauth_callback import FileStore, OAuthClient
from oauth_callback.errors import CallbackTimeout, OAuthError
from oauth_callback.loopback import CallbackServer
from oauth_callback.testing import MockProvider

from .browser import Browser

STATE = "st_0123456789abcdefghijklmnop"
OUR_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def assert_our_security_headers(headers: dict[str, str]) -> None:
    assert headers["content-security-policy"] == OUR_CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"


def only_document(browser: Browser, url_prefix: str) -> dict[str, object]:
    docs = [d for d in browser.document_responses() if str(d["url"]).startswith(url_prefix)]
    assert len(docs) == 1, docs
    return docs[0]


def test_success_page_renders_under_its_csp(browser: Browser) -> None:
    with CallbackServer("127.0.0.1", 0, expected_state=STATE) as server:
        browser.open(f"{server.redirect_uri}?{urlencode({'code': 'ac_1', 'state': STATE})}")
        assert browser.title == "Authorization complete"
        assert "You can close this tab" in browser.text()
        # The inline stylesheet is allowed by the CSP and applied.
        assert browser.style("body", "background-color") == "rgba(244, 245, 247, 1)"
        assert browser.style(".icon", "color") == "rgba(26, 127, 55, 1)"
        doc = only_document(browser, server.redirect_uri)
        assert doc["status"] == 200
        assert_our_security_headers(doc["headers"])  # type: ignore[arg-type]
        assert browser.csp_violations() == []
        browser.screenshot("success-page")
        assert server.wait_for_callback(10, STATE).code == "ac_1"


def test_error_page_escapes_provider_text(browser: Browser) -> None:
    hostile = {
        "state": STATE,
        "error": "<script>document.title='pwned'</script>",
        "error_description": "<img src=x onerror=\"document.title='pwned'\"> & <b>bold</b>",
        "error_uri": "javascript:alert(1)",
    }
    with CallbackServer("127.0.0.1", 0, expected_state=STATE) as server:
        browser.open(f"{server.redirect_uri}?{urlencode(hostile)}")
        assert browser.title == "Authorization failed"
        text = browser.text()
        assert "<script>document.title='pwned'</script>" in text  # shown, as text
        assert "<img src=x onerror=\"document.title='pwned'\"> & <b>bold</b>" in text
        assert "javascript:alert(1)" in text
        assert browser.count("main script, main img, main b, main a") == 0
        assert browser.style(".icon", "color") == "rgba(207, 34, 46, 1)"
        doc = only_document(browser, server.redirect_uri)
        assert doc["status"] == 400
        assert_our_security_headers(doc["headers"])  # type: ignore[arg-type]
        assert browser.csp_violations() == []
        browser.screenshot("error-page")
        with pytest.raises(OAuthError) as info:
            server.wait_for_callback(10, STATE)
        assert info.value.error == hostile["error"]


def test_state_mismatch_page(browser: Browser) -> None:
    with CallbackServer("127.0.0.1", 0, expected_state=STATE) as server:
        browser.open(f"{server.redirect_uri}?code=ac_1&state=forged")
        assert browser.title == "Authorization failed"
        assert "does not belong to the sign-in" in browser.text()
        assert browser.csp_violations() == []
        browser.screenshot("state-mismatch-page")
        with pytest.raises(CallbackTimeout, match="1 callback"):  # ignored: the wait goes on
            server.wait_for_callback(0.2, STATE)


def test_csp_is_enforced_and_violations_are_seen(browser: Browser) -> None:
    """The harness is real: a page breaking our CSP is blocked and the violation reported."""
    page = "<!doctype html><title>before</title><script>document.title='ran'</script><p>x</p>"
    with CallbackServer("127.0.0.1", 0, expected_state=STATE, success_html=page) as server:
        browser.open(f"{server.redirect_uri}?code=ac_1&state={STATE}")
        assert browser.title == "before"  # the inline script did not run
        violations = browser.csp_violations()
        assert violations and "script" in violations[0]


def test_mock_consent_page_approve_lands_on_our_success_page(browser: Browser) -> None:
    with MockProvider(consent=True, require_pkce=False) as provider, CallbackServer(
        "127.0.0.1", 0, expected_state=STATE
    ) as server:
        query = urlencode({"response_type": "code", "client_id": provider.client_id,
                           "redirect_uri": server.redirect_uri, "state": STATE,
                           "scope": "read <b>"})
        browser.open(f"{provider.authorization_endpoint}?{query}")
        assert browser.title == "Authorize access"
        assert "requests scope read <b>" in browser.text()  # escaped
        doc = only_document(browser, provider.authorization_endpoint)
        csp = str(doc["headers"]["content-security-policy"])  # type: ignore[index]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert browser.csp_violations() == []
        browser.screenshot("mock-consent-page")
        browser.find("button[value=approve]").click()
        browser.wait_for_title("Authorization complete")
        # The form post redirected to the loopback page: allowed by form-action.
        assert browser.csp_violations() == []
        assert server.wait_for_callback(10, STATE).code


def test_mock_device_page_enter_code_and_approve(browser: Browser) -> None:
    import httpx2

    with MockProvider() as provider:
        data = httpx2.post(provider.device_authorization_endpoint,
                           data={"client_id": provider.client_id}).json()
        browser.open(provider.verification_uri)
        assert browser.title == "Connect a device"
        field = browser.find("#user_code")
        field.send_keys(data["user_code"].lower())
        assert browser.csp_violations() == []
        browser.screenshot("mock-device-page")
        browser.find("button[value=approve]").click()
        browser.wait_for_title("Device connected")
        assert browser.csp_violations() == []
        assert provider.stats["device_approvals"] == 1


def test_login_end_to_end_in_chromium(browser: Browser, tmp_path: Path) -> None:
    """OAuthClient.login opens the authorization URL in Chromium, the person
    approves on the consent page and lands on our success page; tokens stored."""
    with MockProvider(consent=True) as provider:
        client = OAuthClient(provider.client_id, issuer=provider.issuer, scope="read")
        store = FileStore(tmp_path / "tokens.json")
        urls: queue.Queue[str] = queue.Queue()
        cancel = threading.Event()  # a failing assertion must not leave the login waiting
        with ThreadPoolExecutor(1) as pool:
            login = pool.submit(client.login, store, "mock", open_browser=urls.put, timeout=60,
                                cancel=cancel)
            try:
                url = urls.get(timeout=30)
                browser.open(url)
                assert browser.title == "Authorize access"
                browser.find("button[value=approve]").click()
                browser.wait_for_title("Authorization complete")
                tokens = login.result(timeout=30)
            finally:
                cancel.set()
        assert browser.url.startswith("http://localhost:")
        browser.network()
        docs = browser.network_seen  # everything the browser loaded, for the headers
        final = [e for e in docs if e["method"] == "Network.responseReceived"
                 and e["params"]["response"]["url"].startswith("http://localhost:")]
        assert final, "the success page was not loaded from the loopback server"
        headers = {k.lower(): v for k, v in final[-1]["params"]["response"]["headers"].items()}
        assert_our_security_headers(headers)
        assert browser.csp_violations() == []
        assert [e for e in browser.console_seen if "Content Security Policy" in e["message"]] == []
        browser.screenshot("login-end-to-end")
        assert provider.is_access_token_active(tokens.access_token)
        assert store.get("mock") == tokens
        assert store.get_client("mock") is not None


def test_device_login_end_to_end_in_chromium(browser: Browser, tmp_path: Path) -> None:
    """OAuthClient.login_device shows a code; Chromium opens the verification URI,
    the person types the code and approves; the polling client gets the tokens."""
    from oauth_callback.device import DeviceAuthorization

    with MockProvider() as provider:
        provider.device_interval = 1
        client = OAuthClient(provider.client_id, issuer=provider.issuer, scope="read")
        store = FileStore(tmp_path / "tokens.json")
        shown: queue.Queue[DeviceAuthorization] = queue.Queue()
        cancel = threading.Event()  # a failing assertion must not leave the login polling
        with ThreadPoolExecutor(1) as pool:
            login = pool.submit(client.login_device, store, "dev", on_code=shown.put,
                                cancel=cancel)
            try:
                grant = shown.get(timeout=30)
                browser.open(grant.verification_uri)
                assert browser.title == "Connect a device"
                doc = only_document(browser, provider.verification_uri)
                csp = str(doc["headers"]["content-security-policy"])  # type: ignore[index]
                assert "default-src 'none'" in csp and "form-action 'self'" in csp
                browser.find("#user_code").send_keys(grant.user_code)
                browser.find("button[value=approve]").click()
                browser.wait_for_title("Device connected")
                assert browser.csp_violations() == []
                browser.screenshot("device-login-approved")
                tokens = login.result(timeout=60)
            finally:
                cancel.set()
        assert provider.is_access_token_active(tokens.access_token)
        assert store.get("dev") == tokens
        assert provider.stats["device_approvals"] == 1
        assert provider.stats["device_polls_too_fast"] == 0
