"""What importing the package and starting the CLI load, checked in fresh interpreters.

``import oauth_callback`` must stay cheap (issue 11): no HTTP client, TLS,
SQLite, browser, e-mail parsing, AnyIO or package metadata until a name that
needs them is used. Every check runs in a new subprocess, so what other tests
imported does not count.
"""

from __future__ import annotations

import json
import os
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


# What the start-up path of 'token KEY', 'tokens list' and '--help' also keeps out (issue 11
# item 11, benchmarks/bench_cli.py): each costs milliseconds next to a ~15 ms interpreter.
START_UP = ("logging", "dataclasses", "inspect", "typing", "shutil", "secrets", "hashlib",
            "urllib", "glob", "datetime", "importlib.metadata", "oauth_callback.storage.url",
            "oauth_callback.storage.migrate", "oauth_callback.storage.memory",
            "oauth_callback.flow", "oauth_callback.protocol", "oauth_callback.cli.login")


def _loaded_after(code: str, *args: str, env: dict[str, str] | None = None,
                  heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """The ``heavy`` modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = (
        "import json, sys\n"
        f"{code}\n"
        f"heavy = {heavy!r}\n"
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


def test_cli_start_up_loads_only_what_the_command_needs(tmp_path) -> None:
    from oauth_callback import FileStore, Tokens

    path = str(tmp_path / "tokens.json")
    FileStore(path).set("k", Tokens(access_token="at-1", refresh_token="rt",
                                    expires_at=time.time() + 3600))
    run = ("import contextlib, io\n"
           "from oauth_callback.cli import main\n"
           "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
           "    code = main(sys.argv[1:])\n")
    # A run that logged nothing leaves no logging set-up pending (main may run again in
    # the same process, with other options).
    assert _loaded_after(run + "assert code == 0 and out.getvalue() == 'at-1\\n'\n"
                         "from oauth_callback import _log\n"
                         "assert _log._setups == [], _log._setups",
                         "--store", path, "token", "k", heavy=START_UP) == []
    assert _loaded_after(run + "assert code == 0 and out.getvalue().startswith('KEY')",
                         "--store", path, "tokens", "list", heavy=START_UP) == []
    env = {**os.environ, "OAUTH_CALLBACK_STORE": path}
    assert _loaded_after(run + "assert code == 0", "token", "k", env=env, heavy=START_UP) == []
    help_run = ("import contextlib, io\n"
                "from oauth_callback.cli import main\n"
                "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
                "    try:\n"
                "        main(['--help'])\n"
                "    except SystemExit as exc:\n"
                "        assert exc.code == 0\n"
                "assert 'tokens' in out.getvalue() and 'completion' in out.getvalue()")
    assert _loaded_after(help_run, heavy=START_UP) == []


def test_cli_as_the_command_freezes_the_collector_before_exit(tmp_path) -> None:
    # main() without argv (the script, python -m) freezes the GC so that the shutdown
    # skips its last collections; main(argv), as a caller that runs on, never does.
    from oauth_callback import FileStore, Tokens

    path = str(tmp_path / "tokens.json")
    FileStore(path).set("k", Tokens(access_token="at-1", expires_at=time.time() + 3600))
    probe = ("import contextlib, gc, io, sys\n"
             "from oauth_callback.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    assert main(['--store', sys.argv[1], 'token', 'k']) == 0\n"
             "assert gc.get_freeze_count() == 0\n"
             "sys.argv[1:] = ['--store', sys.argv[1], 'token', 'k']\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
             "    assert main() == 0\n"
             "assert out.getvalue() == 'at-1\\n' and gc.get_freeze_count() > 0\n")
    done = subprocess.run([sys.executable, "-c", probe, path], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_storage_migrate_is_the_function_whatever_loads_first() -> None:
    # The package imports its names lazily; importing the submodule storage.migrate
    # first must not turn the package's 'migrate' into that module.
    probe = ("import types\n"
             "from oauth_callback.storage.migrate import RecordRef\n"
             "import oauth_callback.storage as storage\n"
             "from oauth_callback.storage import migrate\n"
             "assert not isinstance(storage.migrate, types.ModuleType), storage.migrate\n"
             "assert migrate is storage.migrate and callable(migrate)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_package_loggers_load_logging_on_first_use() -> None:
    # Every module takes its logger from _log.get_logger, so 'token KEY' imports no
    # logging, and the CLI's handler is set up before the first record (see _main).
    import pathlib

    src = pathlib.Path(oauth_callback.__file__).parent
    direct = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                    if "logging.getLogger(" in p.read_text(encoding="utf-8"))
    assert direct == ["_log.py", "cli/_logging.py", "mcp/_sdk_compat.py"]


def test_cli_store_env_var_is_the_stores() -> None:
    # The CLI names the variable in --help without importing the store module.
    assert cli_common.STORE_ENV_VAR == file_store.ENV_VAR
