"""Compare the token store backends: set() / get() latency and contended writes.

Run from the project root::

    .venv/bin/python benchmarks/bench_backends.py            # table, about 1-2 minutes
    .venv/bin/python benchmarks/bench_backends.py --quick    # short run (~20 s)
    .venv/bin/python benchmarks/bench_backends.py --json     # machine-readable

Backends: ``MemoryStore``; ``FileStore`` with ``durable=True`` and ``False``;
``SQLiteStore`` with ``durable=True`` (``synchronous=FULL``) and ``False``
(``NORMAL``); ``RedisStore`` on a private ``redis-server`` started here
(127.0.0.1, free port, ``--appendonly yes --appendfsync always``, data in the
temp dir, as ``tests/redis_server.py`` does); and ``KeyringStore`` when
``oauth_callback.storage.keyring`` exists and works, on keyrings.alt's
plaintext file backend in the temp dir. A backend that cannot run is listed
as skipped, with the reason.

What is measured, at 100 and at 10,000 keys (``--sizes``) of JWT-sized tokens
(access 800 chars, refresh 300, expiry, scope):

1. ``set()`` overwriting an existing key, keys rotating: median and p90 per
   call. Calls are timed one by one, except when a call takes under 20 µs
   (memory), where batches are timed and divided (the timer would dominate).
   FileStore rewrites the whole file on every set(), so it gets fewer rounds
   at 10,000 keys (about 12 MB of JSON per write): that cost is the point.
2. warm ``get()`` (nothing changed since the last read), keys rotating:
   batches of calls, median and p90 of the per-call mean of a batch.
3. contended writes: ``--procs`` (8) real processes (fork) open the same
   store (pre-filled with 100 keys) and, released together by a barrier, each
   do ``--writes`` set() calls of keys of their own. Reported: total writes/s
   and wall time (first start to last finish), median / p90 latency of one
   set() under contention, and a check that every key written is present
   with its value (read back by a fresh store object).

Populating a store of 10,000 keys one set() at a time would take minutes
for FileStore (each write rewrites the file) and Redis (each write is fsynced),
so: FileStore is filled by one write of the whole document through the store
(``durable=False``) and reopened durable; SQLite is filled by a
``durable=False`` store, then reopened; Redis is filled with
``appendfsync no`` and switched back to ``always`` (checked) before timing.

Files go to a fresh temp dir on the working directory's filesystem (``/tmp``
when it is that filesystem and not a tmpfs, else a hidden directory in the
working directory), or under ``--dir``; its filesystem type is printed. It is
removed at the end unless ``--keep``. Exit status 0, or 2 if a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_store import (
    _MEMORY_FS,
    ACCESS_LEN,
    REFRESH_LEN,
    FsInfo,
    fmt_us,
    fs_info,
    make_tokens,
    pct,
)

from oauth_callback.models import Tokens
from oauth_callback.storage import FileStore, MemoryStore, SQLiteStore, TokenStore
from oauth_callback.storage.document import Document

PREFILL_CONTENDED = 100  # keys already in the store before the contended writers start
FAST_CALL_NS = 20_000  # below this per call, time batches instead of single calls
BATCH_TARGET_NS = 200_000  # aim for batches of about this long
TOKEN_POOL = 257  # distinct Tokens objects cycled through by set() rounds (prime)


# ----------------------------------------------------------------------------- setup


def choose_dir(requested: str | None) -> tuple[str, FsInfo, str]:
    """Make the working directory; return (dir, its fs info, why it was chosen)."""
    if requested:
        os.makedirs(requested, exist_ok=True)
        d = tempfile.mkdtemp(prefix="bench_backends-", dir=requested)
        return d, fs_info(d), "--dir"
    cwd = os.getcwd()
    tmp = tempfile.gettempdir()
    tmp_fs = fs_info(tmp)
    same_fs = os.stat(tmp).st_dev == os.stat(cwd).st_dev
    if same_fs and tmp_fs.fstype not in _MEMORY_FS:
        d = tempfile.mkdtemp(prefix="bench_backends-", dir=tmp)
        why = f"{tmp} is {tmp_fs.fstype}, same filesystem as the working directory"
    else:
        d = tempfile.mkdtemp(prefix=".bench_backends-", dir=cwd)
        why = (f"{tmp} is {tmp_fs.fstype}" + ("" if same_fs else ", not the cwd's filesystem")
               + "; using a temp dir in the working directory")
    return d, fs_info(d), why


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def store_bytes(spec: Spec) -> int | None:
    """Bytes on disk of a file / SQLite store (database + WAL), else None."""
    if spec.kind not in ("file", "sqlite"):
        return None
    total = 0
    for suffix in ("", "-wal") if spec.kind == "sqlite" else ("",):
        with contextlib.suppress(OSError):
            total += os.path.getsize(spec.path + suffix)
    return total


def store_keys(n: int, tag: str = "") -> list[str]:
    return [f"https://mcp-{tag}{i:05d}.example.com/mcp" for i in range(n)]


# ----------------------------------------------------------------------------- redis server
# The same server the tests start (tests/redis_server.py), reduced to what is needed here.


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.version = "?"

    def url(self, prefix: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"

    def start(self, binary: str, timeout: float = 10.0) -> None:
        args = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.directory,
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--daemonize", "no", "--logfile", os.path.join(self.directory, "redis.log"),
            "--rename-command", "KEYS", "",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                with open(os.path.join(self.directory, "redis.log"), errors="replace") as f:
                    log = f.read()[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redis_skip_reason() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    try:
        import redis  # noqa: F401

        from oauth_callback.storage.redis import RedisStore  # noqa: F401
    except ImportError as exc:
        return f"redis-py is not installed (pip install 'oauth-callback[redis]'): {exc}"
    return None


# ----------------------------------------------------------------------------- keyring


def keyring_setup(base_dir: str) -> tuple[Any, str | None, str]:
    """(KeyringStore class, or None; why not; description). Configures keyrings.alt's
    plaintext file backend in ``base_dir`` for this process and its children."""
    try:
        import importlib

        mod = importlib.import_module("oauth_callback.storage.keyring")
    except ImportError as exc:
        return None, f"oauth_callback.storage.keyring is not there ({exc})", ""
    cls = getattr(mod, "KeyringStore", None)
    if cls is None:
        return None, "oauth_callback.storage.keyring has no KeyringStore", ""
    try:
        import keyring
        from keyrings.alt.file import PlaintextKeyring  # type: ignore[import-untyped]
    except ImportError as exc:
        return None, f"keyring / keyrings.alt not installed ({exc})", ""
    data = os.path.join(base_dir, "keyring-data")
    os.makedirs(data, mode=0o700, exist_ok=True)
    locks = os.path.join(base_dir, "keyring-locks")
    os.makedirs(locks, mode=0o700, exist_ok=True)
    os.environ["XDG_DATA_HOME"] = data  # keyrings.alt's data_root() on Linux
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyrings.alt.file.PlaintextKeyring"
    # KeyringStore's lock files (default ~/.cache/oauth-callback) go to the temp dir too.
    os.environ["OAUTH_CALLBACK_LOCK_DIR"] = locks
    global _KEYRING_LOCK_DIR
    _KEYRING_LOCK_DIR = locks
    backend = PlaintextKeyring()
    backend.file_path = os.path.join(data, "keyring_pass.cfg")  # non-data property
    keyring.set_keyring(backend)
    return cls, None, f"keyrings.alt PlaintextKeyring at {backend.file_path}"


def open_keyring_store(cls: Any, service: str) -> TokenStore:
    """Build a KeyringStore whatever its constructor looks like (service name, backend)."""
    import keyring

    try:
        params: Any = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs: dict[str, Any] = {}
    for name in ("service", "service_name", "namespace", "prefix", "app"):
        if name in params:
            kwargs[name] = service
            break
    for name in ("keyring_backend", "backend", "keyring"):
        if name in params:
            kwargs[name] = keyring.get_keyring()  # explicit choice of the plaintext backend
            break
    if "lock_timeout" in params:
        kwargs["lock_timeout"] = 120.0  # 8 contending writers queue for long; measure, not fail
    if "lock_path" in params and _KEYRING_LOCK_DIR:
        kwargs["lock_path"] = os.path.join(_KEYRING_LOCK_DIR, f"{service}.lock")
    return cls(**kwargs)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- backends


@dataclass
class Spec:
    """How to open one backend's store; picklable, so a child process can reopen it."""

    name: str
    kind: str  # memory | file | sqlite | redis | keyring
    durable: bool = True
    path: str = ""  # file / sqlite path, redis URL, keyring service
    shared: bool = True  # several processes can share it

    def open(self, *, durable: bool | None = None) -> TokenStore:
        d = self.durable if durable is None else durable
        if self.kind == "memory":
            return MemoryStore()
        if self.kind == "file":
            return FileStore(self.path, durable=d)
        if self.kind == "sqlite":
            return SQLiteStore(self.path, durable=d)
        if self.kind == "redis":
            from oauth_callback.storage.redis import RedisStore

            return RedisStore(self.path)
        if self.kind == "keyring":
            return open_keyring_store(_KEYRING_CLASS, self.path)
        raise ValueError(self.kind)


_KEYRING_CLASS: Any = None
_KEYRING_LOCK_DIR = ""
_REDIS: RedisServer | None = None


def fresh_spec(template: Spec, work_dir: str, tag: str) -> Spec:
    """A spec like ``template`` naming a new, empty store."""
    s = Spec(template.name, template.kind, template.durable, template.path, template.shared)
    label = template.name.replace(" ", "_").replace("=", "-")
    if s.kind == "file":
        s.path = os.path.join(work_dir, f"{label}-{tag}", "tokens.json")
    elif s.kind == "sqlite":
        s.path = os.path.join(work_dir, f"{label}-{tag}", "tokens.db")
    elif s.kind == "redis":
        assert _REDIS is not None
        s.path = _REDIS.url(f"bench-{tag}")
    elif s.kind == "keyring":
        s.path = f"oauth-callback-bench-{tag}"
    if s.kind in ("file", "sqlite"):
        os.makedirs(os.path.dirname(s.path), mode=0o700, exist_ok=True)
    return s


def populate(spec: Spec, keys: list[str], toks: list[Tokens], deadline: float) -> TokenStore:
    """Fill a new store with ``keys`` and return it open as ``spec`` says (see module doc)."""
    if spec.kind == "memory":
        store = spec.open()
        for k, t in zip(keys, toks, strict=True):
            store.set(k, t)
        return store
    if spec.kind == "file":
        seed = FileStore(spec.path, durable=False)
        entries = {k: t.to_record() for k, t in zip(keys, toks, strict=True)}
        tokens = dict(zip(keys, toks, strict=True))
        # One write of the whole document through the store's own transaction/save path.
        seed._transact(lambda doc: Document(entries, tokens, doc.meta, doc.clients, doc.sessions))
        return spec.open()
    if spec.kind == "sqlite":
        seed_db = SQLiteStore(spec.path, durable=False)
        for k, t in zip(keys, toks, strict=True):
            seed_db.set(k, t)
        seed_db.close()
        return spec.open()
    if spec.kind == "redis":
        assert _REDIS is not None
        admin = _REDIS.client()
        admin.config_set("appendfsync", "no")
        try:
            store = spec.open()
            for k, t in zip(keys, toks, strict=True):
                store.set(k, t)
        finally:
            admin.config_set("appendfsync", "always")
        mode = admin.config_get("appendfsync")
        assert list(mode.values()) in (["always"], [b"always"]), mode
        admin.close()
        return store
    # keyring (or anything else): one set() at a time, giving up past the deadline
    started = time.monotonic()
    store = spec.open()
    for i, (k, t) in enumerate(zip(keys, toks, strict=True)):
        store.set(k, t)
        now = time.monotonic()
        # Project from the first 50 (a lower bound if a set() grows with the store).
        projected = (now - started) / (i + 1) * len(keys)
        if now > deadline or (i + 1 == 50 and now + projected > deadline):
            close_store(store)
            per = (now - started) / (i + 1)
            raise TimeoutError(f"populating {len(keys)} keys one set() at a time would take "
                               f"at least ~{per * len(keys):.0f} s (stopped after {i + 1})")
    return store


POPULATE_BUDGET = 30.0


def close_store(store: TokenStore) -> None:
    with contextlib.suppress(Exception):
        store.close()


# ----------------------------------------------------------------------------- timing


def _batch_for(fn: Callable[[int], object], probes: int = 5, always: bool = False) -> int:
    """Calls per timed sample: 1 unless a call is too quick to time alone (or ``always``:
    enough calls for about BATCH_TARGET_NS)."""
    pc = time.perf_counter_ns
    ts = []
    for i in range(probes):
        t0 = pc()
        fn(i)
        ts.append(pc() - t0)
    est = max(1.0, pct([float(t) for t in ts], 50))
    if est >= FAST_CALL_NS and not always:
        return 1
    return max(1, min(2000, int(BATCH_TARGET_NS / est)))


def time_calls(fn: Callable[[int], object], samples: int, warmup: int, max_seconds: float,
               min_samples: int, batch: int | None = None,
               always_batch: bool = False) -> tuple[list[float], int, bool]:
    """Run ``fn(i)`` for i = 0, 1, ...; return (µs per call of each sample, batch, truncated)."""
    i = 0
    for _ in range(warmup):
        fn(i)
        i += 1
    if batch is None:
        batch = _batch_for(lambda j: fn(i + j), always=always_batch)
        i += 5
    out: list[float] = []
    pc = time.perf_counter_ns
    stop = time.monotonic() + max_seconds
    truncated = False
    gc.collect()
    gc.disable()
    try:
        for _ in range(samples):
            t0 = pc()
            for j in range(i, i + batch):
                fn(j)
            t1 = pc()
            i += batch
            out.append((t1 - t0) / batch / 1000)
            if len(out) >= min_samples and time.monotonic() > stop:
                truncated = len(out) < samples
                break
    finally:
        gc.enable()
    return out, batch, truncated


@dataclass
class Cell:
    backend: str
    keys: int
    set_median_us: float | None = None
    set_p90_us: float | None = None
    set_samples: int = 0
    set_batch: int = 1
    get_median_us: float | None = None
    get_p90_us: float | None = None
    get_samples: int = 0
    get_batch: int = 1
    populate_s: float | None = None
    store_bytes: int | None = None
    check: str = ""
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


def bench_cell(spec: Spec, n: int, keys: list[str], base_toks: list[Tokens],
               pool: list[Tokens], args: argparse.Namespace, work_dir: str) -> Cell:
    cell = Cell(spec.name, n)
    s = fresh_spec(spec, work_dir, f"{n}")
    t0 = time.monotonic()
    try:
        store = populate(s, keys, base_toks[:n], time.monotonic() + POPULATE_BUDGET)
    except TimeoutError as exc:
        cell.skipped = str(exc)
        return cell
    cell.populate_s = time.monotonic() - t0
    try:
        big_file = spec.kind == "file" and n > 1000
        rounds = args.file_big_rounds if big_file else args.set_rounds
        set_ = store.set

        # Round i overwrites keys[i % n] with pool[i % P]; P is prime, so never with the
        # Tokens object the key holds already (a store may skip such a no-op write).
        def do_set(i: int) -> None:
            set_(keys[i % n], pool[i % len(pool)])

        xs, batch, trunc = time_calls(do_set, rounds, args.warmup, args.cell_seconds,
                                      min_samples=min(rounds, 10))
        cell.set_median_us, cell.set_p90_us = pct(xs, 50), pct(xs, 90)
        cell.set_samples, cell.set_batch = len(xs), batch
        if trunc:
            cell.notes.append(f"set(): time cap, {len(xs)} of {rounds} samples")
        get = store.get

        def do_get(i: int) -> None:
            get(keys[(i * 7) % n])

        # Warm: read everything once (FileStore has the file parsed; nothing changes after).
        get(keys[0])
        gs, gbatch, gtrunc = time_calls(do_get, args.get_samples, 2, args.cell_seconds / 2,
                                        min_samples=min(args.get_samples, 20),
                                        always_batch=True)
        cell.get_median_us, cell.get_p90_us = pct(gs, 50), pct(gs, 90)
        cell.get_samples, cell.get_batch = len(gs), gbatch
        if gtrunc:
            cell.notes.append(f"get(): time cap, {len(gs)} of {args.get_samples} samples")
        cell.store_bytes = store_bytes(s)
        cell.check = check_store(s, store, keys, n)
    finally:
        close_store(store)
        if s.kind in ("file", "sqlite") and not args.keep:
            shutil.rmtree(os.path.dirname(s.path), ignore_errors=True)
    return cell


def check_store(spec: Spec, store: TokenStore, keys: list[str], n: int) -> str:
    """Every key still there; a fresh store object reads what this one reads."""
    fresh = spec.open() if spec.kind != "memory" else store
    try:
        try:
            listed = fresh.keys()
            if len(listed) != n or set(listed) != set(keys):
                return f"FAIL: keys() lists {len(listed)} keys, expected {n}"
        except NotImplementedError:
            pass
        sample = keys if n <= 1000 else keys[:: max(1, n // 500)]
        for k in sample:
            a, b = fresh.get(k), store.get(k)
            if a is None or a != b:
                return f"FAIL: {k} reads {'nothing' if a is None else 'a different value'}"
        return f"OK ({n} keys)"
    finally:
        if fresh is not store:
            close_store(fresh)


# ----------------------------------------------------------------------------- contended


def _writer(spec: Spec, proc: int, writes: int, seed: int, barrier: Any, out: Any) -> None:
    try:
        rng = random.Random(seed * 1000 + proc)
        base = 1_700_000_000.0
        keys = [f"https://proc{proc}-{i:05d}.example.com/mcp" for i in range(writes)]
        toks = [make_tokens(rng, i, base) for i in range(writes)]
        store = spec.open()
        store.get(f"https://mcp-c{0:05d}.example.com/mcp")  # connect / load once
        pc = time.perf_counter_ns
        lat: list[int] = []
        barrier.wait(timeout=120)
        start = time.monotonic_ns()
        for k, t in zip(keys, toks, strict=True):
            t0 = pc()
            store.set(k, t)
            lat.append(pc() - t0)
        end = time.monotonic_ns()
        close_store(store)
        out.put((proc, start, end, lat, None))
    except BaseException:
        out.put((proc, 0, 0, [], traceback.format_exc(limit=5)))


@dataclass
class Contended:
    backend: str
    procs: int
    writes_per_proc: int
    total_writes: int = 0
    wall_s: float | None = None
    writes_per_s: float | None = None
    set_median_us: float | None = None
    set_p90_us: float | None = None
    keys_at_end: int | None = None
    check: str = ""
    skipped: str | None = None


def bench_contended(spec: Spec, args: argparse.Namespace, work_dir: str,
                    prefill_toks: list[Tokens]) -> Contended:
    writes = args.keyring_writes if spec.kind == "keyring" else args.writes
    res = Contended(spec.name, args.procs, writes)
    if not spec.shared:
        res.skipped = "process-local: several processes cannot share one"
        return res
    s = fresh_spec(spec, work_dir, "contended")
    prefill = store_keys(PREFILL_CONTENDED, "c")
    try:
        store = populate(s, prefill, prefill_toks[:PREFILL_CONTENDED],
                         time.monotonic() + POPULATE_BUDGET)
    except TimeoutError as exc:
        res.skipped = str(exc)
        return res
    close_store(store)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.procs)
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(s, p, writes, args.seed, barrier, out))
             for p in range(args.procs)]
    for p in procs:
        p.start()
    results: list[tuple[int, int, list[int]]] = []
    errors: list[str] = []
    deadline = time.monotonic() + args.contended_timeout
    while len(results) + len(errors) < args.procs:
        left = deadline - time.monotonic()
        if left <= 0:
            errors.append(f"timed out after {args.contended_timeout:g} s")
            break
        try:
            proc, start, end, lat, err = out.get(timeout=min(left, 5))
        except Exception:
            if all(not p.is_alive() for p in procs) and out.empty():
                errors.append("writer processes died without reporting")
                break
            continue
        if err:
            last = err.strip().splitlines()[-1]
            last = "".join(ch if ch.isprintable() else "?" for ch in last)
            errors.append(f"process {proc}: {last[:160]}")
        else:
            results.append((start, end, lat))
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join()
    res.total_writes = sum(len(r[2]) for r in results)
    if results:
        wall_ns = max(r[1] for r in results) - min(r[0] for r in results)
        res.wall_s = wall_ns / 1e9
        res.writes_per_s = res.total_writes / res.wall_s if wall_ns else math.inf
        lat = [x / 1000 for r in results for x in r[2]]
        res.set_median_us, res.set_p90_us = pct(lat, 50), pct(lat, 90)
    # Verify with a fresh store object: every key written by every process, with its value.
    try:
        missing, wrong = verify_contended(s, args, writes, prefill, res)
    except Exception as exc:
        errors.append(f"reading the store back failed: {type(exc).__name__}: {exc}"[:300])
        missing = wrong = 0
    expected_total = args.procs * writes + PREFILL_CONTENDED
    if errors:
        res.check = "FAIL: " + "; ".join(errors)[:300]
    elif missing or wrong:
        res.check = f"FAIL: {missing} keys missing, {wrong} wrong values"
    elif res.keys_at_end is not None and res.keys_at_end != expected_total:
        res.check = f"FAIL: keys() lists {res.keys_at_end}, expected {expected_total}"
    else:
        res.check = f"OK (all {expected_total} keys)"
    if s.kind in ("file", "sqlite") and not args.keep:
        shutil.rmtree(os.path.dirname(s.path), ignore_errors=True)
    return res


def verify_contended(s: Spec, args: argparse.Namespace, writes: int, prefill: list[str],
                     res: Contended) -> tuple[int, int]:
    """Read every key back with a fresh store object; return (missing, wrong values)."""
    fresh = s.open()
    try:
        missing = wrong = 0
        for proc in range(args.procs):
            rng = random.Random(args.seed * 1000 + proc)
            for i in range(writes):
                expected = make_tokens(rng, i, 1_700_000_000.0)
                got = fresh.get(f"https://proc{proc}-{i:05d}.example.com/mcp")
                if got is None:
                    missing += 1
                elif got != expected:
                    wrong += 1
        for k in prefill:
            if fresh.get(k) is None:
                missing += 1
        try:
            res.keys_at_end = len(fresh.keys())
        except NotImplementedError:
            res.keys_at_end = None
    finally:
        close_store(fresh)
    return missing, wrong


# ----------------------------------------------------------------------------- output


def _us(v: float | None, unit: str = "") -> str:
    return "-" if v is None else fmt_us(v) + unit


def print_table(res: dict[str, Any], cells: list[Cell], cont: list[Contended]) -> None:
    m = res["machine"]
    p = res["params"]
    print(f"oauth-callback backend benchmark{' (--quick)' if p['quick'] else ''}: "
          f"tokens access {ACCESS_LEN} + refresh {REFRESH_LEN} chars")
    print(f"machine: {m['python']} on {m['platform']}, {m['cpus']} CPUs, load average (1 min) "
          f"{m['loadavg_1m_before']} before, {m['loadavg_1m_after']} after")
    print(f"dir:     {res['dir']} on {res['fs']['describe']}")
    print(f"         filesystem type: {res['fs']['fstype']} ({res['dir_reason']})")
    if res["fs"]["fstype"] in _MEMORY_FS:
        print("WARNING: memory filesystem: fsync is free, durable rows are meaningless.")
    if res.get("redis"):
        print(f"redis:   {res['redis']}")
    if res.get("keyring"):
        print(f"keyring: {res['keyring']}")
    for name, why in res["skipped"].items():
        print(f"skipped: {name}: {why}")
    print()
    hdr = (f"{'backend':<28}{'keys':>7} | {'set() median':>13}{'p90':>10}{'n':>9} | "
           f"{'get() median':>13}{'p90':>10}{'n':>9} | check")
    print(hdr)
    print("-" * len(hdr))
    prev = None
    for c in cells:
        if prev is not None and c.keys != prev:
            print()
        prev = c.keys
        if c.skipped:
            print(f"{c.backend:<28}{c.keys:>7,} | skipped: {c.skipped}")
            continue
        sn = f"{c.set_samples}" + (f"x{c.set_batch}" if c.set_batch > 1 else "")
        gn = f"{c.get_samples}x{c.get_batch}" if c.get_batch > 1 else f"{c.get_samples}"
        print(f"{c.backend:<28}{c.keys:>7,} | {_us(c.set_median_us, ' µs'):>13}"
              f"{_us(c.set_p90_us):>10}{sn:>9} | {_us(c.get_median_us, ' µs'):>13}"
              f"{_us(c.get_p90_us):>10}{gn:>9} | {c.check}")
    print("(µs per call; n = timed samples, AxB = A samples of B calls each; set() overwrites "
          "existing keys, rotating; get() warm)")
    sizes = [f"{c.backend} @ {c.keys:,}: {c.store_bytes / 1e6:.2f} MB" for c in cells
             if c.store_bytes]
    if sizes:
        print("on disk after the set() rounds: " + "; ".join(sizes))
    for c in cells:
        for note in c.notes:
            print(f"note: {c.backend} @ {c.keys}: {note}")
    print()
    pr = p["procs"]
    wr = p["writes_per_proc"]
    print(f"contended writes: {pr} processes x {wr} set() of distinct keys each (keyring: "
          f"x {p['keyring_writes_per_proc']}), one store pre-filled with {PREFILL_CONTENDED} keys")
    hdr2 = (f"{'backend':<28}{'writes':>8}{'writes/s':>10}{'wall':>9} | {'set() median':>13}"
            f"{'p90':>10} | check")
    print(hdr2)
    print("-" * len(hdr2))
    for w in cont:
        if w.skipped:
            print(f"{w.backend:<28} skipped: {w.skipped}")
            continue
        wps = "-" if w.writes_per_s is None else f"{w.writes_per_s:,.0f}"
        wall = "-" if w.wall_s is None else f"{w.wall_s:.2f} s"
        done = f"{w.procs}x{w.writes_per_proc}"
        print(f"{w.backend:<28}{done:>8}{wps:>10}{wall:>9} | {_us(w.set_median_us, ' µs'):>13}"
              f"{_us(w.set_p90_us):>10} | {w.check}")
    print("(writes/s = all processes' writes / wall time from the first start to the last "
          "finish; set() latency per call under contention)")
    print(f"total run time {res['elapsed_s']:.1f} s")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    global _KEYRING_CLASS, _REDIS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run: fewer rounds and writes")
    ap.add_argument("--sizes", default="100,10000", help="store sizes (default 100,10000)")
    ap.add_argument("--set-rounds", type=int, help="timed set() samples per cell (default 1000)")
    ap.add_argument("--file-big-rounds", type=int,
                    help="timed set() samples for FileStore at > 1000 keys (default 60)")
    ap.add_argument("--get-samples", type=int, help="timed get() batches per cell (default 300)")
    ap.add_argument("--warmup", type=int, help="untimed set() calls per cell (default 10)")
    ap.add_argument("--cell-seconds", type=float,
                    help="soft cap on the set() timing of one cell (default 10)")
    ap.add_argument("--procs", type=int, default=8, help="contending processes (default 8)")
    ap.add_argument("--writes", type=int, help="set() calls per process (default 200)")
    ap.add_argument("--keyring-writes", type=int,
                    help="set() calls per process for the keyring (default 20: each write "
                    "rewrites the keyring file three times)")
    ap.add_argument("--contended-timeout", type=float, default=120.0)
    ap.add_argument("--only", help="comma-separated backend kinds: memory,file,sqlite,redis,"
                    "keyring")
    ap.add_argument("--no-contended", action="store_true", help="skip the contended test")
    ap.add_argument("--dir", help="put the files in a temp dir under PATH")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args(argv)
    q = args.quick
    defaults = {"set_rounds": (1000, 60), "file_big_rounds": (60, 8), "get_samples": (300, 40),
                "warmup": (10, 3), "cell_seconds": (10.0, 2.0), "writes": (200, 20),
                "keyring_writes": (20, 5)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    sizes = list(dict.fromkeys(int(x) for x in args.sizes.split(",") if x.strip()))
    if not sizes or min(sizes) < 1 or args.set_rounds < 1 or args.procs < 1 or args.writes < 1:
        ap.error("sizes, --set-rounds, --procs and --writes must be >= 1")
    only = set(args.only.split(",")) if args.only else None

    started = time.monotonic()
    load_before = _loadavg()
    work_dir, fs, why = choose_dir(args.dir)
    skipped: dict[str, str] = {}
    info: dict[str, str] = {}
    specs = [
        Spec("memory", "memory", shared=False),
        Spec("file durable", "file", True),
        Spec("file durable=False", "file", False),
        Spec("sqlite durable", "sqlite", True),
        Spec("sqlite durable=False", "sqlite", False),
    ]
    try:
        if only is None or "redis" in only:
            reason = redis_skip_reason()
            if reason is None:
                try:
                    server = RedisServer(os.path.join(work_dir, "redis"))
                    server.start(shutil.which("redis-server") or "redis-server")
                    _REDIS = server
                    c = server.client()
                    ver = c.info("server").get("redis_version", "?")
                    fsync_mode = c.config_get("appendfsync").get("appendfsync")
                    c.close()
                    info["redis"] = (f"redis-server {ver} on 127.0.0.1:{server.port}, appendonly"
                                     f" yes, appendfsync {fsync_mode}, data in {server.directory}")
                    specs.append(Spec("redis appendfsync always", "redis"))
                except Exception as exc:
                    reason = f"could not start redis-server: {exc}"
            if reason is not None:
                skipped["redis appendfsync always"] = reason
        if only is None or "keyring" in only:
            cls, reason, desc = keyring_setup(work_dir)
            if cls is not None:
                _KEYRING_CLASS = cls
                probe_spec = Spec("keyring", "keyring", True, "oauth-callback-bench-probe")
                try:
                    probe = probe_spec.open()
                    tok = make_tokens(random.Random(1), 0, 1_700_000_000.0)
                    probe.set("https://probe.example.com/mcp", tok)
                    if probe.get("https://probe.example.com/mcp") != tok:
                        raise RuntimeError("a value set() was not read back by get()")
                    probe.delete("https://probe.example.com/mcp")
                    close_store(probe)
                    specs.append(Spec("keyring (keyrings.alt file)", "keyring"))
                    info["keyring"] = desc
                except Exception as exc:
                    reason = f"KeyringStore does not work here: {type(exc).__name__}: {exc}"
            if reason is not None:
                skipped["keyring"] = reason
        if only is not None:
            specs = [s for s in specs if s.kind in only]

        rng = random.Random(args.seed)
        base = float(int(time.time()))
        top = max(sizes)
        base_toks = [make_tokens(rng, i, base) for i in range(max(top, PREFILL_CONTENDED))]
        pool = [make_tokens(rng, i, base) for i in range(TOKEN_POOL)]
        cells: list[Cell] = []
        for n in sizes:
            keys = store_keys(n)
            for spec in specs:
                if not args.json:
                    print(f"... {spec.name} @ {n:,} keys", file=sys.stderr, flush=True)
                try:
                    cells.append(bench_cell(spec, n, keys, base_toks, pool, args, work_dir))
                except Exception as exc:
                    cell = Cell(spec.name, n, skipped=f"error: {type(exc).__name__}: {exc}")
                    cell.check = "FAIL"
                    cells.append(cell)
        cont: list[Contended] = []
        if not args.no_contended:
            for spec in specs:
                if not args.json:
                    print(f"... contended {spec.name}", file=sys.stderr, flush=True)
                try:
                    cont.append(bench_contended(spec, args, work_dir, base_toks))
                except Exception as exc:
                    cont.append(Contended(spec.name, args.procs, args.writes,
                                          check=f"FAIL: {type(exc).__name__}: {exc}"))
    finally:
        if _REDIS is not None:
            _REDIS.stop()
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)

    res = {
        "machine": {
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": f"{platform.system()}-{platform.machine()}",
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "loadavg_1m_before": load_before,
            "loadavg_1m_after": _loadavg(),
        },
        "dir": work_dir,
        "dir_reason": why,
        "fs": {**asdict(fs), "describe": fs.describe()},
        "params": {
            "quick": q, "sizes": sizes, "access_len": ACCESS_LEN, "refresh_len": REFRESH_LEN,
            "set_rounds": args.set_rounds, "file_big_rounds": args.file_big_rounds,
            "get_samples": args.get_samples, "warmup": args.warmup,
            "cell_seconds": args.cell_seconds, "procs": args.procs,
            "writes_per_proc": args.writes, "keyring_writes_per_proc": args.keyring_writes,
            "contended_prefill": PREFILL_CONTENDED,
        },
        **info,
        "skipped": skipped,
        "results": [asdict(c) for c in cells],
        "contended": [asdict(c) for c in cont],
        "elapsed_s": time.monotonic() - started,
    }
    if args.json:
        print(json.dumps(res, indent=2, ensure_ascii=False))
    else:
        print_table(res, cells, cont)
    failed = any(c.check.startswith("FAIL") for c in cells) or any(
        c.check.startswith("FAIL") for c in cont)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
