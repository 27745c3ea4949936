"""The parser, the dispatch to the command modules, and the mapping of errors to exit codes.

Each command is named by ``(module, function)`` in the parser; its module is
imported only when that command runs, so ``--help`` and ``token KEY`` load
neither the HTTP client nor the login machinery.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

from .. import __version__
from ..errors import (
    CallbackError,
    DiscoveryError,
    EndpointError,
    IdTokenError,
    IssuerMismatchError,
    MissingCredentialsError,
    OAuthCallbackError,
    OAuthError,
    ReauthRequired,
    ResourceAccessError,
    StoreError,
)
from ._common import (
    EXIT_AUTH_FAILED,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_LOGIN_REQUIRED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    PROG,
    SECRET_ENV_VAR,
    STORE_ENV_VAR,
    CliError,
    err,
    log,
    opened_stores,
)

__all__ = ["build_parser", "main"]

# The token endpoint auth methods of protocol.AUTH_METHODS (a test keeps them equal),
# spelled out so that --help imports no protocol module.
AUTH_METHOD_CHOICES = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")


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


def _shared_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the command (``default=SUPPRESS`` on the latter)."""
    p = argparse.ArgumentParser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    p.add_argument("--store", metavar="URL_OR_PATH", default=default,
                   help="token store: a path or a store URL: file:PATH, sqlite:PATH, "
                   "keyring:[SERVICE], redis://[user:pass@]HOST[:PORT][/DB], rediss://... "
                   "(TLS), redis+cluster://HOST:PORT[,...], redis+sentinel://HOST:PORT[,...]"
                   "/SERVICE (rediss+cluster://, rediss+sentinel://: TLS), memory: (this "
                   "process only); any of them ?encryption=keyring|env:NAME|file:PATH; "
                   f"default ${STORE_ENV_VAR} or ~/.mcp/tokens.json")
    p.add_argument("-v", "--verbose", action="count",
                   default=argparse.SUPPRESS if suppress else 0,
                   help="log to stderr (-vv: debug)")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``oauth-callback`` command."""
    common = _shared_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[_shared_options(suppress=False)],
        description="OAuth 2.0 loopback login and token storage for command-line tools.",
        epilog="exit status: 0 ok, 1 failure or problems found, 2 usage, 3 login required, "
        "4 network/provider/store error, 5 authorization failed, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("login", parents=[common], help="log in (browser, paste-back or device "
                       "code) and store the tokens",
                       description="Log in and store the tokens: with a browser (authorization "
                       "code + PKCE on a loopback redirect URI), by pasting the redirect back "
                       "(--no-browser), or with a code entered on any device (--device, RFC "
                       "8628). Inside SSH or without a display the device flow is chosen when "
                       "the provider offers it, paste-back otherwise. Prints a one-line "
                       "summary, never the token.")
    p.add_argument("url", nargs="?", metavar="URL",
                   help="the server to log in to: an MCP server or other protected resource "
                   "(its authorization server is discovered, RFC 9728, and without "
                   "--client-id a client registered, RFC 7591), or an issuer; the key is "
                   "the URL's (the one 'browser_auth(URL)' uses)")
    where = p.add_argument_group("authorization server (URL, --issuer, or both endpoint URLs)")
    where.add_argument("--issuer", help="issuer URL; endpoints are discovered (RFC 8414)")
    where.add_argument("--authorize-url", metavar="URL", help="authorization endpoint")
    where.add_argument("--token-url", metavar="URL", help="token endpoint")
    p.add_argument("--client-id",
                   help="OAuth client id (default with --key: the one stored under KEY)")
    p.add_argument("--client-secret", metavar="SECRET",
                   help=f"client secret for confidential clients (safer: ${SECRET_ENV_VAR}, "
                   "since arguments are visible to other users in the process list)")
    p.add_argument("--scope", help="space-separated scopes to request")
    p.add_argument("--port", type=_port, default=0,
                   help="loopback port for the redirect URI (default 0: any free port)")
    p.add_argument("--key", help="store key (default: the URL's or issuer's host and path, "
                   "'http://' first for http, e.g. example.com/mcp); a key logged in "
                   "before needs no other flag: its issuer, client id, scope and port are reused")
    p.add_argument("--force", action="store_true",
                   help="replace the account stored under the key even if this login is "
                   "another account (another 'sub') of the same provider")
    how = p.add_argument_group(
        "how to log in (default: a browser here; inside SSH or without a display: the device "
        "flow when the provider offers it, else --no-browser)"
    ).add_mutually_exclusive_group()
    how.add_argument("--browser", action="store_true",
                     help="open a browser on this machine, even inside SSH")
    how.add_argument("--no-browser", action="store_true",
                     help="print the authorization URL; finish with the loopback callback or "
                     "by pasting the address the browser ends on (over SSH)")
    how.add_argument("--device", action="store_true",
                     help="device authorization grant (RFC 8628): enter a code on any device")
    p.add_argument("--device-url", metavar="URL",
                   help="device authorization endpoint (default: from the issuer's metadata)")
    p.add_argument("--qr", action="store_true",
                   help="with the device flow, always draw a QR code of the verification URL "
                   "(needs the qr extra; default: on a terminal when segno is installed)")
    p.add_argument("--json", action="store_true",
                   help="progress events on stdout, one JSON object per line (for wrappers)")
    p.add_argument("--timeout", type=_positive_float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the browser's callback (default 300)")
    p.add_argument("--auth-method", choices=AUTH_METHOD_CHOICES,
                   help="token endpoint client authentication (default: client_secret_basic "
                   "with a secret unless the server lists only client_secret_post; "
                   "private_key_jwt with --private-key; none without either)")
    m2m = p.add_argument_group(
        "machine to machine (no browser, no person: CI jobs, servers)")
    m2m.add_argument("--client-credentials", action="store_true",
                     help="use the client credentials grant (RFC 6749 4.4) instead of a "
                     f"browser login; the secret comes from ${SECRET_ENV_VAR} (read again "
                     "on every renewal) or the key from --private-key")
    m2m.add_argument("--private-key", metavar="FILE",
                     help="PEM private key for private_key_jwt (RFC 7523); its path is "
                     "recorded, never its content")
    m2m.add_argument("--signing-alg", choices=("ES256", "ES384", "RS256", "PS256"),
                     default="ES256", help="JWT signing algorithm for --private-key "
                     "(default ES256)")
    m2m.add_argument("--key-id", metavar="KID", help="'kid' header of the JWT assertions")
    m2m.add_argument("--resource", metavar="URL", action="append",
                     help="resource indicator (RFC 8707); repeatable")
    m2m.add_argument("--store-secret", action="store_true",
                     help="also store the client secret (only in an encrypted store or the "
                     "keychain); otherwise it is read from the environment on renewal")
    p.set_defaults(run=("login", "cmd_login"))

    p = sub.add_parser("status", parents=[common],
                       help="show the stored logins and whether they are usable",
                       description="For each key (or KEY): the account, provider, scopes, "
                       "access-token expiry, refresh token, store and whether the login is "
                       "usable. Exit 0 when every login is usable, 3 when one needs a new "
                       "login, 4 when --check could not reach the provider.")
    p.add_argument("key", metavar="KEY", nargs="?", help="only this key")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--check", action="store_true",
                   help="ask the provider: refresh when due, then userinfo when it has one")
    p.set_defaults(run=("accounts", "cmd_status"))

    p = sub.add_parser("logout", parents=[common],
                       help="revoke a login at the provider and remove it locally",
                       description="Revoke KEY's refresh and access tokens at the provider "
                       "(RFC 7009, when it has a revocation endpoint), then remove the tokens "
                       "and any pending session from the store, whether or not revoking "
                       "worked. The client registration is kept, so 'login --key KEY' logs "
                       "in again without other flags (--all removes it too). Exit 0 when "
                       "done, 4 when revoking failed (removed locally all the same).")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--all", action="store_true",
                   help="also remove the client registration (issuer, client id, scope)")
    p.add_argument("--no-revoke", action="store_true",
                   help="remove locally only; the grant stays valid at the provider")
    p.set_defaults(run=("accounts", "cmd_logout"))

    p = sub.add_parser("token", parents=[common], help="print a valid access token",
                       description="Print a valid access token for KEY on stdout, refreshing it "
                       "if needed, and nothing else: curl -H \"Authorization: Bearer "
                       "$(oauth-callback token KEY)\" ...")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--json", action="store_true",
                   help='print {"access_token": ..., "expires_at": ...} instead')
    p.set_defaults(run=("token", "cmd_token"))

    p = sub.add_parser("tokens", parents=[common],
                       help="list, show, delete and migrate stored tokens; make keys")
    tsub = p.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    q = tsub.add_parser("list", parents=[common], help="list stored tokens (no secrets)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(run=("tokens", "cmd_tokens_list"))
    q = tsub.add_parser("show", parents=[common], help="show one entry (secrets masked)")
    q.add_argument("key", metavar="KEY")
    q.add_argument("--reveal", action="store_true", help="print secrets instead of fingerprints")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(run=("tokens", "cmd_tokens_show"))
    q = tsub.add_parser("delete", parents=[common], help="delete the tokens of one key")
    q.add_argument("key", metavar="KEY")
    q.add_argument("--all", action="store_true",
                   help="also delete the key's client registration and pending session")
    q.set_defaults(run=("tokens", "cmd_tokens_delete"))
    q = tsub.add_parser("clear", parents=[common], help="delete everything in the store")
    q.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    q.set_defaults(run=("tokens", "cmd_tokens_clear"))
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
    q.set_defaults(run=("tokens", "cmd_tokens_migrate"))
    q = tsub.add_parser("keygen", parents=[common],
                        help="create an encryption key file (for ?encryption=file:PATH)",
                        description="Write a new random 32-byte key (base64url text) to PATH, "
                        "mode 0600, for store URLs with ?encryption=file:PATH; the same text "
                        "works in an environment variable for ?encryption=env:NAME. An "
                        "existing file is never overwritten. Prints the key id, never the key.")
    q.add_argument("path", metavar="PATH", help="the key file to create")
    q.set_defaults(run=("tokens", "cmd_tokens_keygen"))
    q = tsub.add_parser("import", parents=[common],
                        help="store a token read from stdin (e.g. from a secret manager)",
                        description="Read an access token, or a JSON token response (RFC 6749 "
                        "5.1, with refresh_token, expires_in, scope ...), from stdin and store "
                        "it under KEY; then 'token KEY' works as after a login. On a terminal "
                        "the token is read without echo. With --client-id and --issuer or "
                        "--token-url the client is stored too, so a refresh token can be used.")
    q.add_argument("key", metavar="KEY")
    q.add_argument("--expires-in", type=_positive_float, metavar="SECONDS",
                   help="lifetime of the access token from now (overrides expires_in)")
    q.add_argument("--scope", help="the token's scope (overrides the response's)")
    q.add_argument("--client-id", help="client id to refresh with (confidential when "
                   f"${SECRET_ENV_VAR} is set: read again at each refresh, never stored)")
    q.add_argument("--auth-method", choices=AUTH_METHOD_CHOICES,
                   help="how that client authenticates at the token endpoint")
    q.add_argument("--issuer", help="issuer URL of the client (endpoints are discovered)")
    q.add_argument("--token-url", metavar="URL", help="token endpoint of the client")
    q.add_argument("--overwrite", action="store_true", help="replace tokens stored under KEY")
    q.set_defaults(run=("tokens", "cmd_tokens_import"))

    p = sub.add_parser("doctor", parents=[common], help="check (and --repair) a file store",
                       description="Check a file store: modes and owners, parse state, backup, "
                       "stale temporary files, lock state, corrupt copies; and for an "
                       "encrypted store (?encryption=) of any backend, plaintext records and "
                       "records under another key. Exit 0 when healthy, "
                       "1 when problems were found.")
    p.add_argument("--repair", action="store_true", help="apply the safe fixes, then check again")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=("doctor", "cmd_doctor"))

    p = sub.add_parser("completion", help="print the shell completion script (bash, zsh, fish)",
                       description="Print the tab-completion script for SHELL (argcomplete). "
                       "bash: eval \"$(oauth-callback completion bash)\" in ~/.bashrc; "
                       "zsh: the same in ~/.zshrc; fish: oauth-callback completion fish | "
                       "source, in ~/.config/fish/config.fish.")
    p.add_argument("shell", metavar="SHELL", choices=("bash", "zsh", "fish"),
                   help="bash, zsh or fish")
    p.set_defaults(run=("completion", "cmd_completion"))

    p = sub.add_parser("demo", parents=[common], help="run the whole flow against a mock provider",
                       description="Start an embedded mock OAuth provider and run login, token "
                       "and an expiry-driven refresh end to end, in a temporary store unless "
                       "--store is given.")
    p.add_argument("--no-browser", "--headless", dest="no_browser", action="store_true",
                   help="never open a browser; follow the redirect headlessly "
                   "(automatic without a display)")
    p.add_argument("--keep", action="store_true", help="keep the temporary store directory")
    p.set_defaults(run=("demo", "cmd_demo"))
    return parser


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
    if isinstance(exc, (ReauthRequired, ResourceAccessError)):
        return EXIT_LOGIN_REQUIRED
    if isinstance(exc, MissingCredentialsError):
        return EXIT_USAGE
    if isinstance(exc, (StoreError, EndpointError, DiscoveryError)):
        return EXIT_UNAVAILABLE
    if isinstance(exc, (CallbackError, OAuthError, IdTokenError, IssuerMismatchError)):
        return EXIT_AUTH_FAILED
    return EXIT_FAILURE


# Library advice (Python API terms) and what it means on the command line.
_CLI_TERMS = (
    ("Run FileStore.repair() or 'oauth-callback doctor --repair'",
     f"run '{PROG} doctor --repair'"),
    ("pass port=0 to pick a free port", "use --port 0 to pick a free port"),
    ("; use port=0)", "; use --port 0)"),
    (" (OAuthClient.login saves it) or pass client= to TokenManager", ""),
)


def _message(exc: OAuthCallbackError) -> str:
    text = str(exc)
    for python, cli in _CLI_TERMS:
        text = text.replace(python, cli)
    if isinstance(exc, ReauthRequired):
        text += f"; log in again: {PROG} login --key {exc.key}"
    return text


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt,
    so every ``finally`` runs (a login removes its session from the store)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_TERMINATING = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _terminate(signum: int, frame: FrameType | None) -> None:
    for other in _TERMINATING:  # a second signal must not cut the clean-up short
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_end_like_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` while a command runs.

    Only where their disposition is the default: an ignored one (``nohup``
    ignores SIGHUP) stays ignored. Restored on exit (``main`` may run in-process).
    """
    previous: dict[int, Any] = {}
    try:
        for signum in _TERMINATING:
            if signal.getsignal(signum) is signal.SIG_DFL:
                previous[signum] = signal.signal(signum, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# The optional packages and the extras that install them (pyproject.toml).
_EXTRAS = {
    "keyring": "keyring",
    "redis": "redis",
    "cryptography": "encryption",
    "mcp": "mcp",
    "segno": "qr",
    "joserfc": "jwt",
    "requests": "requests",
}


def _missing_extra(exc: ImportError) -> str | None:
    """One line naming the extra to install, for an optional package that is missing;
    ``None`` for any other ImportError (a bug: shown with its traceback)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ImportError):
            text = str(seen)
            if "pip install 'oauth-callback[" in text:
                return text.splitlines()[0]
            top = (seen.name or "").partition(".")[0]
            if top in _EXTRAS:
                return (f"this needs the optional package {top!r}, which is not installed: "
                        f"pip install 'oauth-callback[{_EXTRAS[top]}]'")
        seen = seen.__cause__ or seen.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (cli.completion)
        from .completion import complete

        complete(parser)
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", 0) or 0)
    with _signals_end_like_ctrl_c():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    module_name, function_name = args.run
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
        func: Callable[[argparse.Namespace], int] = getattr(module, function_name)
        code = func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        print(f"\n{PROG}: terminated ({name})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImportError as exc:
        line = _missing_extra(exc)
        if line is None:
            raise
        log.debug("command failed", exc_info=True)
        err(line)
        return EXIT_USAGE
    except CliError as exc:
        err(str(exc))
        return exc.code
    except OAuthCallbackError as exc:
        log.debug("command failed", exc_info=True)
        err(_message(exc))
        return _exit_code(exc)
    except BrokenPipeError:
        # The reader went away (``| head``): exit quietly, without a second error at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except ValueError as exc:
        # Bad input the parser could not catch (an empty key, a malformed URL). Not
        # TypeError: that is a bug, and its traceback must show.
        log.debug("command failed", exc_info=True)
        err(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        log.debug("command failed", exc_info=True)
        err(f"[Errno {exc.errno}] {exc.strerror or exc}"
             + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_UNAVAILABLE
    finally:
        while opened_stores:
            with contextlib.suppress(Exception):
                opened_stores.pop().close()
