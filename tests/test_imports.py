"""What importing the package and starting the CLI load, checked in fresh interpreters.

``import oauth_callback`` must stay cheap (issue 11): no HTTP client, TLS,
SQLite, browser, e-mail parsing, AnyIO or package metadata until a name that
needs them is used. Every check runs in a new subprocess, so what other tests
imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import oauth_callback
from oauth_callback.cli import _common as cli_common
from oauth_callback.storage import file as file_store

# Modules (and packages: any submodule counts) that must not be loaded.
HEAVY = ("httpx", "httpx2", "ssl", "_ssl", "sqlite3", "_sqlite3", "webbrowser", "email",
         "anyio", "importlib.metadata", "redis", "keyring", "mcp", "filelock")


def _loaded_after(code: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """The HEAVY modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = (
        "import json, sys\n"
        f"{code}\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if any(m == h or m.startswith(h + '.') for h in heavy))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_import_oauth_callback_is_light() -> None:
    assert _loaded_after("import oauth_callback") == []


def test_import_loads_only_errors_and_the_lazy_loader() -> None:
    probe = ("import sys, oauth_callback; "
             "print(sorted(m for m in sys.modules if m.startswith('oauth_callback')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "['oauth_callback', 'oauth_callback._lazy', 'oauth_callback.errors']"


def test_stores_import_lazily_by_name() -> None:
    # FileStore, MemoryStore and SQLiteStore load without the HTTP stack; SQLiteStore
    # brings sqlite3 (its job), RedisStore/KeyringStore their client libraries.
    assert _loaded_after("from oauth_callback import FileStore, MemoryStore, TokenStore") == []
    loaded = _loaded_after("from oauth_callback import SQLiteStore")
    assert "sqlite3" in loaded
    assert [m for m in loaded if "sqlite3" not in m] == []
    from oauth_callback import KeyringStore, RedisStore, SQLiteStore
    from oauth_callback.storage import keyring, redis, sqlite

    assert SQLiteStore is sqlite.SQLiteStore
    assert RedisStore is redis.RedisStore
    assert KeyringStore is keyring.KeyringStore


def test_every_public_name_resolves() -> None:
    for name in oauth_callback.__all__:
        assert getattr(oauth_callback, name) is not None, name
    assert set(oauth_callback.__all__) <= set(dir(oauth_callback))
    with pytest.raises(AttributeError, match="no_such_name"):
        oauth_callback.no_such_name


def test_cli_token_path_loads_no_http_stack(tmp_path) -> None:
    from oauth_callback import FileStore, Tokens

    path = str(tmp_path / "tokens.json")
    FileStore(path).set("k", Tokens(access_token="at-1", expires_at=time.time() + 3600))
    code = ("import contextlib, io\n"
            "from oauth_callback.cli import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    assert main(['--store', sys.argv[1], 'token', 'k']) == 0\n"
            "assert out.getvalue() == 'at-1\\n', out.getvalue()")
    assert _loaded_after(code, path) == []
    assert _loaded_after("from oauth_callback.cli import main\n"
                         "assert main(['--store', sys.argv[1], 'tokens', 'list']) == 0",
                         path) == []


def test_cli_store_env_var_is_the_stores() -> None:
    # The CLI names the variable in --help without importing the store module.
    assert cli_common.STORE_ENV_VAR == file_store.ENV_VAR
