"""``oauth-callback doctor [--repair]``: check (and repair) a file store."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from .. import doctor as doctor_mod
from ..storage.file import FileStore
from ._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, store_from_args

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
    store = store_from_args(args)
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
