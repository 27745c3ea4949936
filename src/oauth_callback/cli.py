"""The ``oauth-callback`` command (also ``python -m oauth_callback``).

Commands: ``login``, ``token KEY``, ``tokens list|show|delete|clear|migrate``,
``doctor`` and ``demo``. Errors are printed as ``oauth-callback: error: ...``
on stderr. Nothing secret reaches stdout or stderr unless asked for:
``token KEY`` prints the access token (that is its job) and ``tokens show
--reveal`` prints every field; everything else shows fingerprints.

Exit status:

====  =====================================================================
0     success (``doctor``: the store is healthy)
1     failure: ``doctor`` found problems, a key does not exist, ``tokens
      clear`` was not confirmed
2     usage error (bad arguments)
3     login required: no tokens for the key, or the grant can no longer be
      refreshed (run ``oauth-callback login``)
4     network, provider or store error (token endpoint unreachable, store
      unreadable or corrupt, lock timeout)
5     authorization failed: the user or provider refused (an OAuth error
      such as access_denied or invalid_client), timed out, state mismatch,
      port in use
130   interrupted (Ctrl-C)
====  =====================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qs, urlsplit

from . import __version__
from . import doctor as doctor_mod
from .errors import (
    CallbackError,
    DiscoveryError,
    OAuthCallbackError,
    OAuthError,
    ReauthRequired,
    StoreError,
    TokenEndpointError,
)
from .loopback import no_graphical_display
from .models import ClientInfo, Tokens, fingerprint
from .storage import FileStore, TokenStore
from .storage.file import ENV_VAR
from .storage.url import open_store

if TYPE_CHECKING:
    from .flow import OAuthClient
    from .testing import MockProvider

__all__ = [
    "EXIT_AUTH_FAILED",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_LOGIN_REQUIRED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "build_parser",
    "human_expiry",
    "main",
]

PROG = "oauth-callback"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOGIN_REQUIRED = 3
EXIT_UNAVAILABLE = 4
EXIT_AUTH_FAILED = 5
EXIT_INTERRUPTED = 130

SECRET_ENV_VAR = "OAUTH_CALLBACK_CLIENT_SECRET"

log = logging.getLogger("oauth_callback.cli")


class CliError(Exception):
    """A failure to report as ``oauth-callback: error: <message>`` with exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- output helpers


def _err(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def human_duration(seconds: float) -> str:
    """``42 s``, ``59 min``, ``3 h``, ``12 d`` (rounded down)."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s} s"
    if s < 90 * 60:
        return f"{s // 60} min"
    if s < 48 * 3600:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def human_expiry(expires_at: float | None, now: float | None = None) -> str:
    """``in 59 min``, ``expired 3 h ago`` or ``never`` (no expiry known)."""
    if expires_at is None:
        return "never"
    delta = expires_at - (time.time() if now is None else now)
    if delta > 0:
        return f"in {human_duration(delta)}"
    return f"expired {human_duration(delta)} ago"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).isoformat(
        timespec="seconds"
    ).replace("+00:00", "Z")


def _local_time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _mode_line(path: str) -> str:
    st = os.stat(path)
    return f"{stat.filemode(st.st_mode)} ({stat.S_IMODE(st.st_mode):04o}) {path}"


class Progress:
    """A status line on stderr: a spinner with elapsed time on a TTY, one plain line otherwise."""

    FRAMES = "|/-\\"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._message = ""
        self._timeout: float | None = None

    def start(self, message: str, timeout: float | None = None) -> None:
        """Show ``message``; on a TTY animate it (elapsed / ``timeout`` s) until :meth:`stop`."""
        self._message = message
        self._timeout = timeout
        if not self.tty:
            limit = f" (timeout {timeout:g}s)" if timeout else ""
            print(f"{message}{limit} ...", file=self.stream, flush=True)
            return
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._spin, name="oauth-callback-spinner",
                                        daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        started = time.monotonic()
        i = 0
        while not self._stop.wait(0.1):
            elapsed = f"{int(time.monotonic() - started)}s"
            if self._timeout:
                elapsed += f" of {self._timeout:g}s"
            frame = self.FRAMES[i % len(self.FRAMES)]
            self.stream.write(f"\r{frame} {self._message} ({elapsed}, Ctrl-C to cancel)\x1b[K")
            self.stream.flush()
            i += 1

    def stop(self) -> None:
        """Stop the animation and clear the line (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=1.0)
        self.stream.write("\r\x1b[K")
        self.stream.flush()


# --------------------------------------------------------------------------- store access


def _open_store(args: argparse.Namespace) -> TokenStore:
    url: str | None = getattr(args, "store", None)
    if url is None:
        url = os.environ.get(ENV_VAR) or None
    try:
        store = open_store(url)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    _opened.append(store)
    return store


_opened: list[TokenStore] = []  # closed when main() returns


def _require_tokens(store: TokenStore, key: str) -> Tokens:
    tokens = store.get(key)
    if tokens is None:
        raise CliError(f"no tokens stored under {key!r} in {store.describe()}", EXIT_FAILURE)
    return tokens


# --------------------------------------------------------------------------- tokens ...


def _token_summary(store: TokenStore, key: str, tokens: Tokens) -> dict[str, Any]:
    client = store.get_client(key)
    expires_in = tokens.expires_in()
    return {
        "key": key,
        "expires_at": tokens.expires_at,
        "expires_at_iso": _iso(tokens.expires_at),
        "expires_in": None if expires_in is None else int(expires_in),
        "expired": tokens.is_expired(0.0),
        "scope": tokens.scope,
        "token_type": tokens.token_type,
        "has_refresh_token": tokens.refresh_token is not None,
        "access_token_fingerprint": fingerprint(tokens.access_token),
        "client_id": client.client_id if client else None,
        "issuer": client.issuer if client else None,
    }


def cmd_tokens_list(args: argparse.Namespace) -> int:
    """Print a table (or ``--json``) of the stored tokens, without secrets."""
    store = _open_store(args)
    rows: list[dict[str, Any]] = []
    keys = store.keys()
    for key in keys:
        tokens = store.get(key)
        if tokens is not None:
            rows.append(_token_summary(store, key, tokens))
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        _info(f"no tokens stored in {store.describe()}")
        return EXIT_OK
    table = [("KEY", "EXPIRES", "SCOPE", "REFRESH")]
    for row in rows:
        table.append((
            row["key"],
            human_expiry(row["expires_at"]),
            row["scope"] or "-",
            "yes" if row["has_refresh_token"] else "no",
        ))
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    for r in table:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return EXIT_OK


def _mask(value: str | None, reveal: bool) -> str | None:
    if value is None:
        return None
    return value if reveal else fingerprint(value)


def _mask_extra(extra: Any, reveal: bool) -> dict[str, Any]:
    """Extra fields: numbers, booleans, null as is; the rest fingerprinted unless ``reveal``."""
    out: dict[str, Any] = {}
    for name, value in dict(extra).items():
        if reveal or value is None or isinstance(value, (bool, int, float)):
            out[name] = value
        elif isinstance(value, str):
            out[name] = fingerprint(value)
        else:
            out[name] = fingerprint(json.dumps(value, sort_keys=True))
    return out


def _show_record(key: str, tokens: Tokens, client: ClientInfo | None,
                 reveal: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "key": key,
        "token_type": tokens.token_type,
        "access_token": _mask(tokens.access_token, reveal),
        "refresh_token": _mask(tokens.refresh_token, reveal),
        "expires_at": tokens.expires_at,
        "expires_at_iso": _iso(tokens.expires_at),
        "expires": human_expiry(tokens.expires_at),
        "scope": tokens.scope,
        "extra": _mask_extra(tokens.extra, reveal),
        "client": None,
    }
    if client is not None:
        record["client"] = {
            "client_id": client.client_id,
            "client_secret": _mask(client.client_secret, reveal),
            "issuer": client.issuer,
            "authorization_endpoint": client.authorization_endpoint,
            "token_endpoint": client.token_endpoint,
            "redirect_uri": client.redirect_uri,
            "scope": client.scope,
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
        }
    return record


def cmd_tokens_show(args: argparse.Namespace) -> int:
    """Print one entry; secrets as ``sha256:...`` fingerprints unless ``--reveal``."""
    store = _open_store(args)
    tokens = _require_tokens(store, args.key)
    record = _show_record(args.key, tokens, store.get_client(args.key), args.reveal)
    if args.json:
        print(json.dumps(record, indent=2))
        return EXIT_OK
    expires = "never (no expiry given)" if tokens.expires_at is None else (
        f"{_local_time(tokens.expires_at)} ({record['expires']})")
    lines: list[tuple[str, Any]] = [
        ("key", args.key),
        ("token type", tokens.token_type),
        ("access token", record["access_token"]),
        ("refresh token", record["refresh_token"] or "none"),
        ("expires", expires),
        ("scope", tokens.scope or "-"),
    ]
    for name, value in record["extra"].items():
        lines.append((f"extra {name}", value if isinstance(value, str) else json.dumps(value)))
    client = record["client"]
    if client is not None:
        lines.append(("client id", client["client_id"]))
        lines.append(("client secret", client["client_secret"] or "none (public client)"))
        for label, name in (("issuer", "issuer"),
                            ("authorization endpoint", "authorization_endpoint"),
                            ("token endpoint", "token_endpoint"),
                            ("redirect uri", "redirect_uri")):
            if client[name]:
                lines.append((label, client[name]))
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        print(f"{label + ':':<{width}} {value}")
    if not args.reveal:
        _info("(secrets are shown as fingerprints; use --reveal to print them)")
    return EXIT_OK


def cmd_tokens_delete(args: argparse.Namespace) -> int:
    """Delete the tokens under KEY (``--all``: also its client registration and session)."""
    store = _open_store(args)
    had_tokens = store.get(args.key) is not None
    had_client = args.all and store.get_client(args.key) is not None
    if not had_tokens and not had_client:
        raise CliError(f"no tokens stored under {args.key!r} in {store.describe()}")
    store.delete(args.key)
    what = "tokens"
    if args.all:
        store.delete_client(args.key)
        store.delete_session(args.key)
        what = "tokens and client registration"
    _info(f"deleted the {what} of {args.key!r} from {store.describe()}")
    return EXIT_OK


def cmd_tokens_clear(args: argparse.Namespace) -> int:
    """Delete everything in the store; asks on a TTY, refuses without ``--yes`` otherwise."""
    store = _open_store(args)
    n = len(store.keys())
    where = store.describe()
    if n == 0:
        _info(f"no tokens stored in {where}; nothing deleted")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(
                f"refusing to delete {n} token{'s' if n != 1 else ''} from {where} without "
                "confirmation: stdin is not a terminal; pass --yes"
            )
        sys.stderr.write(f"Delete {n} token{'s' if n != 1 else ''} from {where}? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            _info("nothing deleted")
            return EXIT_FAILURE
    store.clear()
    _info(f"deleted {n} token{'s' if n != 1 else ''} from {where}")
    return EXIT_OK


def _open_store_url(url: str, option: str) -> TokenStore:
    try:
        store = open_store(url)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}", EXIT_USAGE) from None
    _opened.append(store)
    return store


def cmd_tokens_migrate(args: argparse.Namespace) -> int:
    """Copy tokens, client registrations and sessions from ``--from`` to ``--to``, then verify.

    Exit 0 when every record is in the target; 1 on conflicts (kept unless
    ``--overwrite``), a requested key missing from the source, or a record
    that could not be copied or verified. Prints keys and counts, no secret.
    """
    from .storage.migrate import MigrationError, migrate

    source = _open_store_url(args.source, "--from")
    target = _open_store_url(args.target, "--to")
    failed: str | None = None
    try:
        report = migrate(source, target, keys=args.keys, overwrite=args.overwrite,
                         dry_run=args.dry_run)
    except MigrationError as exc:
        report = exc.report
        n = len(report.failures)
        failed = (f"{n} record{'s' if n != 1 else ''} could not be copied or failed "
                  "verification (listed above)")
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    if failed is not None:
        _err(failed)
        return EXIT_FAILURE
    if report.conflicts:
        n = len(report.conflicts)
        _err(f"{n} conflicting record{'s' if n != 1 else ''} left unchanged in the target "
             "(it holds different values); --overwrite replaces them")
        return EXIT_FAILURE
    if report.missing:
        _err("no record in the source for " + ", ".join(repr(k) for k in report.missing))
        return EXIT_FAILURE
    if not report.keys:
        _info(f"nothing to migrate: {report.source} holds no records")
    return EXIT_OK


# --------------------------------------------------------------------------- doctor

_LABELS = {
    doctor_mod.Severity.OK: "ok",
    doctor_mod.Severity.INFO: "info",
    doctor_mod.Severity.WARNING: "WARNING",
    doctor_mod.Severity.ERROR: "ERROR",
}


def _print_findings(findings: Sequence[doctor_mod.Finding]) -> None:
    for f in findings:
        print(f"  {_LABELS[f.severity]:<8} {f.message}")
        if f.fix and f.is_problem:
            print(f"  {'':<8} fix: {f.fix}")


def _summary(findings: Sequence[doctor_mod.Finding]) -> str:
    problems = [f for f in findings if f.is_problem]
    if not problems:
        return "No problems found."
    fixable = sum(1 for f in problems if f.repairable)
    s = "" if len(problems) == 1 else "s"
    hint = f" ({fixable} fixable with 'oauth-callback doctor --repair')" if fixable else ""
    return f"{len(problems)} problem{s} found{hint}."


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check a file store; exit 0 when healthy, 1 when problems remain (after ``--repair``)."""
    store = _open_store(args)
    if not isinstance(store, FileStore):
        raise CliError(f"doctor checks file stores only, not {store.describe()}", EXIT_USAGE)
    findings = doctor_mod.diagnose(store.path)
    report: dict[str, Any] = {"store": store.path,
                              "findings": [f.to_dict() for f in findings]}
    if not args.json:
        print(f"Checking token store {store.path}")
        _print_findings(findings)
        print(_summary(findings))
    if args.repair and doctor_mod.has_problems(findings):
        actions = doctor_mod.repair(store)
        findings = doctor_mod.diagnose(store.path)
        report["actions"] = actions
        report["after_repair"] = [f.to_dict() for f in findings]
        if not args.json:
            print("\nRepairing:")
            for action in actions or ["nothing could be repaired automatically"]:
                print(f"  - {action}")
            print("\nChecking again:")
            _print_findings(findings)
            print(_summary(findings))
    problems = doctor_mod.has_problems(findings)
    if args.json:
        report["healthy"] = not problems
        print(json.dumps(report, indent=2))
    return EXIT_FAILURE if problems else EXIT_OK


# --------------------------------------------------------------------------- token


def cmd_token(args: argparse.Namespace) -> int:
    """Print a valid access token for KEY, refreshing it when needed, and nothing else."""
    from .manager import TokenManager

    store = _open_store(args)
    if store.get(args.key) is None:
        raise CliError(
            f"no tokens stored under {args.key!r} in {store.describe()}; log in first: "
            f"{PROG} login --key {args.key} ...",
            EXIT_LOGIN_REQUIRED,
        )
    token = TokenManager(store, args.key).access_token()
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    return EXIT_OK


# --------------------------------------------------------------------------- login


def default_key(url: str) -> str:
    """The store key derived from an issuer or endpoint URL: its host, plus ``:port`` if given."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        raise CliError(f"cannot derive a key from {url!r}; pass --key", EXIT_USAGE)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _build_client(args: argparse.Namespace, secret: str | None) -> OAuthClient:
    from .flow import OAuthClient

    try:
        if args.issuer:
            return OAuthClient.discover(
                args.issuer, args.client_id, scope=args.scope, client_secret=secret
            )
        return OAuthClient(
            args.client_id,
            client_secret=secret,
            scope=args.scope,
            authorization_endpoint=args.authorize_url,
            token_endpoint=args.token_url,
        )
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _login_summary(key: str, tokens: Tokens, store: TokenStore) -> str:
    return (
        f"Logged in: key {key!r}, expires {human_expiry(tokens.expires_at)}, "
        f"scope {tokens.scope or '-'}, refresh token {'yes' if tokens.refresh_token else 'no'} "
        f"(stored in {store.describe()})"
    )


def cmd_login(args: argparse.Namespace) -> int:
    """Run the authorization code flow with PKCE on a loopback redirect and store the tokens."""
    from .loopback import open_url

    if args.issuer and (args.authorize_url or args.token_url):
        raise CliError("pass either --issuer or --authorize-url and --token-url", EXIT_USAGE)
    if not args.issuer and not (args.authorize_url and args.token_url):
        raise CliError("pass --issuer, or both --authorize-url and --token-url", EXIT_USAGE)
    if args.client_secret:
        log.warning("--client-secret on the command line is visible to other users of this "
                    "machine (process list, shell history); prefer $%s", SECRET_ENV_VAR)
    secret = args.client_secret or os.environ.get(SECRET_ENV_VAR) or None
    key = args.key or default_key(args.issuer or args.authorize_url)
    store = _open_store(args)
    client = _build_client(args, secret)
    progress = Progress()

    def show(url: str) -> None:
        if args.no_browser:
            open_url(url, False)
        else:
            if not no_graphical_display():
                _info("Opening the authorization page in your browser "
                      "(if none opens, run again with --no-browser) ...")
            open_url(url, True)
        redirect = parse_qs(urlsplit(url).query).get("redirect_uri", ["the loopback address"])[0]
        progress.start(f"Waiting for the authorization callback on {redirect}", args.timeout)

    try:
        tokens = client.login(store, key, port=args.port, open_browser=show,
                              timeout=args.timeout)
    finally:
        progress.stop()
    print(_login_summary(key, tokens, store))
    return EXIT_OK


# --------------------------------------------------------------------------- demo


def follow_authorization(url: str) -> int:
    """Complete an auto-approving authorization headlessly: GET ``url`` following redirects.

    Returns the status of the final response (the loopback callback page). It
    logs nothing (an HTTP library would log the callback URL with its code).
    """
    from .testing import follow_redirects

    return follow_redirects(url)


@contextlib.contextmanager
def _demo_store(args: argparse.Namespace) -> Iterator[TokenStore]:
    if getattr(args, "store", None) is not None:
        yield _open_store(args)
        return
    directory = tempfile.mkdtemp(prefix="oauth-callback-demo-")
    try:
        yield FileStore(os.path.join(directory, "tokens.json"))
    finally:
        if args.keep:
            _info(f"kept the demo store in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
            _info(f"removed the temporary store {directory} (--keep keeps it)")


def _step(n: int, text: str) -> None:
    print(f"\n[{n}] {text}", flush=True)


def _say(text: str) -> None:
    print(f"    {text}", flush=True)


def _demo_token(store: TokenStore, key: str, label: str) -> str:
    from .manager import TokenManager

    shown = f"--store {store.path} " if isinstance(store, FileStore) else ""
    _say(f"$ {PROG} {shown}token {key}    # {label}")
    token = TokenManager(store, key).access_token()
    _say(token)
    return token


def _run_demo(args: argparse.Namespace, provider: MockProvider, store: TokenStore) -> int:
    from .flow import OAuthClient

    key = "demo"
    headless = args.headless or no_graphical_display()
    _step(1, f"Started a mock OAuth provider at {provider.issuer}")
    _step(2, f"Token store: {store.describe()}")
    _step(3, "Discovering the provider's endpoints (RFC 8414)")
    client = OAuthClient.discover(provider.issuer, client_id=provider.client_id, scope="read")
    _say(f"authorization endpoint: {provider.authorization_endpoint}")
    _say(f"token endpoint:         {provider.token_endpoint}")
    _step(4, "Logging in: authorization code + PKCE on a loopback redirect URI")
    used: list[str] = []

    def show(url: str) -> None:
        if not headless:
            import webbrowser

            try:
                opened = webbrowser.open(url)
            except Exception:
                opened = False
            if opened:
                used.append("browser")
                _say("opened the authorization page in your browser; the mock provider approves "
                     "at once and redirects to the loopback callback (waiting up to 120 s; "
                     "--headless skips the browser)")
                return
            _say("could not open a browser")
        used.append("headless")
        _say("no browser here: completing the authorization headlessly by following the "
             "provider's redirect to the loopback callback")
        status = follow_authorization(url)
        _say(f"callback page answered HTTP {status}")

    tokens = client.login(store, key, port=0, open_browser=show, timeout=120.0)
    _say(f"stored tokens for {key!r}: access token {fingerprint(tokens.access_token)}, "
         f"expires {human_expiry(tokens.expires_at)}, scope {tokens.scope or '-'}, "
         f"refresh token {'yes' if tokens.refresh_token else 'no'}")
    _step(5, "Getting a token, the way scripts do")
    before = _demo_token(store, key, "valid: served from the store")
    _step(6, "Simulating expiry: the provider expires its access tokens and the stored "
             "expiry moves into the past")
    provider.expire_access_tokens()
    store.update(key, lambda t: None if t is None else t.replace(expires_at=time.time() - 1))
    expired = store.get(key)
    _say(f"stored token now {human_expiry(expired.expires_at if expired else None)}")
    _step(7, "Getting a token again: it is refreshed with the refresh token")
    after = _demo_token(store, key, "expired: refreshed, then stored")
    refreshed = provider.refresh_count
    changed = after != before
    _say(f"refreshed: {'yes' if refreshed and changed else 'NO'} "
         f"(provider refresh count {refreshed}, token changed: {'yes' if changed else 'no'})")
    current = store.get(key)
    if current is not None:
        _say(f"new expiry: {human_expiry(current.expires_at)}")
    _step(8, "Calling a protected resource with the token")
    from ._http import httpx2

    resp = httpx2.get(provider.userinfo_endpoint, headers={"Authorization": f"Bearer {after}"},
                      timeout=10.0)
    _say(f"GET {provider.userinfo_endpoint} -> HTTP {resp.status_code} {resp.text.strip()}")
    if isinstance(store, FileStore):
        _step(9, "The store on disk")
        _say(_mode_line(os.path.dirname(store.path)))
        _say(_mode_line(store.path))
        if os.path.exists(store.backup_path):
            _say(_mode_line(store.backup_path))
    ok = bool(refreshed) and changed and resp.status_code == 200
    print(f"\nDemo {'complete' if ok else 'FAILED'} ({used[0] if used else '?'} authorization).")
    return EXIT_OK if ok else EXIT_FAILURE


def cmd_demo(args: argparse.Namespace) -> int:
    """End-to-end flow against an embedded mock provider; prints each step."""
    from .testing import MockProvider

    with MockProvider(expires_in=3600) as provider, _demo_store(args) as store:
        return _run_demo(args, provider, store)


# --------------------------------------------------------------------------- parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535: {text!r}")
    return value


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the command (``default=SUPPRESS`` on the latter)."""
    p = argparse.ArgumentParser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    p.add_argument("--store", metavar="URL_OR_PATH", default=default,
                   help="token store: a path or a store URL (file:PATH, sqlite:PATH, "
                   f"redis://HOST, memory:); default ${ENV_VAR} or ~/.mcp/tokens.json")
    p.add_argument("-v", "--verbose", action="count",
                   default=argparse.SUPPRESS if suppress else 0,
                   help="log to stderr (-vv: debug)")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``oauth-callback`` command."""
    common = _common(suppress=True)
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[_common(suppress=False)],
        description="OAuth 2.0 loopback login and token storage for command-line tools.",
        epilog="exit status: 0 ok, 1 failure or problems found, 2 usage, 3 login required, "
        "4 network/provider/store error, 5 authorization failed, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("login", parents=[common], help="log in with a browser and store the tokens",
                       description="Run the authorization code flow with PKCE on a loopback "
                       "redirect URI and store the tokens. Prints a one-line summary, never the "
                       "token.")
    where = p.add_argument_group("authorization server (--issuer, or both endpoint URLs)")
    where.add_argument("--issuer", help="issuer URL; endpoints are discovered (RFC 8414)")
    where.add_argument("--authorize-url", metavar="URL", help="authorization endpoint")
    where.add_argument("--token-url", metavar="URL", help="token endpoint")
    p.add_argument("--client-id", required=True, help="OAuth client id")
    p.add_argument("--client-secret", metavar="SECRET",
                   help=f"client secret for confidential clients (safer: ${SECRET_ENV_VAR}, "
                   "since arguments are visible to other users in the process list)")
    p.add_argument("--scope", help="space-separated scopes to request")
    p.add_argument("--port", type=_port, default=0,
                   help="loopback port for the redirect URI (default 0: any free port)")
    p.add_argument("--key", help="store key (default: the issuer's host)")
    p.add_argument("--no-browser", action="store_true",
                   help="print the authorization URL instead of opening a browser")
    p.add_argument("--timeout", type=_positive_float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the authorization (default 300)")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("token", parents=[common], help="print a valid access token",
                       description="Print a valid access token for KEY on stdout, refreshing it "
                       "if needed, and nothing else: curl -H \"Authorization: Bearer "
                       "$(oauth-callback token KEY)\" ...")
    p.add_argument("key", metavar="KEY")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("tokens", parents=[common],
                       help="list, show, delete and migrate stored tokens")
    tsub = p.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    q = tsub.add_parser("list", parents=[common], help="list stored tokens (no secrets)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_tokens_list)
    q = tsub.add_parser("show", parents=[common], help="show one entry (secrets masked)")
    q.add_argument("key", metavar="KEY")
    q.add_argument("--reveal", action="store_true", help="print secrets instead of fingerprints")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_tokens_show)
    q = tsub.add_parser("delete", parents=[common], help="delete the tokens of one key")
    q.add_argument("key", metavar="KEY")
    q.add_argument("--all", action="store_true",
                   help="also delete the key's client registration and pending session")
    q.set_defaults(func=cmd_tokens_delete)
    q = tsub.add_parser("clear", parents=[common], help="delete everything in the store")
    q.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    q.set_defaults(func=cmd_tokens_clear)
    q = tsub.add_parser("migrate", parents=[common],
                        help="copy every token, client and session to another store",
                        description="Copy the tokens, client registrations and pending "
                        "sessions of one store into another (any two of file:PATH, "
                        "sqlite:PATH, redis://..., keyring:...), record by record, then read "
                        "every record back from the target to verify it. The source is never "
                        "modified. A record the target already holds with a different value "
                        "is a conflict: kept and reported (exit 1) unless --overwrite.")
    q.add_argument("--from", dest="source", metavar="URL", required=True,
                   help="the store to copy from (a path or a store URL)")
    q.add_argument("--to", dest="target", metavar="URL", required=True,
                   help="the store to copy into (a path or a store URL)")
    q.add_argument("--key", dest="keys", metavar="KEY", action="append",
                   help="migrate only this key (repeatable; default: every key)")
    q.add_argument("--overwrite", action="store_true",
                   help="replace records the target holds with a different value")
    q.add_argument("--dry-run", action="store_true",
                   help="only report what would be copied; write nothing")
    q.add_argument("--json", action="store_true", help="machine-readable report")
    q.set_defaults(func=cmd_tokens_migrate)

    p = sub.add_parser("doctor", parents=[common], help="check (and --repair) a file store",
                       description="Check a file store: modes and owners, parse state, backup, "
                       "stale temporary files, lock state, corrupt copies. Exit 0 when healthy, "
                       "1 when problems were found.")
    p.add_argument("--repair", action="store_true", help="apply the safe fixes, then check again")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("demo", parents=[common], help="run the whole flow against a mock provider",
                       description="Start an embedded mock OAuth provider and run login, token "
                       "and an expiry-driven refresh end to end, in a temporary store unless "
                       "--store is given.")
    p.add_argument("--headless", action="store_true",
                   help="never open a browser; follow the redirect headlessly "
                   "(automatic without a display)")
    p.add_argument("--keep", action="store_true", help="keep the temporary store directory")
    p.set_defaults(func=cmd_demo)
    return parser


# --------------------------------------------------------------------------- main


class _Formatter(logging.Formatter):
    """``oauth-callback: warning: ...`` (lower-case level, as the error lines)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if verbosity <= 0:
        handler.setFormatter(_Formatter())
        level = logging.WARNING
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        level = logging.INFO if verbosity == 1 else logging.DEBUG
    pkg = logging.getLogger("oauth_callback")
    pkg.handlers[:] = [handler]
    pkg.setLevel(level)
    pkg.propagate = False


def _exit_code(exc: OAuthCallbackError) -> int:
    if isinstance(exc, ReauthRequired):
        return EXIT_LOGIN_REQUIRED
    if isinstance(exc, (StoreError, TokenEndpointError, DiscoveryError)):
        return EXIT_UNAVAILABLE
    if isinstance(exc, (CallbackError, OAuthError)):
        return EXIT_AUTH_FAILED
    return EXIT_FAILURE


def _message(exc: OAuthCallbackError) -> str:
    text = str(exc)
    if isinstance(exc, ReauthRequired):
        text += f"; run '{PROG} login --key {exc.key} ...' again"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", 0) or 0)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CliError as exc:
        _err(str(exc))
        return exc.code
    except OAuthCallbackError as exc:
        log.debug("command failed", exc_info=True)
        _err(_message(exc))
        return _exit_code(exc)
    except BrokenPipeError:
        # The reader went away (``| head``): exit quietly, without a second error at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except (ValueError, TypeError) as exc:
        # Bad input the parser could not catch (an empty key, a malformed URL).
        log.debug("command failed", exc_info=True)
        _err(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        log.debug("command failed", exc_info=True)
        _err(f"[Errno {exc.errno}] {exc.strerror or exc}"
             + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_UNAVAILABLE
    finally:
        while _opened:
            with contextlib.suppress(Exception):
                _opened.pop().close()
