"""The command line under hostile input and signals: escaped output, SIGTERM/SIGHUP
clean-up, missing optional packages, and Ctrl-C however the tests are started.

Real subprocesses (``python -m oauth_callback``), a real MockProvider and file store.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from oauth_callback import ClientInfo, FileStore, Tokens
from oauth_callback.testing import MockProvider

from .conftest import ROOT, sigint_delivered

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.name != "posix", reason="POSIX signals and terminals"),
]

ESC = "\x1b"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.json"


@pytest.fixture
def env(tmp_path: Path, store_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["OAUTH_CALLBACK_STORE"] = str(store_path)
    e["HOME"] = str(tmp_path / "home")
    e.pop("OAUTH_CALLBACK_CLIENT_SECRET", None)
    return e


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oauth_callback", *args], capture_output=True,
                          stdin=subprocess.DEVNULL, text=True, env=env, timeout=60)


# --------------------------------------------------------------------------- escaped output


HOSTILE = f"read{ESC}]0;pwned{chr(7)} write{ESC}[2J\x9b31m"


def test_tokens_list_and_show_escape_control_characters(
    env: dict[str, str], store_path: Path
) -> None:
    store = FileStore(store_path)
    key = f"evil{ESC}[31mkey"
    store.set(key, Tokens("at-value", refresh_token="rt", scope=HOSTILE,
                          extra={f"note{ESC}[1m": f"x{ESC}[5my", "n": 1}))
    store.set_client(key, ClientInfo("cid", issuer=f"https://as.example/{ESC}[8m"))
    for args in (("tokens", "list"), ("tokens", "show", key), ("tokens", "show", key, "--reveal")):
        r = cli(env, *args)
        assert r.returncode == 0, r.stderr
        for stream in (r.stdout, r.stderr):
            assert ESC not in stream and "\x07" not in stream and "\x9b" not in stream, args
        assert "\\x1b" in r.stdout, args  # shown as an escape, not dropped
    shown = cli(env, "tokens", "show", key, "--reveal").stdout
    assert "\\x1b]0;pwned\\x07" in shown and "\\x9b31m" in shown
    assert "note\\x1b[1m" in shown  # extra field names too
    # --json keeps the values exactly (JSON escapes them itself).
    data = json.loads(cli(env, "tokens", "show", key, "--json", "--reveal").stdout)
    assert data["scope"] == HOSTILE and data["key"] == key


# --------------------------------------------------------------------------- signals


class Login:
    """``oauth-callback login --no-browser`` waiting for its callback."""

    def __init__(self, env: dict[str, str], provider: MockProvider) -> None:
        with sigint_delivered():
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oauth_callback", "login", "--authorize-url",
                 provider.authorization_endpoint, "--token-url", provider.token_endpoint,
                 "--client-id", provider.client_id, "--key", "k", "--no-browser"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=env,
            )
        self.lines: list[str] = []
        self._waiting: queue.Queue[bool] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "Waiting for the authorization callback" in line:
                self._waiting.put(True)
        self._waiting.put(False)

    def wait_until_waiting(self) -> None:
        try:
            ok = self._waiting.get(timeout=60)
        except queue.Empty:
            ok = False
        if not ok:
            self.proc.kill()
            raise AssertionError("login never waited:\n" + "".join(self.lines))

    def finish(self) -> tuple[int, str, str]:
        out, _ = self.proc.communicate(timeout=60)
        self._reader.join(timeout=10)
        return self.proc.returncode, out, "".join(self.lines)


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGHUP", 129),
                                               ("SIGINT", 130)])
def test_a_signal_during_login_removes_the_session(
    env: dict[str, str], store_path: Path, provider: MockProvider, name: str, status: int
) -> None:
    login = Login(env, provider)
    login.wait_until_waiting()
    session = FileStore(store_path).get_session("k")
    assert session is not None and session.code_verifier  # the verifier is in the store now
    login.proc.send_signal(getattr(signal, name))
    code, out, err = login.finish()
    assert code == status, err
    assert "Traceback" not in err and out == ""
    assert FileStore(store_path).get_session("k") is None  # ... and gone after the signal
    assert FileStore(store_path).get("k") is None


def test_an_ignored_sighup_stays_ignored(env: dict[str, str], store_path: Path,
                                         provider: MockProvider) -> None:
    """``nohup oauth-callback login``: SIGHUP is ignored, SIGTERM still cleans up."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # inherited across exec
    try:
        login = Login(env, provider)
    finally:
        signal.signal(signal.SIGHUP, previous)
    login.wait_until_waiting()
    login.proc.send_signal(signal.SIGHUP)
    login.proc.send_signal(signal.SIGTERM)
    code, _, err = login.finish()
    assert code == 143, err  # SIGTERM's status: the SIGHUP did nothing
    assert FileStore(store_path).get_session("k") is None


def test_ctrl_c_works_when_the_tests_run_with_sigint_ignored(
    env: dict[str, str], store_path: Path, provider: MockProvider
) -> None:
    """The cause of test_login_ctrl_c_exits_130's hangs: a test run started in the
    background (no job control) ignores SIGINT, and so did every CLI child it spawned.
    The CLI never lost a SIGINT it could receive; the tests now spawn children that can."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        login = Login(env, provider)  # spawned with sigint_delivered()
    finally:
        signal.signal(signal.SIGINT, previous)
    login.wait_until_waiting()
    login.proc.send_signal(signal.SIGINT)
    code, _, err = login.finish()
    assert code == 130, err
    assert FileStore(store_path).get_session("k") is None


# --------------------------------------------------------------------------- missing extras


BLOCKER = """
import os, sys
_blocked = set(filter(None, os.environ.get("OC_BLOCK_IMPORTS", "").split(",")))

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Blocker())
"""


@pytest.fixture
def without(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child in which the packages named in OC_BLOCK_IMPORTS are missing."""
    site = tmp_path / "block"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    blocked = dict(env)
    blocked["PYTHONPATH"] = str(site) + os.pathsep + env["PYTHONPATH"]
    return blocked


@pytest.mark.parametrize(
    ("package", "extra", "args"),
    [
        ("keyring", "keyring", ["--store", "keyring:oc-test", "tokens", "list"]),
        ("redis", "redis", ["--store", "redis://127.0.0.1:1/0", "tokens", "list"]),
        ("cryptography", "encryption", ["--store", "{store}?encryption=env:OC_KEY", "token",
                                        "k"]),
    ],
)
def test_a_missing_optional_package_is_one_line_naming_the_extra(
    without: dict[str, str], store_path: Path, package: str, extra: str, args: list[str]
) -> None:
    env = dict(without, OC_BLOCK_IMPORTS=package, OC_KEY="a" * 43)
    args = [a.replace("{store}", f"file:{store_path}") for a in args]
    r = cli(env, *args)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("oauth-callback: error: ")
    assert f"pip install 'oauth-callback[{extra}]'" in lines[0]
    assert r.returncode == 2  # the documented status of a usage/installation error
