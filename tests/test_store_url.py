"""Store URLs (storage/url.py): every scheme is known or an error, every parameter checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oauth_callback import FileStore, MemoryStore, Tokens, TokenStore
from oauth_callback.storage import url as url_module
from oauth_callback.storage.sqlite import SQLiteStore
from oauth_callback.storage.url import (
    SCHEMES,
    Parameter,
    StoreURL,
    open_store,
    parse_store_url,
    register_parameter,
)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a URL wrongly taken for a path would create files here


def _nothing_created(tmp_path: Path) -> None:
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("url", [
    "bogus:x", "bogus://x", "redis+clustr://127.0.0.1:7000,127.0.0.1:7001", "redis+tls://h:1",
    "foo.bar:x", "x-y://z", "s3://bucket/key", "HTTP://example.com/tokens",
])
def test_unknown_scheme_of_any_shape_is_an_error_listing_the_known_ones(
    url: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="unknown store URL scheme") as info:
        open_store(url)
    message = str(info.value)
    for name in SCHEMES:
        assert f"{name}:" in message
    assert "file:PATH" in message  # how to write a path that looks like a URL
    _nothing_created(tmp_path)


def test_near_misses_get_a_hint() -> None:
    with pytest.raises(ValueError, match=r"did you mean rediss:\?"):
        open_store("redis+tls://h:6380")


def test_paths_bare_and_file_urls(tmp_path: Path) -> None:
    assert open_store("tokens.json").path == str(tmp_path / "tokens.json")  # type: ignore[attr-defined]
    assert open_store("a?b=c%d").path == str(tmp_path / "a?b=c%d")  # type: ignore[attr-defined]
    assert open_store("C:\\tokens.json").path == str(tmp_path / "C:\\tokens.json")  # type: ignore[attr-defined]
    # A path that would look like a URL is written file:PATH (or ./PATH)
    assert open_store("file:redis+cluster:x").path == str(tmp_path / "redis+cluster:x")  # type: ignore[attr-defined]
    assert open_store("./bogus:x").path == str(tmp_path / "bogus:x")  # type: ignore[attr-defined]
    assert open_store(f"file://{tmp_path}/t.json").path == str(tmp_path / "t.json")  # type: ignore[attr-defined]
    # In a URL, ? starts the query: a literal ? or % is percent-encoded.
    assert open_store("file:a%3Fb%25c").path == str(tmp_path / "a?b%c")  # type: ignore[attr-defined]
    assert open_store("file:t.json?").path == str(tmp_path / "t.json")  # type: ignore[attr-defined]
    sqlite = open_store("sqlite:db%3F1.sqlite", durable=False)
    assert isinstance(sqlite, SQLiteStore) and sqlite.path == str(tmp_path / "db?1.sqlite")
    sqlite.close()
    assert isinstance(open_store("memory:"), MemoryStore)
    default = open_store("file:")
    assert isinstance(default, FileStore) and default.path == FileStore().path


@pytest.mark.parametrize("url", [
    "file:tokens.json?x=y", "file:tokens.json?encryption-typo=1", "sqlite:t.db?mode=ro",
    "memory:?a=b", "keyring:svc?x=1", "redis://127.0.0.1:1/0?bogus=1",
    "rediss://127.0.0.1:1/0?prefix=p&timeout=3",
])
def test_unknown_parameters_are_errors_naming_them(url: str, tmp_path: Path) -> None:
    name = url.rsplit("?", 1)[1].split("&")[-1].split("=")[0]
    with pytest.raises(ValueError, match=f"unknown parameter '{name}'") as info:
        open_store(url)
    assert "takes" in str(info.value)  # and says what the scheme takes
    _nothing_created(tmp_path)


def test_malformed_and_repeated_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="given twice"):
        open_store("redis://h/0?prefix=a&prefix=b")
    with pytest.raises(ValueError, match="not NAME=VALUE"):
        open_store("redis://h/0?prefix")
    with pytest.raises(ValueError, match="memory: takes nothing"):
        open_store("memory:x")
    with pytest.raises(ValueError, match="names no database"):
        open_store("sqlite:")
    _nothing_created(tmp_path)


def test_redis_parameter_values_are_checked_without_connecting() -> None:
    pytest.importorskip("redis")
    with pytest.raises(ValueError, match="socket_timeout='-1' must be a positive number"):
        open_store("redis://h/0?socket_timeout=-1")
    with pytest.raises(ValueError, match="need TLS"):
        open_store("redis://h/0?ssl_ca_certs=/etc/ssl/ca.pem")
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        open_store("rediss://h/0?ssl_cert_reqs=maybe")
    with pytest.raises(ValueError, match="must be true or false"):
        open_store("rediss://h/0?ssl_check_hostname=perhaps")
    store = open_store("rediss://h:6380/2?prefix=my%20app&ssl_cert_reqs=none&socket_timeout=0.5")
    assert store.prefix == "my app"  # type: ignore[attr-defined]
    assert store.describe() == "Redis h:6380/2 (prefix my app)"


def test_passwords_never_appear_in_url_errors() -> None:
    for url in (
        "redis://user:hunter2@h/0?bogus=1",
        "redis://:hunter2@h/0?prefix=a&prefix=b",
        "bogus://user:hunter2@h",
        "redis://u:hunter2@h/0?socket_timeout=x",
    ):
        with pytest.raises(ValueError) as info:
            open_store(url)
        assert "hunter2" not in str(info.value), url
    assert "hunter2" not in parse_store_url("redis://u:hunter2@h/0").display


class _Wrapped(MemoryStore):
    def __init__(self, inner: TokenStore, value: str) -> None:
        super().__init__()
        self.inner, self.value = inner, value


def test_a_parameter_of_every_scheme_is_registered_in_one_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What issue 17's ``encryption=`` does: one registration, every scheme, backends never see it."""
    seen: list[StoreURL] = []

    def wrap(store: TokenStore, value: str, url: StoreURL) -> TokenStore:
        seen.append(url)
        return _Wrapped(store, value)

    monkeypatch.setattr(url_module, "_PARAMETERS", dict(url_module._PARAMETERS))
    register_parameter(Parameter("wrapped", "a test wrapper", wrap=wrap))
    with pytest.raises(ValueError, match="already registered"):
        register_parameter(Parameter("wrapped", "again"))
    with pytest.raises(ValueError, match="every scheme"):
        register_parameter(Parameter("other", "x", frozenset({"file"}), wrap=wrap))

    for url, inner_type in [
        ("memory:?wrapped=v%2B1", MemoryStore),
        ("file:t.json?wrapped=v%2B1", FileStore),
        ("sqlite:t.db?wrapped=v%2B1", SQLiteStore),
    ]:
        store = open_store(url, durable=False)
        assert isinstance(store, _Wrapped) and isinstance(store.inner, inner_type)
        assert store.value == "v+1"  # percent-decoded
        store.inner.set("k", Tokens("at"))
        store.inner.close()
    if "redis" in SCHEMES:
        pytest.importorskip("redis")
        store = open_store("redis://h/0?prefix=p&wrapped=x")
        assert isinstance(store, _Wrapped) and store.inner.prefix == "p"  # type: ignore[attr-defined]
    assert all(s.params.get("wrapped") for s in seen)
    from oauth_callback.storage.redis import RedisStore

    with pytest.raises(ValueError, match=r"parameter 'wrapped' .* open_store"):
        RedisStore("redis://h/0?wrapped=x")  # the backend alone does not know it


@pytest.mark.parametrize("value", ["redis+cluster://127.0.0.1:7000,127.0.0.1:7001", "x-y:z", "sqlite:t.db"])
def test_filestore_default_path_refuses_store_urls_of_any_shape(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OAUTH_CALLBACK_STORE", value)
    with pytest.raises(ValueError, match="FileStore\\(\\) needs a path"):
        FileStore()
    _nothing_created(tmp_path)
