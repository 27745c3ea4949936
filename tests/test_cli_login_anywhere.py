"""``oauth-callback login`` from anywhere: --device, --no-browser paste-back through a pipe,
the automatic choice inside SSH or without a display, --json events; ``demo --no-browser``.

Every test runs the real command in a subprocess against the in-process mock provider.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from oauth_callback import FileStore
from oauth_callback.testing import DEVICE_CODE_GRANT, MockProvider

from .conftest import sigint_delivered

ROOT = Path(__file__).resolve().parent.parent
CODE_RE = re.compile(r"^\s+([B-Z]{4}-[B-Z]{4})\s*$")


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.json"


@pytest.fixture
def env(store_path: Path) -> dict[str, str]:
    from .conftest import cli_env

    return cli_env(store_path)


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        p.device_interval = 1
        yield p


class Login:
    """``oauth-callback login ...`` in the background; stderr and stdout lines collected."""

    def __init__(self, env: dict[str, str], *args: str, stdin: int | None = subprocess.DEVNULL) -> None:
        with sigint_delivered():  # the Ctrl-C test's SIGINT must not be ignored by inheritance
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oauth_callback", "login", *args],
                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )
        self.err: list[str] = []
        self.out: list[str] = []
        self.found: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._read, args=(s, lines), daemon=True)
                         for s, lines in ((self.proc.stderr, self.err), (self.proc.stdout, self.out))]
        for t in self._threads:
            t.start()

    def _read(self, stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)
            match = CODE_RE.match(line)
            if match:
                self.found.put(("code", match.group(1)))
            for word in line.split():
                if word.startswith("http://127.0.0.1:") and "/authorize?" in word:
                    self.found.put(("url", word))
            if line.startswith("{"):
                event = json.loads(line)
                if event["event"] == "device_code":
                    self.found.put(("code", event["user_code"]))
        self.found.put(None)

    def wait_for(self, kind: str, timeout: float = 30) -> str:
        while True:
            try:
                item = self.found.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is None:
                self.proc.kill()
                raise AssertionError(f"no {kind} printed:\n" + "".join(self.err + self.out))
            if item[0] == kind:
                return item[1]

    def finish(self) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=60)
        for t in self._threads:
            t.join(timeout=5)
        return code, "".join(self.out), "".join(self.err)


def device_args(p: MockProvider, *extra: str) -> tuple[str, ...]:
    return ("--issuer", p.issuer, "--client-id", p.client_id, "--key", "k", "--scope", "read",
            *extra)


def test_login_device_prints_code_waits_and_stores(env: dict[str, str], store_path: Path,
                                                   provider: MockProvider) -> None:
    login = Login(env, *device_args(provider, "--device"))
    code = login.wait_for("code")
    assert provider.approve_device(code)
    status, out, err = login.finish()
    assert status == 0, err
    assert out.startswith("Logged in: key 'k'") and out.count("\n") == 1  # one line of result
    assert provider.verification_uri in err and f"user_code={code}" in err
    assert "Waiting for you to approve (the code expires in" in err
    tokens = FileStore(store_path).get("k")
    assert tokens is not None and tokens.access_token not in out + err
    device_code = next(r["device_code"] for r in provider.token_requests
                       if r.get("grant_type") == DEVICE_CODE_GRANT)
    assert device_code not in out + err
    token = subprocess.run([sys.executable, "-m", "oauth_callback", "token", "k"], env=env,
                           capture_output=True, text=True, timeout=30)
    assert token.stdout.strip() == tokens.access_token


def test_login_device_json_events(env: dict[str, str], provider: MockProvider) -> None:
    login = Login(env, *device_args(provider, "--device", "--json"))
    assert provider.approve_device(login.wait_for("code"))
    status, out, err = login.finish()
    assert status == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["method", "device_code", "logged_in"]
    assert events[0] == {"event": "method", "method": "device", "reason": None}
    code_event = events[1]
    assert code_event["verification_uri"] == provider.verification_uri
    assert code_event["interval"] == 1 and code_event["expires_in"] == 600
    assert "device_code" not in code_event
    done = events[2]
    assert done["key"] == "k" and done["refresh_token"] is True and done["scope"] == "read"


@pytest.mark.parametrize(("action", "needle"), [("deny", "access_denied"),
                                                ("expire", "expired_token")])
def test_login_device_denied_or_expired_exit_5(env: dict[str, str], store_path: Path,
                                               provider: MockProvider, action: str, needle: str) -> None:
    login = Login(env, *device_args(provider, "--device", "--json"))
    code = login.wait_for("code")
    if action == "deny":
        provider.deny_device(code)
    else:
        provider.expire_device_codes()
    status, out, err = login.finish()
    assert status == 5, err
    assert f"oauth-callback: error: {needle}" in err
    assert json.loads(out.splitlines()[-1])["error"] == needle
    assert FileStore(store_path).get("k") is None


def test_login_device_without_endpoint_one_clear_error(env: dict[str, str],
                                                       provider: MockProvider) -> None:
    provider.device_flow = False
    login = Login(env, *device_args(provider, "--device"))
    status, _out, err = login.finish()
    assert status == 4
    assert provider.issuer in err and "--no-browser" in err
    assert err.count("error:") == 1


def test_login_device_ctrl_c_exits_130(env: dict[str, str], store_path: Path,
                                       provider: MockProvider) -> None:
    provider.device_interval = 30
    login = Login(env, *device_args(provider, "--device"))
    login.wait_for("code")
    login.proc.send_signal(signal.SIGINT)
    status, out, err = login.finish()
    assert status == 130, err
    assert "Traceback" not in err and out == ""
    assert FileStore(store_path).get("k") is None


def redirect_of(url: str) -> str:
    response = httpx2.get(url, follow_redirects=False, timeout=10)
    assert response.status_code == 302
    return response.headers["location"]


def test_no_browser_paste_back_through_a_pipe(env: dict[str, str], store_path: Path,
                                              provider: MockProvider) -> None:
    login = Login(env, *device_args(provider, "--no-browser", "--timeout", "60"),
                  stdin=subprocess.PIPE)
    url = login.wait_for("url")
    landed = redirect_of(url)  # the browser on another machine shows this address
    assert login.proc.stdin is not None
    login.proc.stdin.write("hello\n")
    login.proc.stdin.write(landed.replace("state=", "state=zz") + "\n")
    login.proc.stdin.write(landed + "\n")
    login.proc.stdin.flush()
    status, out, err = login.finish()
    assert status == 0, err
    assert out.startswith("Logged in: key 'k'")
    assert "not a URL" in err and "belongs to another sign-in" in err
    assert "paste it here" in err
    assert FileStore(store_path).get("k") is not None


def test_no_browser_stdin_closed_still_takes_the_callback(env: dict[str, str],
                                                         provider: MockProvider) -> None:
    login = Login(env, *device_args(provider, "--no-browser", "--timeout", "60"))
    url = login.wait_for("url")
    assert httpx2.get(url, follow_redirects=True, timeout=10).status_code == 200
    status, _out, err = login.finish()
    assert status == 0, err
    assert "no more input on stdin" in err


def test_auto_choice_inside_ssh_prefers_the_device_flow(env: dict[str, str],
                                                        provider: MockProvider) -> None:
    env["SSH_CONNECTION"] = "10.0.0.2 50000 10.0.0.1 22"
    login = Login(env, *device_args(provider))
    assert provider.approve_device(login.wait_for("code"))
    status, _out, err = login.finish()
    assert status == 0, err
    reason = [line for line in err.splitlines() if "inside an SSH session" in line]
    assert len(reason) == 1 and "using the device flow" in reason[0]


def test_auto_choice_without_device_endpoint_is_paste_back(env: dict[str, str],
                                                           provider: MockProvider) -> None:
    provider.device_flow = False  # no display either (env has no DISPLAY)
    login = Login(env, *device_args(provider, "--timeout", "60"), stdin=subprocess.PIPE)
    url = login.wait_for("url")
    assert login.proc.stdin is not None
    login.proc.stdin.write(redirect_of(url) + "\n")
    login.proc.stdin.flush()
    status, _out, err = login.finish()
    assert status == 0, err
    assert "no graphical display: printing the URL" in err and "offers no device flow" in err


def test_browser_flag_overrides_the_automatic_choice(env: dict[str, str],
                                                     provider: MockProvider) -> None:
    env["SSH_TTY"] = "/dev/pts/9"
    login = Login(env, *device_args(provider, "--browser", "--timeout", "60"))
    url = login.wait_for("url")  # no display: the URL is printed, the loopback awaited
    assert httpx2.get(url, follow_redirects=True, timeout=10).status_code == 200
    status, _out, err = login.finish()
    assert status == 0, err
    assert "inside an SSH session" not in err
    assert provider.stats["device_authorizations"] == 0


def test_device_qr_code(env: dict[str, str], provider: MockProvider) -> None:
    pytest.importorskip("segno", reason="the qr extra (segno) draws the QR code")
    login = Login(env, *device_args(provider, "--device", "--qr"))
    assert provider.approve_device(login.wait_for("code"))
    status, _out, err = login.finish()
    assert status == 0, err
    assert "█" in err or "▀" in err


def test_demo_no_browser_shows_the_device_flow(env: dict[str, str], store_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "oauth_callback", "demo", "--no-browser"],
                       env=env, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the device flow (RFC 8628)" in r.stdout
    assert "and enter the code:" in r.stdout
    assert "stored tokens for 'demo-device'" in r.stdout and "client saved: yes" in r.stdout
    assert "Demo complete" in r.stdout
    assert not store_path.exists()
