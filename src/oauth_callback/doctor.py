"""Health checks of a :class:`~oauth_callback.storage.FileStore` (``oauth-callback doctor``).

Each ``check_*`` function inspects one aspect of the store at ``path`` and
returns a list of :class:`Finding`; none of them modifies anything (the lock
check opens the lock file read-only and releases it at once). :func:`diagnose`
runs them all; :func:`repair` applies the safe fixes and returns what it did.

:func:`check_encryption` inspects the records of an
:class:`~oauth_callback.storage.encrypted.EncryptedStore` of any backend.

Nothing secret is ever put in a finding: token files are parsed, never quoted.
"""

from __future__ import annotations

import contextlib
import enum
import glob
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import OAuthCallbackError, StoreError
from .fs import pid_alive, remove_stale
from .storage.document import Document, DocumentError
from .storage.file import FileStore
from .storage.layout import FileLayout

if TYPE_CHECKING:
    from .storage.encrypted import EncryptedStore

__all__ = [
    "Finding",
    "Severity",
    "check_backup",
    "check_corrupt_copies",
    "check_directory",
    "check_encryption",
    "check_lock",
    "check_parse",
    "check_store_file",
    "check_temp_files",
    "diagnose",
    "has_problems",
    "repair",
]

_PRIVATE_FILE = 0o600
_PRIVATE_DIR = 0o700
_LOCK_PROBE_SECONDS = 0.05


class Severity(str, enum.Enum):
    """How bad a finding is. ``WARNING`` and ``ERROR`` are problems (exit status 1)."""

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One result of a check: what was found, how bad, and how to fix it.

    ``check`` is a stable identifier (``"file-mode"``, ``"stale-temp"``, ...),
    ``path`` the file concerned, ``fix`` a human instruction (``None`` when
    nothing needs doing) and ``repairable`` whether :func:`repair` fixes it.
    """

    check: str
    severity: Severity
    message: str
    fix: str | None = None
    path: str | None = None
    repairable: bool = False

    @property
    def is_problem(self) -> bool:
        """True for ``WARNING`` and ``ERROR``."""
        return self.severity in (Severity.WARNING, Severity.ERROR)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping of the finding."""
        return {
            "check": self.check,
            "severity": self.severity.value,
            "message": self.message,
            "fix": self.fix,
            "path": self.path,
            "repairable": self.repairable,
        }


def has_problems(findings: Iterable[Finding]) -> bool:
    """True when any finding is a problem (``WARNING`` or ``ERROR``)."""
    return any(f.is_problem for f in findings)


# --------------------------------------------------------------------------- helpers


def _euid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def _owner_note(st: os.stat_result) -> str:
    euid = _euid()
    if euid is None:
        return ""
    return "owned by you" if st.st_uid == euid else f"owned by uid {st.st_uid}"


def _modes(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


def _who(bits: int) -> str:
    groups = []
    if bits & 0o070:
        groups.append("group")
    if bits & 0o007:
        groups.append("others")
    return " and ".join(groups)


def _dir_repairable(directory: str, st: os.stat_result) -> bool:
    """Whether :func:`repair` may ``chmod 0700`` it: ours, not sticky, not ``~`` or
    ``/``, and holding nothing but store files (so a shared directory such as
    ``/etc`` or a project folder is never locked down by accident)."""
    euid = _euid()
    if euid is None or st.st_uid != euid or st.st_mode & stat.S_ISVTX:
        return False
    real = os.path.realpath(directory)
    home = os.path.realpath(os.path.expanduser("~"))
    if real in (home, os.path.realpath(os.sep)):
        return False
    try:
        entries = os.listdir(real)
    except OSError:
        return False
    names = [e.lstrip(".") for e in entries]
    stems = {n.split(".")[0] for n in names if n}
    # One store (its file, backup, locks, temp files) and nothing else.
    return len(stems) <= 1 and all(not os.path.isdir(os.path.join(real, e)) for e in entries)


def _store_dir(path: str) -> str:
    return FileLayout.of(path).real_directory


def _unstattable(exc: OSError, check: str, label: str, path: str, *, absent: str | None,
                 severity: Severity = Severity.ERROR, fix: str | None = None) -> list[Finding]:
    """What a check reports when ``stat`` of ``path`` (named ``label``) raised ``exc``:
    ``absent`` as an INFO (nothing when ``None``) if it does not exist, else "cannot stat"."""
    if isinstance(exc, FileNotFoundError):
        return [] if absent is None else [Finding(check, Severity.INFO, absent, path=path)]
    return [Finding(check, severity, f"cannot stat {label}: {exc.strerror}", fix=fix, path=path)]


def _readable_by_others(check: str, label: str, path: str, mode: int, why: str) -> Finding:
    """A file that holds tokens is readable by group or others: an ERROR that
    :func:`repair` fixes (``chmod 600``)."""
    return Finding(
        check, Severity.ERROR,
        f"{label} {path} has mode {mode:04o}: readable by {_who(mode & 0o077)}; {why}",
        fix=f"chmod 600 {path}  (or: oauth-callback doctor --repair)",
        path=path, repairable=True)


# --------------------------------------------------------------------------- checks


def check_directory(path: str) -> list[Finding]:
    """The store's directory: exists, ``0700``, not group/world writable, owned by the user."""
    directory = _store_dir(path)
    try:
        st = os.stat(directory)
    except OSError as exc:
        return _unstattable(
            exc, "directory", f"directory {directory}", directory,
            absent=f"directory {directory} does not exist yet; the first write creates it "
            "with mode 0700",
            fix="check the permissions of its parent directories")
    if not stat.S_ISDIR(st.st_mode):
        return [Finding("directory", Severity.ERROR, f"{directory} is not a directory",
                        fix="choose another store path (--store)", path=directory)]
    mode = stat.S_IMODE(st.st_mode)
    findings: list[Finding] = []
    euid = _euid()
    if euid is not None and st.st_uid not in (euid, 0):
        findings.append(Finding(
            "directory-owner", Severity.ERROR,
            f"directory {directory} is owned by uid {st.st_uid}, not by you (uid {euid}); "
            "its owner can replace your token files, so the store refuses to use it "
            "(strict modes)",
            fix="keep the store in a directory you own (--store)", path=directory))
    fixable = _dir_repairable(directory, st)
    how = f"chmod 700 {directory}" + ("  (or: oauth-callback doctor --repair)" if fixable else "")
    if mode & 0o022:
        sticky = " (sticky)" if st.st_mode & stat.S_ISVTX else ""
        findings.append(Finding(
            "directory-mode", Severity.ERROR,
            f"directory {directory} has mode {mode:04o}{sticky}: writable by {_who(mode & 0o022)}, "
            "who can create, replace or delete files next to the store (the lock file, temp "
            "files); the store refuses to use it (strict modes)",
            fix=how if fixable else "move the store to a private directory (--store or "
            "$OAUTH_CALLBACK_STORE), e.g. ~/.mcp/tokens.json",
            path=directory, repairable=fixable))
    elif mode & 0o077:
        findings.append(Finding(
            "directory-mode", Severity.WARNING,
            f"directory {directory} has mode {mode:04o}: {_who(mode & 0o077)} can list it "
            "(the store is expected in a 0700 directory)",
            fix=how, path=directory, repairable=fixable))
    if not findings:
        findings.append(Finding("directory", Severity.OK,
                                f"directory {directory}: mode {mode:04o}, {_owner_note(st)}",
                                path=directory))
    return findings


def check_store_file(path: str) -> list[Finding]:
    """The store file itself: a regular file, mode ``0600``, owned by the user."""
    try:
        lst = os.lstat(path)
    except OSError as exc:
        return _unstattable(
            exc, "store-file", path, path, fix="check the permissions of the store directory",
            absent=f"no store file at {path} yet (nothing stored); the first write creates it "
            "with mode 0600")
    findings: list[Finding] = []
    target = path
    if stat.S_ISLNK(lst.st_mode):
        target = os.path.realpath(path)
        findings.append(Finding("store-symlink", Severity.INFO,
                                f"{path} is a symlink to {target}; writes replace the target",
                                path=path))
    try:
        st = os.stat(target)
    except OSError as exc:
        findings.append(Finding("store-file", Severity.ERROR,
                                f"{path} is a dangling symlink ({exc.strerror})",
                                fix=f"remove it (rm {path}) or point it at a file", path=path))
        return findings
    if not stat.S_ISREG(st.st_mode):
        findings.append(Finding("store-file", Severity.ERROR, f"{target} is not a regular file",
                                fix="choose another store path (--store)", path=target))
        return findings
    mode = stat.S_IMODE(st.st_mode)
    euid = _euid()
    if euid is not None and st.st_uid not in (euid, 0):
        findings.append(Finding("store-owner", Severity.ERROR,
                                f"{target} is owned by uid {st.st_uid}, not by you (uid {euid}): "
                                "the store refuses to use it (strict modes)",
                                fix=f"chown {euid} {target}", path=target))
    if stat.S_ISLNK(lst.st_mode) and euid is not None and lst.st_uid not in (euid, 0):
        findings.append(Finding("store-symlink-owner", Severity.ERROR,
                                f"symlink {path} is owned by uid {lst.st_uid}, not by you: the "
                                "store refuses to follow it (someone may have planted it)",
                                fix=f"rm {path}  (removes the link only)", path=path))
    own = FileLayout.of(path).own_links(st) if st.st_nlink > 1 else 1
    if st.st_nlink > own:
        findings.append(Finding(
            "store-hardlink", Severity.ERROR,
            f"store file {target} has {st.st_nlink} hard links: another path names the same "
            "file, so two paths would take two locks (a token refreshed twice) and the next "
            "write would split them; the store refuses to use it",
            fix="keep one path: remove the other hard link (find / -samefile "
            f"{target}), or make it a symlink", path=target))
    if mode & 0o077:
        findings.append(_readable_by_others("store-mode", "store file", target, mode,
                                            "tokens must be private (0600)"))
    elif mode & 0o600 != 0o600:
        findings.append(Finding(
            "store-mode", Severity.WARNING,
            f"store file {target} has mode {mode:04o}: you cannot read and write it",
            fix=f"chmod 600 {target}", path=target))
    if not any(f.is_problem for f in findings):
        findings.append(Finding("store-file", Severity.OK,
                                f"store file {target}: mode {mode:04o}, {_owner_note(st)}",
                                path=target))
    return findings


def _parse_file(path: str) -> Document:
    with open(path, "rb") as f:
        return Document.parse(f.read())


def _describe(doc: Document) -> str:
    n, c = len(doc.tokens), len(doc.clients)
    return f"{n} token{'s' if n != 1 else ''}, {c} client registration{'s' if c != 1 else ''}"


def check_parse(path: str) -> list[Finding]:
    """Whether the store parses; when it does not, whether its backup does."""
    try:
        doc = _parse_file(path)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [Finding("parse", Severity.ERROR, f"cannot read {path}: {exc.strerror}",
                        fix="check the file's owner and mode", path=path)]
    except DocumentError as exc:
        backup = FileLayout.of(path).backup
        try:
            backup_doc = _parse_file(backup)
        except (OSError, DocumentError) as bexc:
            try:
                FileStore(path).check_repairable()
            except StoreError as refused:
                return [Finding(
                    "parse", Severity.ERROR, str(refused),
                    fix="check the store path (--store, $OAUTH_CALLBACK_STORE)",
                    path=path, repairable=False)]
            why = "there is no backup" if isinstance(bexc, FileNotFoundError) else (
                f"the backup {backup} is unusable too ({bexc})")
            return [Finding(
                "parse", Severity.ERROR,
                f"store {path} is corrupt ({exc}) and {why}: every operation fails until it "
                "is repaired",
                fix="oauth-callback doctor --repair (moves the bad file aside, keeping it, and "
                "starts an empty store; you will need to log in again)",
                path=path, repairable=True)]
        return [Finding(
            "parse", Severity.ERROR,
            f"store {path} is corrupt ({exc}); its backup {backup} is good "
            f"({_describe(backup_doc)}) and reads use it meanwhile",
            fix="oauth-callback doctor --repair (moves the bad file aside and restores the backup)",
            path=path, repairable=True)]
    if doc.newer_version:
        return [Finding("parse", Severity.WARNING,
                        f"store {path} was written by a newer oauth-callback; this version reads "
                        "it but refuses to modify it",
                        fix="upgrade oauth-callback", path=path)]
    return [Finding("parse", Severity.OK, f"store parses: {_describe(doc)}", path=path)]


def check_backup(path: str) -> list[Finding]:
    """The backup ``<path>.bak``: present once the store was rewritten, private, parseable."""
    backup = FileLayout.of(path).backup
    try:
        st = os.lstat(backup)
    except OSError as exc:
        absent = f"no backup {backup} yet; the next write keeps one"
        return _unstattable(exc, "backup", backup, backup, severity=Severity.WARNING,
                            absent=absent if os.path.exists(path) else None)
    if not stat.S_ISREG(st.st_mode):
        return [Finding("backup", Severity.WARNING, f"backup {backup} is not a regular file",
                        fix=f"remove it (rm {backup}); the next write keeps a new one",
                        path=backup)]
    findings: list[Finding] = []
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        findings.append(_readable_by_others("backup-mode", "backup", backup, mode,
                                            "it holds tokens too"))
    try:
        doc = _parse_file(backup)
    except (OSError, DocumentError) as exc:
        findings.append(Finding(
            "backup-parse", Severity.WARNING,
            f"backup {backup} is not usable ({exc}); the store has no fallback if it is damaged",
            fix="any successful write replaces the backup (e.g. log in again)", path=backup))
        return findings
    if not findings:
        findings.append(Finding("backup", Severity.OK,
                                f"backup {backup}: mode {mode:04o}, parses ({_describe(doc)})",
                                path=backup))
    return findings


def _temp_files(path: str) -> list[tuple[str, int]]:
    return FileLayout.of(path).temp_files()


def check_temp_files(path: str) -> list[Finding]:
    """Temporary files of writers (``.<name>.<pid>.<hex>.tmp``, the backup's, and the npm
    package's ``<name>.tmp.<pid>.<uuid>``): stale when their pid is dead."""
    findings: list[Finding] = []
    for temp, pid in _temp_files(path):
        if pid_alive(pid):
            findings.append(Finding(
                "temp-file", Severity.INFO,
                f"temporary file {temp} belongs to running process {pid} (a write in progress)",
                path=temp))
        else:
            findings.append(Finding(
                "stale-temp", Severity.WARNING,
                f"stale temporary file {temp}: its writer (pid {pid}) is gone, it crashed "
                "mid-write (the store itself is intact); the file may hold tokens",
                fix=f"rm {temp}  (or: oauth-callback doctor --repair)",
                path=temp, repairable=True))
    return findings


def _lock_holders(lock_path: str) -> list[int]:
    """Pids holding a lock on ``lock_path`` according to ``/proc/locks`` (Linux; else ``[]``)."""
    try:
        st = os.stat(lock_path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    wanted = f":{st.st_ino}"
    pids: list[int] = []
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        for i, value in enumerate(fields):
            if value.endswith(wanted) and value.count(":") == 2 and i > 0:
                with contextlib.suppress(ValueError):
                    pids.append(int(fields[i - 1]))
    return pids


def _command(pid: int) -> str:
    """`` (name)`` of process ``pid`` from ``/proc`` (Linux), else ``""``."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f" ({f.read().strip()})"
    except OSError:
        return ""


def probe_lock(lock_path: str, wait: float = _LOCK_PROBE_SECONDS) -> bool | None:
    """Whether someone holds the ``flock`` on ``lock_path`` (non-blocking tries for ``wait`` s).

    Returns ``True`` (held), ``False`` (free; released again at once) or
    ``None`` (cannot tell: no ``fcntl``, or the file cannot be opened). The
    file is opened read-only and never created or modified.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock_path, flags)
    except OSError:
        return None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return True
                time.sleep(0.005)
                continue
            except OSError:
                return None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
    finally:
        os.close(fd)


def _check_one_lock(lock_path: str, what: str, check: str) -> list[Finding]:
    try:
        st = os.lstat(lock_path)
    except OSError as exc:
        return _unstattable(exc, check, f"{what} {lock_path}", lock_path, absent=None,
                            severity=Severity.WARNING)
    if stat.S_ISLNK(st.st_mode):
        return [Finding(
            check, Severity.ERROR,
            f"{what} {lock_path} is a symlink to {os.readlink(lock_path)}; oauth-callback refuses "
            "to follow it, so writes fail (someone may be trying to make it clobber another file)",
            fix=f"rm {lock_path}  (removes the link only; or: oauth-callback doctor --repair)",
            path=lock_path, repairable=True)]
    if not stat.S_ISREG(st.st_mode):
        return [Finding(check, Severity.ERROR, f"{what} {lock_path} is not a regular file",
                        fix=f"remove it (it is recreated on demand): rm -r {lock_path}",
                        path=lock_path)]
    held = probe_lock(lock_path)
    if held is None:
        return [Finding(check, Severity.INFO,
                        f"{what} {lock_path} exists; could not test whether it is held",
                        path=lock_path)]
    if held:
        holders = [f"{pid}{_command(pid)}" for pid in _lock_holders(lock_path)]
        who = f" by pid {', '.join(holders)}" if holders else " by another process"
        return [Finding(
            check, Severity.INFO,
            f"{what} {lock_path} is held right now{who}: a write or refresh is in progress. "
            "The lock is an flock, which the kernel releases when its holder exits, so a lock "
            "held by a dead process cannot exist; if it stays held, its holder is alive and stuck",
            path=lock_path)]
    return [Finding(
        check, Severity.OK,
        f"{what} {lock_path} is free (the file stays between uses on purpose; never delete it "
        "while the store is in use)",
        path=lock_path)]


def check_lock(path: str) -> list[Finding]:
    """The write lock ``<realpath>.lock`` and refresh locks: not symlinks, held or free."""
    layout = FileLayout.of(path)
    lock_path = layout.lock
    findings = _check_one_lock(lock_path, "lock file", "lock")
    if not findings and os.path.exists(os.path.realpath(path)):
        findings.append(Finding("lock", Severity.INFO,
                                f"no lock file {lock_path} yet; the next write creates it",
                                path=lock_path))
    for refresh in sorted(glob.glob(layout.refresh_lock_glob)):
        for finding in _check_one_lock(refresh, "refresh lock", "refresh-lock"):
            if finding.severity is not Severity.OK:  # free refresh locks are not worth a line
                findings.append(finding)
    return findings


def _corrupt_copies(path: str) -> list[str]:
    return FileLayout.of(path).corrupt_copies()


def check_corrupt_copies(path: str) -> list[Finding]:
    """Copies of corrupt stores (``<path>.corrupt-*``) kept by repairs: listed, must be private."""
    findings: list[Finding] = []
    for copy in _corrupt_copies(path):
        try:
            st = os.lstat(copy)
        except OSError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode) and mode & 0o077:
            findings.append(_readable_by_others("corrupt-copy-mode", "corrupt copy", copy, mode,
                                                "it may hold tokens"))
        else:
            findings.append(Finding(
                "corrupt-copy", Severity.INFO,
                f"corrupt copy {copy} was kept by an earlier repair; it may hold tokens you can "
                "recover by hand",
                fix=f"delete it when you no longer need it: rm {copy}", path=copy))
    return findings


CHECKS: tuple[Callable[[str], list[Finding]], ...] = (
    check_directory,
    check_store_file,
    check_parse,
    check_backup,
    check_temp_files,
    check_lock,
    check_corrupt_copies,
)
"""Every check, in the order :func:`diagnose` runs them."""


def diagnose(path: str | os.PathLike[str]) -> list[Finding]:
    """Run every check on the store at ``path``; read-only."""
    p = os.path.abspath(os.path.expanduser(os.fspath(path)))
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(p))
    return findings


# --------------------------------------------------------------------------- encryption


def _names(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _records(check: str, severity: Severity, records: list[str], verbs: tuple[str, str],
             state: str, *, fix: str, where: str) -> Finding:
    """A finding listing the ``section:key`` records in one state: "<n> record(s) <verb>
    <state>: 'a', 'b' ...", ``verbs`` the singular and plural verb."""
    n = len(records)
    verb = verbs[0] if n == 1 else verbs[1]
    return Finding(check, severity,
                   f"{n} record{'' if n == 1 else 's'} {verb} {state}: {_names(records)}",
                   fix=fix, path=where)


def _plaintext_copies(path: str) -> list[Finding]:
    """The backup and corrupt copies of an encrypted file store that still hold plaintext."""
    from .storage.encrypted import ENVELOPE_FIELD

    layout = FileLayout.of(path)
    findings: list[Finding] = []
    for copy in (layout.backup, *layout.corrupt_copies()):
        try:
            with open(copy, "rb") as f:
                doc = Document.parse(f.read())
        except (OSError, DocumentError):
            continue  # missing, or a corrupt copy that does not parse: nothing to tell
        plain = sum(
            1 for section in ("tokens", "clients", "sessions") for key in doc.keys(section)
            if ENVELOPE_FIELD not in doc.get(section, key).extra
        )
        if plain:
            findings.append(Finding(
                "plaintext-copy", Severity.WARNING,
                f"{copy} holds {plain} record{'s' if plain != 1 else ''} in plaintext "
                "(written before encryption was turned on)",
                fix=f"the next write replaces the backup with an encrypted version; or remove "
                    f"it: rm {copy}",
                path=copy))
    return findings


def check_encryption(store: EncryptedStore) -> list[Finding]:
    """An encrypted store's records (:meth:`EncryptedStore.audit`); read-only, needs the key.

    Reports plaintext records (encrypted by their next write), records under
    another key id (an old key: migrate them) and records that fail to decrypt;
    for a file store also a backup or corrupt copy still holding plaintext.
    """
    where = store.describe()
    source = store.key_source.description
    try:
        current = store.key_id or "none (no key in the keychain yet)"
        statuses = store.audit()
    except StoreError as exc:
        return [Finding("encryption-key", Severity.ERROR, str(exc),
                        fix=f"make the key from {source} available", path=where)]
    findings: list[Finding] = []
    plain = [f"{s.section}:{s.key}" for s in statuses if s.state == "plaintext"]
    if plain:
        findings.append(_records(
            "plaintext-records", Severity.WARNING, plain, ("is", "are"), "not encrypted",
            fix="each is encrypted by its next write; to encrypt them all now: "
                "oauth-callback tokens migrate --from URL --to URL (the same store URL, "
                "with ?encryption=)",
            where=where))
    old = [s for s in statuses if s.state == "other-key"]
    if old:
        ids = sorted({s.key_id or "?" for s in old})
        findings.append(_records(
            "old-key-records", Severity.WARNING, [f"{s.section}:{s.key}" for s in old],
            ("is", "are"),
            f"under another key id ({', '.join(ids)}), not the key from {source} "
            f"(key id {current})",
            fix="with the old key, migrate them into a store under the new key "
                "(oauth-callback tokens migrate --from 'URL?encryption=OLD' "
                "--to 'NEWURL?encryption=NEW')",
            where=where))
    bad = [f"{s.section}:{s.key}" for s in statuses if s.state == "undecryptable"]
    if bad:
        findings.append(_records(
            "undecryptable-records", Severity.ERROR, bad, ("does", "do"),
            f"not decrypt with the key from {source} (modified, moved, or a newer format)",
            fix="restore them from a backup, or delete them and log in again", where=where))
    if isinstance(store.store, FileStore):
        findings.extend(_plaintext_copies(store.store.path))
    good = sum(1 for s in statuses if s.state == "encrypted")
    findings.append(Finding(
        "encryption", Severity.OK,
        f"{good} record{'s' if good != 1 else ''} encrypted under key id {current} "
        f"(key from {source})", path=where))
    return findings


# --------------------------------------------------------------------------- repair


def repair(store: FileStore) -> list[str]:
    """Apply every safe fix to ``store`` and return a description of each action taken.

    Refuses (:class:`StoreError`, nothing changed) a file that is not
    recognisably a token store (:meth:`FileStore.check_repairable`). In
    order: remove symlinks at the lock paths (the links, never their
    targets); ``chmod 0700`` the directory when it is the user's own and not a
    shared one (sticky, ``~`` or ``/``); :meth:`FileStore.repair` (stale temp
    files, corrupt file moved aside and backup restored, file and backup
    modes); ``chmod 0600`` loose corrupt copies. Raises
    :class:`~oauth_callback.errors.StoreError` when the store cannot be
    repaired (lock held too long, permission denied).
    """
    actions: list[str] = []
    path = store.path
    layout = store.layout
    store.check_repairable()  # before anything changes: never "repair" an unrelated file
    locks = [layout.lock, *glob.glob(layout.refresh_lock_glob)]
    for lock in locks:
        if os.path.islink(lock):
            os.unlink(lock)
            actions.append(f"removed the symlink at {lock}")
    directory = layout.real_directory
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(directory)
        if stat.S_IMODE(st.st_mode) & 0o077 and _dir_repairable(directory, st):
            os.chmod(directory, _PRIVATE_DIR)
            actions.append(f"set mode 0700 on directory {directory} (was {_modes(st.st_mode)})")
    try:
        report = store.repair()
        stale = remove_stale(layout.temp_files())
    except OAuthCallbackError:
        raise
    except OSError as exc:
        raise StoreError(f"could not repair {path}: {exc}", path=path) from exc
    actions.extend(report.actions)
    actions.extend(f"removed {s}" for s in stale)
    for copy in _corrupt_copies(path):
        with contextlib.suppress(OSError):
            st = os.lstat(copy)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(copy, _PRIVATE_FILE)
                actions.append(f"set mode 0600 on {copy}")
    return actions
