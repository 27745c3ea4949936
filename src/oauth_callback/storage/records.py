"""The one codec between a stored JSON record and its model (no I/O).

Every backend that keeps records as JSON text (:class:`SQLiteStore`,
:class:`KeyringStore`, :class:`RedisStore`) encodes with :func:`encode_record`
and decodes with :func:`decode_record`, so they fail alike: any parse failure
of any kind (bad JSON, a number too long for ``int``, nesting too deep, a
record that does not fit the model) is a
:class:`~oauth_callback.errors.StoreCorruptError` naming the record, never a
raw ``ValueError``, and never quoting a stored value.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import StoreCorruptError
from ..models import ClientInfo, OAuthSession, Tokens
from .base import Section

__all__ = ["MODELS", "RecordError", "decode_record", "encode_record", "load_json"]

#: The model of each section.
MODELS: dict[str, Any] = {"tokens": Tokens, "clients": ClientInfo, "sessions": OAuthSession}

#: Everything a JSON parse or a model's ``from_record`` can raise on hostile input.
PARSE_ERRORS = (ValueError, TypeError, ArithmeticError, RecursionError, UnicodeError)


class RecordError(ValueError):
    """A stored record does not decode; the message says why and holds no stored value."""


def encode_record(record: Any) -> str:
    """``record`` (a JSON-ready value) as compact JSON text.

    UTF-8 text when it can be (readable); a string holding a lone surrogate
    (``"\\ud800"``, valid in JSON, not in UTF-8) is written as an ASCII escape
    instead, so every value round-trips.
    """
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, separators=(",", ":"))
    return text


def load_json(raw: str | bytes | bytearray) -> Any:
    """Parse JSON text; raise :class:`RecordError` for every failure."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise RecordError("not valid JSON (nested too deeply)") from None
    except PARSE_ERRORS as exc:  # e.g. an integer longer than sys.get_int_max_str_digits()
        raise RecordError(f"unreadable JSON ({type(exc).__name__})") from None


def decode_record(
    section: Section | str, raw: Any, *, what: str, path: str | None, hint: str
) -> Any:
    """The model of ``section`` stored as ``raw`` (JSON text, or an already parsed value).

    Raises :class:`StoreCorruptError`: ``"<what> is corrupt (<reason>); nothing
    was changed. <hint>"`` with ``path``.
    """
    try:
        if isinstance(raw, (str, bytes, bytearray)):
            raw = load_json(raw)
        elif isinstance(raw, memoryview):
            raw = load_json(bytes(raw))
        try:
            return MODELS[section].from_record(raw)
        except ValueError as exc:  # the models' messages name the field, never a value
            raise RecordError(str(exc)) from None
        except PARSE_ERRORS as exc:
            raise RecordError(f"unreadable record ({type(exc).__name__})") from None
    except RecordError as exc:
        raise corrupt(what, str(exc), path=path, hint=hint) from None


def corrupt(what: str, reason: str, *, path: str | None, hint: str) -> StoreCorruptError:
    """The :class:`StoreCorruptError` every decoder raises."""
    return StoreCorruptError(
        f"{what} is corrupt ({reason}); nothing was changed. {hint}".rstrip(), path=path
    )
