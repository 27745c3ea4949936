"""Power loss, not only process crashes (issue 9, items 11 and 15).

The file-system operations of one store call are recorded in-process
(tests/fsrecord.py), then every state a power loss may leave (the fsync
barriers respected, anything unsynced lost in any combination, writes torn)
is written into a fresh directory and opened as a store.

* ``durable=True`` (the default): every state opens as the whole old or the
  whole new store. Proven here for ``set()``, ``clear()``, a refresh's save and
  ``repair()``.
* ``durable=False``: a state may also read as an older complete version (the
  backup) or be corrupt with no usable backup (``StoreCorruptError`` until
  ``repair()``), never as a torn or mixed store. The test shows both happen.

Needs no root: the order of the fsyncs (item 15) is asserted from the same trace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oauth_callback import FileStore, StoreCorruptError, Tokens
from oauth_callback.manager import TokenManager
from oauth_callback.testing import MockProvider

from .fsrecord import Op, Recorder, crash_states, materialize
from .test_refresh import KEY, expire, login

A = Tokens("access-a-" + "a" * 300, refresh_token="refresh-a", expires_at=2e9)
B = Tokens("access-b-" + "b" * 300, refresh_token="refresh-b", expires_at=2e9)
C = Tokens("access-c-" + "c" * 300, refresh_token="refresh-c", expires_at=2e9)

View = Any


def view(path: Path) -> View:
    """What a fresh process reads from the store at ``path``."""
    try:
        store = FileStore(path)
        return {k: store.get(k) for k in store.keys()}, {
            k: store.get_client(k) for k in store._keys("clients")
        }
    except StoreCorruptError:
        return "corrupt"


def replay(rec: Recorder, root: Path, work: Path, durable: bool) -> list[tuple[int, View]]:
    """Open every power-loss state; also check the next write succeeds on it."""
    seen: list[tuple[int, View]] = []
    for n, (k, state) in enumerate(crash_states(rec)):
        into = work / f"state-{n}"
        into.mkdir(mode=0o700)
        materialize(state, str(root.resolve()), into)
        path = into / "tokens.json"
        got = view(path)
        seen.append((k, got))
        if got != "corrupt":
            after = FileStore(path, durable=durable)
            after.set("after", A)
            assert FileStore(path).get("after") == A
    return seen


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool,
        prepare: Callable[[Path], None], act: Callable[[Path], None]) -> tuple[
            list[tuple[int, View]], View, View, list[Op]]:
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    path = root / "tokens.json"
    prepare(path)
    old = view(path)
    with Recorder(root, monkeypatch) as rec:
        act(path)
    new = view(path)
    work = tmp_path / "replay"
    work.mkdir()
    return replay(rec, root, work, durable), old, new, rec.ops


def seed(durable: bool) -> Callable[[Path], None]:
    def prepare(path: Path) -> None:
        store = FileStore(path, durable=durable)
        store.set("a", A)  # the backup will hold this older version
        store.set("b", B)
    return prepare


def corrupt_with_good_backup(path: Path) -> None:
    seed(True)(path)
    path.write_bytes(b'{"a": {"accessToken": "torn')


SCENARIOS: dict[str, tuple[Callable[[bool], Callable[[Path], None]],
                           Callable[[Path, bool], None]]] = {
    "set": (seed, lambda p, d: FileStore(p, durable=d).set("c", C)),
    "delete": (seed, lambda p, d: FileStore(p, durable=d).delete("a")),
    "clear": (seed, lambda p, d: FileStore(p, durable=d).clear()),
    "repair": (lambda d: corrupt_with_good_backup,
               lambda p, d: FileStore(p, durable=d).repair() and None),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_power_loss_durable_store_is_old_or_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    prepare, act = SCENARIOS[scenario]
    seen, old, new, ops = run(tmp_path, monkeypatch, True, prepare(True),
                              lambda p: act(p, True))
    assert old != "corrupt" and new != "corrupt"
    bad = [(k, got) for k, got in seen if got not in (old, new)]
    assert not bad, f"{len(bad)} of {len(seen)} power-loss states are neither old nor new"
    # Durable: once the call returned, only the new version can come back.
    assert all(got == new for k, got in seen if k == len(ops)), "returned but not durable"
    outcomes = Counter("old" if got == old else "new" for _, got in seen)
    assert len(seen) > 3 and (old == new or (outcomes["new"] and outcomes["old"])), outcomes
    print(f"{scenario}: {len(ops)} operations, {len(seen)} crash states: {dict(outcomes)}")


def test_power_loss_durable_refresh_save(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresh's reservation and save: the old grant or the new one, whole."""
    with MockProvider(rotate_refresh_tokens=True) as provider:
        def prepare(path: Path) -> None:
            store = FileStore(path)
            login(provider, store)
            expire(provider, store)

        seen, old, new, ops = run(tmp_path, monkeypatch, True, prepare,
                                  lambda p: TokenManager(FileStore(p), KEY).tokens() and None)
    assert provider.refresh_count == 1
    assert any(op.kind == "alloc" for op in ops), "the save did not use a reservation"
    bad = [got for _, got in seen if got not in (old, new)]
    assert not bad and len(seen) > 3
    assert all(got == new for k, got in seen if k == len(ops)), "returned but not durable"
    assert {("old" if got == old else "new") for _, got in seen} == {"old", "new"}


@pytest.mark.parametrize("scenario", ["set", "clear"])
def test_power_loss_non_durable_can_roll_back_or_lose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    """What ``durable=False`` allows (README, Guarantees): besides old and new, an older
    whole version (the backup) or a corrupt store that needs repair(); never a torn
    or mixed one."""
    prepare, act = SCENARIOS[scenario]
    older = {"a": A}, {}
    seen, old, new, _ops = run(tmp_path, monkeypatch, False, prepare(False),
                               lambda p: act(p, False))
    outcomes = Counter(
        "old" if got == old else "new" if got == new else "older" if got == older
        else "corrupt" if got == "corrupt" else f"other: {got!r}"
        for _, got in seen
    )
    assert set(outcomes) <= {"old", "new", "older", "corrupt"}, outcomes
    assert outcomes["older"] or outcomes["corrupt"], outcomes
    print(f"durable=False {scenario}: {dict(outcomes)}")


# --------------------------------------------------------------------------- 15. fsync order


def _index(ops: list[Op], pred: Callable[[Op], bool], what: str) -> int:
    hits = [i for i, op in enumerate(ops) if pred(op)]
    assert hits, f"no {what} in {[str(o) for o in ops]}"
    return hits[0]


def test_fsync_order_of_a_durable_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """file fsync after its last write and before the rename; directory fsync after the
    rename; the backup link made before the rename. No root needed."""
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    path = root / "tokens.json"
    seed(True)(path)
    with Recorder(root, monkeypatch) as rec:
        FileStore(path).set("c", C)
    ops = rec.ops
    rename = _index(ops, lambda o: o.kind == "rename" and o.new_name == "tokens.json",
                    "rename onto the store")
    tmp_ino = ops[rename].ino
    last_write = max(i for i, o in enumerate(ops) if o.kind == "write" and o.ino == tmp_ino)
    file_fsync = _index(ops, lambda o: o.kind == "fsync" and o.ino == tmp_ino, "file fsync")
    dir_ino = rec.dir_ino(str(root.resolve()))
    dir_fsync = max(i for i, o in enumerate(ops) if o.kind == "fsync" and o.ino == dir_ino)
    backup = _index(ops, lambda o: o.kind == "rename" and o.new_name == "tokens.json.bak",
                    "backup rename")
    assert last_write < file_fsync < rename < dir_fsync, [str(o) for o in ops]
    assert backup < rename
    assert ops[-1].kind == "fsync" and ops[-1].ino == dir_ino  # nothing after the barrier


def test_no_fsync_when_not_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    seed(False)(root / "tokens.json")
    with Recorder(root, monkeypatch) as rec:
        FileStore(root / "tokens.json", durable=False).set("c", C)
    assert [o for o in rec.ops if o.kind == "fsync"] == []
    assert any(o.kind == "rename" for o in rec.ops)


def test_fsync_order_of_clear_and_reserved_save(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    path = root / "tokens.json"
    seed(True)(path)
    with Recorder(root, monkeypatch) as rec:
        store = FileStore(path)
        with store.reserve_write("c"):
            store.set("c", C)
        store.clear()
    ops = rec.ops
    dir_ino = rec.dir_ino(str(root.resolve()))
    alloc = _index(ops, lambda o: o.kind == "alloc", "allocation")
    reserved = ops[alloc].ino
    writes = [i for i, o in enumerate(ops) if o.kind == "write" and o.ino == reserved]
    trunc = _index(ops, lambda o: o.kind == "truncate" and o.ino == reserved, "truncate")
    sync = _index(ops, lambda o: o.kind == "fsync" and o.ino == reserved, "fsync")
    rename = _index(ops, lambda o: o.kind == "rename" and o.ino == reserved, "rename")
    assert alloc < writes[0] and writes[-1] < trunc < sync < rename
    unlink_backup = _index(ops, lambda o: o.kind == "unlink" and o.name == "tokens.json.bak",
                           "backup removal")
    assert any(o.kind == "fsync" and o.ino == dir_ino for o in ops[unlink_backup:])
    assert ops[-1].kind == "fsync" and ops[-1].ino == dir_ino
