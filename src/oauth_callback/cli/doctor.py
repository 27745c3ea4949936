"""``oauth-callback doctor [--repair]``: check (and repair) a file store; check an encrypted one."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import doctor as doctor_mod
from ..storage.file import FileStore
from ._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, store_from_args

if TYPE_CHECKING:
    from ..storage.base import TokenStore
    from ..storage.encrypted import EncryptedStore

__all__ = ["cmd_doctor"]


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


def _summary(findings: Sequence[doctor_mod.Finding], repaired: int = 0) -> str:
    problems = [f for f in findings if f.is_problem]
    if not problems:
        # Never "no problems" right after changing something.
        return (f"Repaired ({repaired} change{'' if repaired == 1 else 's'} made); no problems "
                "remain." if repaired else "No problems found.")
    fixable = sum(1 for f in problems if f.repairable)
    s = "" if len(problems) == 1 else "s"
    hint = f" ({fixable} fixable with 'oauth-callback doctor --repair')" if fixable else ""
    return f"{len(problems)} problem{s} found{hint}."


def _encrypted(store: TokenStore) -> EncryptedStore | None:
    try:
        from ..storage.encrypted import EncryptedStore
    except ImportError:  # no cryptography: no store can be an EncryptedStore
        return None
    return store if isinstance(store, EncryptedStore) else None


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check a file store, or an encrypted store of any backend; exit 0 when healthy,
    1 when problems remain (after ``--repair``)."""
    opened = store_from_args(args)
    encrypted = _encrypted(opened)
    store = encrypted.store if encrypted is not None else opened
    if not isinstance(store, FileStore) and encrypted is None:
        raise CliError(f"doctor checks file stores only (and encrypted stores of any "
                       f"backend), not {store.describe()}", EXIT_USAGE)

    def diagnose() -> list[doctor_mod.Finding]:
        found = doctor_mod.diagnose(store.path) if isinstance(store, FileStore) else []
        if encrypted is not None:
            found += doctor_mod.check_encryption(encrypted)
        return found

    where = store.path if isinstance(store, FileStore) else store.describe()
    findings = diagnose()
    report: dict[str, Any] = {"store": where,
                              "findings": [f.to_dict() for f in findings]}
    if not args.json:
        print(f"Checking token store {where}"
              + (f" (encrypted, key from {encrypted.key_source.description})"
                 if encrypted is not None else ""))
        _print_findings(findings)
        print(_summary(findings))
    if args.repair and doctor_mod.has_problems(findings) and isinstance(store, FileStore):
        actions = doctor_mod.repair(store)
        findings = diagnose()
        report["actions"] = actions
        report["after_repair"] = [f.to_dict() for f in findings]
        if not args.json:
            print("\nRepairing:")
            for action in actions or ["nothing could be repaired automatically"]:
                print(f"  - {action}")
            print("\nChecking again:")
            _print_findings(findings)
            print(_summary(findings, repaired=len(actions)))
    problems = doctor_mod.has_problems(findings)
    if args.json:
        report["healthy"] = not problems
        print(json.dumps(report, indent=2))
    return EXIT_FAILURE if problems else EXIT_OK
