"""Copy a whole store to another backend, then check the copy.

:func:`migrate` copies every token record, client registration and
authorization session of ``source`` into ``target`` (any two
:class:`~oauth_callback.storage.base.TokenStore` backends), record by record:

* Each record is written with one atomic compare-and-set on the target
  (``update`` / ``update_client`` / the session equivalent): a record the
  target does not have is copied, one it already holds with an equal value is
  left alone, and one it holds with a *different* value is a **conflict**:
  kept as it is and reported, unless ``overwrite=True``.
* Per key the client registration is written first, then the session, then
  the tokens, so a process using the target never sees tokens without the
  client needed to refresh them. The three records of a key are three atomic
  writes, not one (the store API has no multi-section transaction).
* Afterwards every record in scope is read back from the target and compared
  (``==`` of the :class:`Tokens` / :class:`ClientInfo` / :class:`OAuthSession`
  values, ``extra`` included) with the value read from the source. A mismatch
  raises :class:`MigrationVerifyError` (a :class:`StoreError`) carrying the
  full :class:`MigrationReport`.
* The source is only read, never written.
* ``dry_run=True`` reads both stores, classifies every record as above and
  writes nothing.

Migrate while no other process writes the stores (e.g. a token refresh): a
record changed in the target between the copy and the check fails the check,
and a record changed in the source after it was read is not copied again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..errors import MigrationError, MigrationVerifyError, StoreCorruptError
from .base import Section, TokenStore

__all__ = [
    "SECTIONS",
    "MigrationError",
    "MigrationFailure",
    "MigrationReport",
    "MigrationVerifyError",
    "Outcome",
    "RecordRef",
        "migrate",
]

#: The order records of one key are written in (client before tokens).
SECTIONS: tuple[Section, ...] = ("clients", "sessions", "tokens")

Outcome = Literal["copied", "overwritten", "identical", "conflict"]

_NOUN: Mapping[Section, str] = {"tokens": "tokens", "clients": "client", "sessions": "session"}


class RecordRef(NamedTuple):
    """One record: its section (``tokens``, ``clients``, ``sessions``) and store key."""

    section: Section
    key: str

    def __str__(self) -> str:
        return f"{_NOUN[self.section]} of {self.key!r}"


@dataclass(frozen=True)
class MigrationFailure:
    """A record that could not be read, written or verified. ``reason`` holds no secret."""

    section: Section
    key: str
    stage: Literal["read", "write", "verify"]
    reason: str

    def __str__(self) -> str:
        return f"{RecordRef(self.section, self.key)}: {self.stage} failed: {self.reason}"


@dataclass
class MigrationReport:
    """What :func:`migrate` did (or, for a dry run, would do). No field holds a secret.

    ``copied``: written where the target had nothing; ``overwritten``: written
    over a different value (``overwrite=True``); ``identical``: the target
    already held an equal value; ``conflicts``: the target holds a different
    value, left alone; ``verified``: read back from the target equal to the
    source; ``failures``: records that could not be read, written or
    verified; ``missing``: requested keys the source has no record of.
    """

    source: str
    target: str
    dry_run: bool = False
    overwrite: bool = False
    copied: list[RecordRef] = field(default_factory=list)
    overwritten: list[RecordRef] = field(default_factory=list)
    identical: list[RecordRef] = field(default_factory=list)
    conflicts: list[RecordRef] = field(default_factory=list)
    verified: list[RecordRef] = field(default_factory=list)
    failures: list[MigrationFailure] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every record is (or would be) in the target: no conflict, failure or miss."""
        return not (self.conflicts or self.failures or self.missing)

    @property
    def keys(self) -> list[str]:
        """The store keys the migration looked at, in the order they were processed."""
        seen: dict[str, None] = {}
        for ref in (*self.copied, *self.overwritten, *self.identical, *self.conflicts):
            seen.setdefault(ref.key, None)
        for failure in self.failures:
            seen.setdefault(failure.key, None)
        return list(seen)

    def counts(self) -> dict[str, int]:
        """Number of records per outcome."""
        return {
            "keys": len(self.keys),
            "copied": len(self.copied),
            "overwritten": len(self.overwritten),
            "identical": len(self.identical),
            "conflicts": len(self.conflicts),
            "verified": len(self.verified),
            "failures": len(self.failures),
            "missing": len(self.missing),
        }

    def summary(self) -> str:
        """A few human-readable lines (keys and counts, never a secret)."""
        c = self.counts()
        would = "would be " if self.dry_run else ""
        head = "Dry run: nothing written. " if self.dry_run else ""
        rows = [
            (f"{would}copied", str(c["copied"])),
            (f"{would}overwritten", str(c["overwritten"])),
            ("identical", f"{c['identical']} (already in the target)"),
            ("conflicts", f"{c['conflicts']}"
             + ("" if self.overwrite or not self.conflicts else " (kept; --overwrite replaces)")),
        ]
        if not self.dry_run:
            rows.append(("verified", str(c["verified"])))
        width = max(len(label) for label, _ in rows) + 1
        lines = [
            f"{head}Migration from {self.source} to {self.target}: {c['keys']} "
            f"key{'s' if c['keys'] != 1 else ''}",
            *(f"  {label + ':':<{width}} {value}" for label, value in rows),
        ]
        lines.extend(f"  conflict: {ref}" for ref in self.conflicts)
        lines.extend(f"  FAILED: {failure}" for failure in self.failures)
        lines.extend(f"  missing: no record of {key!r} in the source" for key in self.missing)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (keys and outcomes only)."""

        def refs(items: list[RecordRef]) -> list[dict[str, str]]:
            return [{"section": r.section, "key": r.key} for r in items]

        return {
            "source": self.source,
            "target": self.target,
            "dry_run": self.dry_run,
            "overwrite": self.overwrite,
            "ok": self.ok,
            "counts": self.counts(),
            "copied": refs(self.copied),
            "overwritten": refs(self.overwritten),
            "identical": refs(self.identical),
            "conflicts": refs(self.conflicts),
            "verified": refs(self.verified),
            "failures": [
                {"section": f.section, "key": f.key, "stage": f.stage, "reason": f.reason}
                for f in self.failures
            ],
            "missing": list(self.missing),
        }


def _describe(store: TokenStore) -> str:
    return f"{type(store).__name__}({store.describe()})"


def _reader(store: TokenStore, section: Section) -> Callable[[str], Any]:
    readers: dict[Section, Callable[[str], Any]] = {
        "tokens": store.get,
        "clients": store.get_client,
        "sessions": store.get_session,
    }
    return readers[section]


def _updater(store: TokenStore, section: Section) -> Callable[[str, Callable[[Any], Any]], Any]:
    if section == "tokens":
        return store.update
    if section == "clients":
        return store.update_client
    return store.update_session


def _source_keys(source: TokenStore, keys: Iterable[str] | None) -> tuple[list[str], list[str]]:
    """(keys to migrate in source order, requested keys the source has nothing for)."""
    present: dict[str, None] = {}
    for section in ("tokens", "clients", "sessions"):
        for key in source.keys(section):
            present.setdefault(key, None)
    if keys is None:
        return list(present), []
    wanted = list(dict.fromkeys(keys))
    return [k for k in wanted if k in present], [k for k in wanted if k not in present]


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def migrate(
    source: TokenStore,
    target: TokenStore,
    *,
    keys: Iterable[str] | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    check: bool = True,
) -> MigrationReport:
    """Copy every token, client registration and session of ``source`` into ``target``.

    ``keys`` limits the copy to those store keys (a key the source has no
    record of is reported in ``missing``). A target record that differs from
    the source's is a conflict, left alone, unless ``overwrite``. ``dry_run``
    writes nothing and skips the verification. Returns a
    :class:`MigrationReport`; conflicts and missing keys only show in it
    (``report.ok`` is False).

    Records that cannot be read from the source (corrupt), written to the
    target (e.g. a key the target reserves) or that do not read back equal
    are collected in ``report.failures``; with ``check`` (the default) the
    function then raises :class:`MigrationError`
    (:class:`MigrationVerifyError` when the verification failed) carrying
    the report, after processing every other record. Errors reaching a
    whole store (unavailable, lock timeout) propagate at once.
    """
    report = MigrationReport(
        _describe(source), _describe(target), dry_run=dry_run, overwrite=overwrite
    )
    todo, report.missing = _source_keys(source, keys)
    expected: dict[RecordRef, Any] = {}  # what the target must hold afterwards

    for key in todo:
        for section in SECTIONS:
            ref = RecordRef(section, key)
            try:
                value = _reader(source, section)(key)
            except StoreCorruptError as exc:
                report.failures.append(MigrationFailure(section, key, "read", _reason(exc)))
                continue
            if value is None:
                continue
            try:
                outcome = _copy(target, ref, value, overwrite=overwrite, dry_run=dry_run)
            except (ValueError, TypeError, StoreCorruptError) as exc:
                # A key the target cannot hold (reserved name) or an unreadable
                # target record: this record only.
                report.failures.append(MigrationFailure(section, key, "write", _reason(exc)))
                continue
            {
                "copied": report.copied,
                "overwritten": report.overwritten,
                "identical": report.identical,
                "conflict": report.conflicts,
            }[outcome].append(ref)
            if outcome != "conflict":
                expected[ref] = value

    verify_failed = False
    if not dry_run:
        for ref, value in expected.items():
            problem: str | None = None
            try:
                stored = _reader(target, ref.section)(ref.key)
            except StoreCorruptError as exc:
                problem = _reason(exc)
            else:
                if stored is None:
                    problem = "the target has no such record"
                elif type(stored) is not type(value) or stored != value:
                    problem = "the target's record differs from the source's"
            if problem is None:
                report.verified.append(ref)
            else:
                verify_failed = True
                report.failures.append(MigrationFailure(ref.section, ref.key, "verify", problem))

    if check and report.failures:
        n = len(report.failures)
        what = "failed verification" if verify_failed else "could not be copied"
        cls = MigrationVerifyError if verify_failed else MigrationError
        raise cls(
            f"migration from {report.source} to {report.target}: {n} record"
            f"{'s' if n != 1 else ''} {what} ("
            + "; ".join(str(f) for f in report.failures[:5])
            + ("; ..." if n > 5 else "")
            + ")",
            report,
        )
    return report


def _copy(
    target: TokenStore, ref: RecordRef, value: Any, *, overwrite: bool, dry_run: bool
) -> Outcome:
    """Write ``value`` as ``ref`` in ``target`` by compare-and-set; return what happened."""
    if dry_run:
        current = _reader(target, ref.section)(ref.key)
        return _classify(current, value, overwrite)

    outcome: list[Outcome] = []

    def write(current: Any) -> Any:
        # May run more than once (a backend retrying on conflict): the last run
        # is the one committed, so only its outcome is kept.
        result = _classify(current, value, overwrite)
        outcome[:] = [result]
        return value if result in ("copied", "overwritten") else current

    _updater(target, ref.section)(ref.key, write)
    return outcome[0]


def _classify(current: Any, value: Any, overwrite: bool) -> Outcome:
    if current is None:
        return "copied"
    if type(current) is type(value) and current == value:
        return "identical"
    return "overwritten" if overwrite else "conflict"
