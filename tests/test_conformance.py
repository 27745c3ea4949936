"""The official MCP client conformance suite, run against our provider and the bare SDK.

``@modelcontextprotocol/conformance`` (pinned below; needs Node >= 22) starts a
test server per scenario and runs ``tests/conformance/client.py`` against it,
once with ``--impl ours`` (``oauth_callback.mcp``) and once with ``--impl sdk``
(the ``mcp`` SDK's own providers). The rule: **every scenario the bare SDK
passes, we pass.** The only expected failure is a bug of the suite's 0.1.16
mock, which fails for both (it is an ``xfail(strict=True)``: if it starts
passing, the test says so).

``.ci/run`` installs the suite and Node 22 into ``.ci/node`` (``npm install``);
elsewhere point ``$OAUTH_CALLBACK_CONFORMANCE`` at a ``conformance`` binary.
The per-scenario table is printed at the end of the run (``conftest``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITE_VERSION = "0.1.16"
CLIENT = ROOT / "tests" / "conformance" / "client.py"

# scenario -> why it is expected to fail for both implementations
EXPECTED_FAILURES = {
    "auth/2025-03-26-oauth-metadata-backcompat": (
        "bug of the suite's 0.1.16 mock: its metadata names an issuer that RFC 8414 3.3 "
        "forbids, so every compliant client (the bare SDK too) rejects it"
    ),
}

SCENARIOS = [
    "initialize",
    "tools_call",
    "elicitation-sep1034-client-defaults",
    "sse-retry",
    "auth/metadata-default",
    "auth/metadata-var1",
    "auth/metadata-var2",
    "auth/metadata-var3",
    "auth/basic-cimd",
    "auth/scope-from-www-authenticate",
    "auth/scope-from-scopes-supported",
    "auth/scope-omitted-when-undefined",
    "auth/scope-step-up",
    "auth/scope-retry-limit",
    "auth/token-endpoint-auth-basic",
    "auth/token-endpoint-auth-post",
    "auth/token-endpoint-auth-none",
    "auth/pre-registration",
    "auth/2025-03-26-oauth-metadata-backcompat",
    "auth/2025-03-26-oauth-endpoint-fallback",
    "auth/resource-mismatch",
    "auth/offline-access-scope",
    "auth/offline-access-not-supported",
    "auth/client-credentials-jwt",
    "auth/client-credentials-basic",
    "auth/cross-app-access-complete-flow",
]

# scenario -> {"ours": "13/13 passed", "sdk": ...}; printed by conftest's terminal summary
RESULTS: dict[str, dict[str, str]] = {}


def _conformance() -> Path | None:
    explicit = os.environ.get("OAUTH_CALLBACK_CONFORMANCE")
    if explicit:
        return Path(explicit)
    local = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "conformance"
    if local.exists():
        return local
    found = shutil.which("conformance")
    return Path(found) if found else None


CONFORMANCE = _conformance()


def _skip_reason() -> str | None:
    if sys.version_info < (3, 11):
        return "the mcp SDK needs Python 3.11+"
    try:
        import mcp  # noqa: F401
    except ImportError:
        return "the mcp SDK is not installed (pip install 'oauth-callback[mcp]')"
    if CONFORMANCE is None:
        return (
            "the MCP conformance suite is not installed (.ci/run installs it: "
            f"npm install --prefix .ci/node node@22 @modelcontextprotocol/conformance@{SUITE_VERSION})"
        )
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))]


def _env() -> dict[str, str]:
    assert CONFORMANCE is not None
    env = dict(os.environ)
    # The suite's own `node` (Node 22 from npm) first on PATH.
    env["PATH"] = f"{CONFORMANCE.parent}{os.pathsep}{env.get('PATH', '')}"
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run(scenario: str, impl: str, tmp_path: Path) -> tuple[bool, str, str]:
    """Run one scenario with one implementation: (passed, "x/y checks", output)."""
    assert CONFORMANCE is not None
    command = f"{sys.executable} {CLIENT} --impl {impl}"
    proc = subprocess.run(
        [str(CONFORMANCE), "client", "--command", command, "--scenario", scenario,
         "--timeout", "60000", "-o", str(tmp_path / impl)],
        capture_output=True, text=True, env=_env(), timeout=180, cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    m = re.search(r"Passed: (\d+)/(\d+)", out)
    checks = f"{m.group(1)}/{m.group(2)}" if m else "no checks"
    return proc.returncode == 0, checks, out


def test_pinned_scenarios_are_the_suites() -> None:
    """The list above is the suite's whole client list: a new scenario cannot go unrun."""
    assert CONFORMANCE is not None
    proc = subprocess.run([str(CONFORMANCE), "--version"], capture_output=True, text=True,
                          env=_env(), timeout=60)
    assert proc.stdout.strip() == SUITE_VERSION
    proc = subprocess.run([str(CONFORMANCE), "list", "--client"], capture_output=True,
                          text=True, env=_env(), timeout=60)
    listed = re.findall(r"^\s+- (\S+)", proc.stdout, re.MULTILINE)
    assert listed == SCENARIOS


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=EXPECTED_FAILURES[s]))
        if s in EXPECTED_FAILURES
        else s
        for s in SCENARIOS
    ],
)
def test_scenario(scenario: str, tmp_path: Path) -> None:
    sdk_ok, sdk_checks, sdk_out = _run(scenario, "sdk", tmp_path)
    ours_ok, ours_checks, ours_out = _run(scenario, "ours", tmp_path)
    RESULTS[scenario] = {
        "ours": f"{'pass' if ours_ok else 'FAIL'} {ours_checks}",
        "sdk": f"{'pass' if sdk_ok else 'FAIL'} {sdk_checks}",
    }
    if scenario in EXPECTED_FAILURES:
        assert not sdk_ok, f"the bare SDK now passes {scenario}: drop it from EXPECTED_FAILURES"
    else:
        assert sdk_ok, f"the bare SDK fails {scenario} (a harness problem?):\n{sdk_out[-3000:]}"
    assert ours_ok, f"oauth_callback.mcp fails {scenario}:\n{ours_out[-4000:]}"
    # The suite records one check per request it sees: as many as the bare SDK
    # means no needless request (e.g. no registration probe on a step-up, which
    # would mint an authorization code that is never used).
    assert ours_checks == sdk_checks, (scenario, ours_checks, sdk_checks)
