"""The ``tokens.json`` document: parsing, validation and serialization (no I/O).

Format (version 1)::

    {
      "github": {"accessToken": "...", "refreshToken": "...", "expiresAt": 1767225600000,
                 "scope": "repo", "anyOtherField": "kept"},
      "other-app": {"accessToken": "..."},
      "$oauth_callback": {
        "version": 1,
        "clients": {"github": {"clientId": "...", "tokenEndpoint": "...", ...}},
        "sessions": {"github": {"codeVerifier": "...", "state": "..."}}
      }
    }

Every top-level key except ``$oauth_callback`` holds one token record in the
npm ``oauth-callback`` package's shape (``expiresAt`` in Unix milliseconds), so
the two packages can share one file. Records and fields this version does not
know are written back exactly as read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from json import decoder as json_decoder

from .._lazy import TYPE_CHECKING
from ..models import ClientInfo, OAuthSession, Tokens
from .base import Section

if TYPE_CHECKING:
    from typing import Any

__all__ = ["FORMAT_VERSION", "RESERVED_KEY", "Document", "DocumentError"]

RESERVED_KEY = "$oauth_callback"
FORMAT_VERSION = 1


class DocumentError(ValueError):
    """The bytes are not a valid store document. The message holds no secret."""


def _fragment(key: str, value: Any, *, indent: bool = False) -> bytes:
    """``"key": value`` as UTF-8: a token record on one line (the C encoder),
    the reserved object indented (it is small and read by people)."""
    text = _fragment_text(key, value, indent=indent, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800": valid JSON, not UTF-8) is kept as its escape.
        return _fragment_text(key, value, indent=indent, ensure_ascii=True).encode("ascii")


def _fragment_text(key: str, value: Any, *, indent: bool, ensure_ascii: bool) -> str:
    if indent:
        body = json.dumps(value, indent=2, ensure_ascii=ensure_ascii).replace("\n", "\n  ")
    else:
        body = json.dumps(value, ensure_ascii=ensure_ascii, separators=(", ", ": "))
    return json.dumps(key, ensure_ascii=ensure_ascii) + ": " + body


def _parse_section(
    meta: Mapping[str, Any], name: str, kind: Any, *, lenient: bool = False
) -> dict[str, Any]:
    raw = meta.get(name, {})
    if not isinstance(raw, dict):
        if lenient:
            return {}
        raise DocumentError(f"'{RESERVED_KEY}.{name}' must be an object")
    parsed: dict[str, Any] = {}
    for key, record in raw.items():
        value = _decode(kind, record, f"'{RESERVED_KEY}.{name}.{key}'", lenient=lenient)
        if value is not None:
            parsed[key] = value
    return parsed


def _decode(kind: Any, record: Any, where: str, *, lenient: bool) -> Any:
    """``kind.from_record(record)``; an invalid record is ``None`` (skipped) when
    ``lenient``, else a :class:`DocumentError` naming ``where``."""
    try:
        return kind.from_record(record)
    except ValueError as exc:
        if lenient:
            return None
        raise DocumentError(f"{where}: {exc}") from None


_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_scanstring: Callable[[str, int], tuple[str, int]] = json_decoder.scanstring  # type: ignore[attr-defined]


def _skip(text: str, i: int) -> int:
    match = _WS.match(text, i)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _parse_top_level(text: str) -> tuple[Any, dict[str, bytes] | None]:
    """``json.loads(text)``, plus, when the top level is an object, the source text
    of each member (``"key": value``) so unchanged records are written back as read.

    Raises ``json.JSONDecodeError`` like ``json.loads``.
    """
    i = _skip(text, 0)
    if not text.startswith("{", i):
        return json.loads(text), None
    members: dict[str, Any] = {}
    fragments: dict[str, bytes] = {}
    i = _skip(text, i + 1)
    if text.startswith("}", i):
        i += 1
    else:
        while True:
            if not text.startswith('"', i):
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes",
                                           text, i)
            key_start = i
            key, i = _scanstring(text, i + 1)
            key_text = text[key_start:i]
            i = _skip(text, i)
            if not text.startswith(":", i):
                raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
            i = _skip(text, i + 1)
            value, end = _DECODER.raw_decode(text, i)
            members[key] = value
            # Source text for key and value: written back exactly as read.
            fragments[key] = (key_text + ": " + text[i:end]).encode("utf-8", "surrogatepass")
            i = _skip(text, end)
            if text.startswith(",", i):
                i = _skip(text, i + 1)
                continue
            if text.startswith("}", i):
                i += 1
                break
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
    if _skip(text, i) != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return members, fragments


class Document:
    """An immutable parsed store. ``with_value`` returns a modified copy.

    Serialization is incremental: each top-level entry keeps its serialized
    text, so rewriting a large store after one change costs one record's
    ``json.dumps`` plus a join.
    """

    __slots__ = ("_entries", "_fragments", "clients", "meta", "newer_version", "sessions", "tokens")

    def __init__(
        self,
        entries: dict[str, Any],
        tokens: dict[str, Tokens],
        meta: dict[str, Any],
        clients: dict[str, ClientInfo],
        sessions: dict[str, OAuthSession],
        fragments: dict[str, bytes] | None = None,
    ) -> None:
        self._entries = entries  # raw top-level JSON values except the reserved key
        self.tokens = tokens
        self.meta = meta  # raw reserved object, without "clients"/"sessions"
        self.clients = clients
        self.sessions = sessions
        self._fragments = fragments if fragments is not None else {}
        version = meta.get("version", FORMAT_VERSION)
        self.newer_version = isinstance(version, int) and version > FORMAT_VERSION

    @classmethod
    def empty(cls) -> Document:
        """A store with nothing in it."""
        return cls({}, {}, {}, {}, {})

    @classmethod
    def parse(cls, data: bytes) -> Document:
        """Parse and validate a whole document; raise :class:`DocumentError`."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"not UTF-8 (byte {exc.start})") from None
        try:
            top, fragments = _parse_top_level(text)
        except json.JSONDecodeError as exc:
            raise DocumentError(
                f"not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno})"
            ) from None
        except RecursionError:
            raise DocumentError("not valid JSON (nested too deeply)") from None
        except (ValueError, TypeError, ArithmeticError, MemoryError) as exc:
            # e.g. an integer longer than sys.get_int_max_str_digits(): still corruption
            raise DocumentError(f"unreadable JSON ({type(exc).__name__})") from None
        if not isinstance(top, dict):
            raise DocumentError(f"top level is a JSON {type(top).__name__}, not an object")
        try:
            return cls._validate(top, fragments)
        except DocumentError:
            raise
        except (ValueError, ArithmeticError, TypeError) as exc:  # e.g. an int too big for a float
            raise DocumentError(f"unreadable value ({type(exc).__name__})") from None

    @classmethod
    def _validate(cls, top: dict[str, Any], fragments: dict[str, bytes] | None) -> Document:
        reserved = top.get(RESERVED_KEY)
        version = reserved.get("version") if isinstance(reserved, dict) else None
        # A newer format may shape records differently: read what this version
        # understands, skip the rest; such a document is never written back.
        lenient = (
            isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        )
        entries: dict[str, Any] = {}
        tokens: dict[str, Tokens] = {}
        meta: dict[str, Any] = {}
        clients: dict[str, ClientInfo] = {}
        sessions: dict[str, OAuthSession] = {}
        for key, value in top.items():
            if key == RESERVED_KEY:
                if not isinstance(value, dict):
                    raise DocumentError(f"'{RESERVED_KEY}' must be an object")
                if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                    raise DocumentError(f"'{RESERVED_KEY}.version' must be a positive integer")
                clients = _parse_section(value, "clients", ClientInfo, lenient=lenient)
                sessions = _parse_section(value, "sessions", OAuthSession, lenient=lenient)
                meta = {k: v for k, v in value.items() if k not in ("clients", "sessions")}
                continue
            token = _decode(Tokens, value, f"record {key!r}", lenient=lenient)
            if token is None:
                continue
            tokens[key] = token
            entries[key] = value
        if fragments is not None:
            fragments = {k: f for k, f in fragments.items() if k in entries or k == RESERVED_KEY}
        return cls(entries, tokens, meta, clients, sessions, fragments)

    def get(self, section: Section, key: str) -> Any:
        """The value under ``key`` in ``section`` or ``None``."""
        if section == "tokens":
            return self.tokens.get(key)
        if section == "clients":
            return self.clients.get(key)
        return self.sessions.get(key)

    def keys(self, section: Section) -> list[str]:
        """The keys of ``section`` in document order."""
        if section == "tokens":
            return list(self.tokens)
        if section == "clients":
            return list(self.clients)
        return list(self.sessions)

    def with_value(self, section: Section, key: str, value: Any) -> Document:
        """A copy with ``section[key]`` set to ``value`` (``None`` removes it)."""
        if section == "tokens":
            entries = dict(self._entries)
            tokens = dict(self.tokens)
            fragments = dict(self._fragments)
            fragments.pop(key, None)
            if value is None:
                entries.pop(key, None)
                tokens.pop(key, None)
            else:
                entries[key] = value.to_record()
                tokens[key] = value
            return Document(entries, tokens, self.meta, self.clients, self.sessions, fragments)
        fragments = {k: v for k, v in self._fragments.items() if k != RESERVED_KEY}
        clients = self.clients
        sessions = self.sessions
        if section == "clients":
            clients = dict(clients)
            if value is None:
                clients.pop(key, None)
            else:
                clients[key] = value
        else:
            sessions = dict(sessions)
            if value is None:
                sessions.pop(key, None)
            else:
                sessions[key] = value
        return Document(self._entries, self.tokens, self.meta, clients, sessions, fragments)

    def _meta_value(self) -> dict[str, Any] | None:
        if not self.clients and not self.sessions and not self.meta:
            return None
        value: dict[str, Any] = {"version": FORMAT_VERSION}
        value.update(self.meta)
        value["clients"] = {k: c.to_record() for k, c in self.clients.items()}
        value["sessions"] = {k: s.to_record() for k, s in self.sessions.items()}
        return value

    def serialize(self) -> bytes:
        """The document as UTF-8 JSON: one member per line (the reserved object
        indented), newline-terminated. Untouched members keep their text."""
        fragments = self._fragments
        parts: list[bytes] = []
        for key, value in self._entries.items():
            fragment = fragments.get(key)
            if fragment is None:
                fragment = fragments[key] = _fragment(key, value)
            parts.append(fragment)
        meta_fragment = fragments.get(RESERVED_KEY)
        if meta_fragment is None:
            meta = self._meta_value()
            if meta is not None:
                meta_fragment = fragments[RESERVED_KEY] = _fragment(RESERVED_KEY, meta, indent=True)
        if meta_fragment is not None:
            parts.append(meta_fragment)
        if not parts:
            return b"{}\n"
        return b"{\n  " + b",\n  ".join(parts) + b"\n}\n"
