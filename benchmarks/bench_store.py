"""Benchmark FileStore.set() / get() against the cost of the bare system calls.

Run from the project root::

    .venv/bin/python benchmarks/bench_store.py            # table
    .venv/bin/python benchmarks/bench_store.py --json     # machine-readable
    .venv/bin/python benchmarks/bench_store.py --dir /mnt/ssd --rounds 800

What is measured, for a store of ``--keys`` (100) keys holding JWT-sized
tokens (access 800 chars, refresh 300 chars, expiry, scope):

1. ``FileStore(durable=True).set()`` overwriting one existing key per round
   (rotating keys), next to the *floor*: the bare ``os`` calls that write the
   same number of bytes the store writes (``open(O_CREAT|O_EXCL)``, ``write``,
   ``fsync``, ``close``, ``os.replace``, ``fsync`` of the directory). Floor and
   set() rounds are interleaved (ABBA order) so disk noise hits both alike.
   Target: median set() <= 1.5x median floor.
2. warm ``get()`` (file unchanged since the last read) next to one bare
   ``os.stat`` of the same file, timed over batches of calls.
   Target: median get() <= 5x median stat.
3. ``FileStore(durable=False).set()`` next to the floor without the fsyncs
   (information only: no target).
4. for context, an npm-style get that reads and parses the whole file every
   time (``open`` + ``read`` + ``json.loads``).

Files go to a fresh temporary directory on the filesystem of the current
working directory (``/tmp`` only when it is on that same filesystem and is not
a tmpfs, where fsync is free and the floor meaningless), or under ``--dir``.
The directory is removed at the end unless ``--keep``.

Exit status: 0, or 2 if the final self-check fails; with ``--strict`` also 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import random
import shutil
import string
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from oauth_callback.models import Tokens
from oauth_callback.storage import FileStore

SET_TARGET = 1.5  # median durable set() / median floor
GET_TARGET = 5.0  # median warm get() / median os.stat

ACCESS_LEN = 800
REFRESH_LEN = 300
SCOPE = "openid profile email offline_access read:user repo"
_B64URL = string.ascii_letters + string.digits + "-_"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_MEMORY_FS = {"tmpfs", "ramfs", "devtmpfs", "overlay-tmpfs"}


# ----------------------------------------------------------------------------- machine / fs


@dataclass
class FsInfo:
    path: str
    fstype: str = "unknown"
    mountpoint: str = "?"
    device: str = "?"
    options: str = ""
    block_size: int | None = None
    free_gib: float | None = None

    def describe(self) -> str:
        opts = ",".join(self.options.split(",")[:3])
        return f"{self.fstype} ({self.device} on {self.mountpoint}{', ' + opts if opts else ''})"


def _unescape_mount(field_: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and field_[i + 1 : i + 4].isdigit() and i + 3 < len(field_):
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def fs_info(path: str) -> FsInfo:
    """Filesystem of ``path``: type from /proc/mounts (longest mount point that
    contains it and has the same st_dev), block size and free space from statvfs."""
    real = os.path.realpath(path)
    info = FsInfo(real)
    try:
        sv = os.statvfs(real)
        info.block_size = sv.f_bsize
        info.free_gib = round(sv.f_bavail * sv.f_frsize / 2**30, 1)
    except OSError:
        pass
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return info  # not Linux: type unknown
    try:
        dev = os.stat(real).st_dev
    except OSError:
        dev = None
    best: tuple[int, int] | None = None  # (len(mountpoint), line index): later mounts shadow
    for idx, line in enumerate(lines):
        parts = line.split()
        if len(parts) < 4:
            continue
        mnt = _unescape_mount(parts[1])
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if not inside:
            continue
        if dev is not None:
            try:
                if os.stat(mnt).st_dev != dev:
                    continue
            except OSError:
                continue
        rank = (len(mnt), idx)
        if best is None or rank > best:
            best = rank
            info.device, info.mountpoint, info.fstype, info.options = (
                _unescape_mount(parts[0]), mnt, parts[2], parts[3],
            )
    return info


def choose_dir(requested: str | None) -> tuple[str, FsInfo, str]:
    """Make the working directory; return (dir, its fs info, why it was chosen)."""
    if requested:
        os.makedirs(requested, exist_ok=True)
        d = tempfile.mkdtemp(prefix="bench_store-", dir=requested)
        return d, fs_info(d), "--dir"
    cwd = os.getcwd()
    cwd_fs = fs_info(cwd)
    tmp = tempfile.gettempdir()
    tmp_fs = fs_info(tmp)
    same_fs = os.stat(tmp).st_dev == os.stat(cwd).st_dev
    if same_fs and tmp_fs.fstype not in _MEMORY_FS:
        d = tempfile.mkdtemp(prefix="bench_store-", dir=tmp)
        why = f"{tmp} is {tmp_fs.fstype}, same filesystem as the working directory"
    else:
        d = tempfile.mkdtemp(prefix=".bench_store-", dir=cwd)
        why = (f"{tmp} is {tmp_fs.fstype}" + ("" if same_fs else f", not the cwd's {cwd_fs.fstype}")
               + "; using a temp dir in the working directory")
    return d, fs_info(d), why


# ----------------------------------------------------------------------------- data


def _rand(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_B64URL, k=n))


_JWT_HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImJlbmNoLWtleS0xIn0"


def fake_jwt(rng: random.Random) -> str:
    """An RS256-shaped JWT of exactly ACCESS_LEN chars (header.payload.signature)."""
    sig = _rand(rng, 342)  # 256-byte RSA signature, base64url
    payload = _rand(rng, ACCESS_LEN - len(_JWT_HEADER) - len(sig) - 2)
    return f"{_JWT_HEADER}.{payload}.{sig}"


def make_tokens(rng: random.Random, i: int, base_time: float) -> Tokens:
    # Fixed-width expiry (same number of digits every round) keeps the file size constant.
    return Tokens(
        access_token=fake_jwt(rng),
        refresh_token=_rand(rng, REFRESH_LEN),
        expires_at=base_time + 3600 + (i % 1000),
        scope=SCOPE,
    )


def store_keys(n: int) -> list[str]:
    return [f"https://mcp-{i:03d}.example.com/mcp" for i in range(n)]


# ----------------------------------------------------------------------------- floors


def floor_write(directory: str, target: str, tmp: str, data: bytes, durable: bool) -> None:
    """The least any atomic (and, if durable, crash-safe) replacement can do."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if durable:
        os.fsync(fd)
    os.close(fd)
    os.replace(tmp, target)
    if durable:
        dfd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        os.fsync(dfd)
        os.close(dfd)


# ----------------------------------------------------------------------------- stats


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (q in 0..100)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Row:
    name: str
    median_us: float
    p90_us: float
    floor_name: str
    floor_median_us: float
    floor_p90_us: float
    samples: int
    target: float | None = None
    ratio: float = field(init=False)
    ratio_p90: float = field(init=False)
    result: str = field(init=False)

    def __post_init__(self) -> None:
        self.ratio = self.median_us / self.floor_median_us
        self.ratio_p90 = self.p90_us / self.floor_p90_us
        if self.target is None:  # context only
            self.result = "info"
        else:
            self.result = "PASS" if self.ratio <= self.target else "FAIL"


def row_from(name: str, xs: list[int], floor_name: str, fs: list[int], target: float | None,
             per_call: int = 1, floor_per_call: int | None = None) -> Row:
    """Samples in ns per ``per_call`` calls -> a row in µs per call."""
    fdiv = per_call if floor_per_call is None else floor_per_call
    a = [x / per_call / 1000 for x in xs]
    b = [x / fdiv / 1000 for x in fs]
    return Row(name, pct(a, 50), pct(a, 90), floor_name, pct(b, 50), pct(b, 90), len(xs), target)


# ----------------------------------------------------------------------------- benchmarks


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def populate(path: str, keys: list[str], rng: random.Random, base: float) -> None:
    seed = FileStore(path, durable=False)
    for i, k in enumerate(keys):
        seed.set(k, make_tokens(rng, i, base))


def bench_set(base_dir: str, keys: list[str], rounds: int, warmup: int, durable: bool,
              rng: random.Random, base: float, budget: Budget, share: float,
              notes: list[str]) -> tuple[list[int], list[int], FileStore, int]:
    """Interleaved set()/floor rounds. Returns (set ns, floor ns, store, file size)."""
    label = "durable" if durable else "nondurable"
    store_dir = os.path.join(base_dir, f"store-{label}")
    floor_dir = os.path.join(base_dir, f"floor-{label}")
    os.mkdir(store_dir, 0o700)
    os.mkdir(floor_dir, 0o700)
    path = os.path.join(store_dir, "tokens.json")
    floor_target = os.path.join(floor_dir, "tokens.json")
    populate(path, keys, rng, base)
    store = FileStore(path, durable=durable)
    store.get(keys[0])  # load once, as a long-lived process would have

    total = warmup + rounds
    n = len(keys)
    toks = [make_tokens(rng, r, base) for r in range(total)]  # built outside the timing
    pid = os.getpid()
    tmp_names = [os.path.join(floor_dir, f".tokens.json.{pid}.{r:016x}.tmp") for r in range(total)]
    with open(path, "rb") as f:
        data = f.read()
    floor_write(floor_dir, floor_target, tmp_names[0] + ".init", data, durable)
    size = len(data)

    set_ns: list[int] = []
    floor_ns: list[int] = []
    pc = time.perf_counter_ns
    deadline = time.monotonic() + max(budget.left() * share, 1.0)
    gc.collect()
    gc.disable()
    try:
        for r in range(total):
            key = keys[r % n]
            tok = toks[r]
            tmp = tmp_names[r]
            # ABBA: alternate which goes first so neither always follows the other.
            if r % 2 == 0:
                t0 = pc()
                floor_write(floor_dir, floor_target, tmp, data, durable)
                t1 = pc()
                store.set(key, tok)
                t2 = pc()
                f_ns, s_ns = t1 - t0, t2 - t1
            else:
                t0 = pc()
                store.set(key, tok)
                t1 = pc()
                floor_write(floor_dir, floor_target, tmp, data, durable)
                t2 = pc()
                s_ns, f_ns = t1 - t0, t2 - t1
            # The floor writes the bytes the store just wrote (untimed read; same size every round).
            with open(path, "rb") as f:
                data = f.read()
            if r >= warmup:
                set_ns.append(s_ns)
                floor_ns.append(f_ns)
                if time.monotonic() > deadline and len(set_ns) >= 50:
                    notes.append(f"set({label}): time budget reached, stopped after "
                                 f"{len(set_ns)} of {rounds} rounds")
                    break
    finally:
        gc.enable()
    if len(data) != size:
        notes.append(f"set({label}): file size changed {size} -> {len(data)} bytes")
    return set_ns, floor_ns, store, size


def bench_get(store: FileStore, keys: list[str], samples: int, batch: int,
              npm_samples: int, npm_batch: int) -> tuple[list[int], list[int], list[int]]:
    """Batched warm get() vs os.stat (interleaved), and npm-style reads."""
    path = store.path
    n = len(keys)
    key_seq = [keys[(i * 7) % n] for i in range(batch)]  # rotate over keys
    path_seq = [path] * batch
    get = store.get
    stat = os.stat
    # Correctness outside the timing: a warm get returns the stored value.
    assert all(get(k) is not None for k in keys)

    loads = json.loads

    def npm_get(key: str) -> object:
        with open(path, "rb") as f:
            return loads(f.read()).get(key)

    assert npm_get(keys[0]) is not None
    npm_seq = key_seq[:npm_batch]
    for _ in range(3):  # warm-up
        for k in key_seq:
            get(k)
        for p in path_seq:
            stat(p)
    get_ns: list[int] = []
    stat_ns: list[int] = []
    npm_ns: list[int] = []
    pc = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for s in range(samples):
            if s % 2 == 0:
                t0 = pc()
                for p in path_seq:
                    stat(p)
                t1 = pc()
                for k in key_seq:
                    get(k)
                t2 = pc()
                stat_ns.append(t1 - t0)
                get_ns.append(t2 - t1)
            else:
                t0 = pc()
                for k in key_seq:
                    get(k)
                t1 = pc()
                for p in path_seq:
                    stat(p)
                t2 = pc()
                get_ns.append(t1 - t0)
                stat_ns.append(t2 - t1)
        for _ in range(npm_samples):
            t0 = pc()
            for k in npm_seq:
                npm_get(k)
            npm_ns.append(pc() - t0)
    finally:
        gc.enable()
    return get_ns, stat_ns, npm_ns


def profile_set(base_dir: str, keys: list[str], rounds: int, rng: random.Random,
                base: float, top: int) -> str:
    store_dir = os.path.join(base_dir, "store-profile")
    os.mkdir(store_dir, 0o700)
    path = os.path.join(store_dir, "tokens.json")
    populate(path, keys, rng, base)
    store = FileStore(path, durable=True)
    store.get(keys[0])
    for r in range(10):  # warm-up, with values distinct from the profiled ones
        store.set(keys[r % len(keys)], make_tokens(rng, r, base))
    toks = [make_tokens(rng, r, base) for r in range(rounds)]
    prof = cProfile.Profile()
    prof.enable()
    for r in range(rounds):
        store.set(keys[r % len(keys)], toks[r])
    prof.disable()
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def self_check(store: FileStore, keys: list[str]) -> dict[str, object]:
    """The measured store still holds every key, parsed fresh from disk; no temp files left."""
    fresh = FileStore(store.path, durable=store.durable)
    stored = fresh.keys()
    with open(store.path, "rb") as f:
        on_disk = {k for k in json.loads(f.read()) if not k.startswith("$")}
    directory = os.path.dirname(store.path)
    leftovers = [e for e in os.listdir(directory) if e.endswith(".tmp")]
    ok = (len(stored) == len(keys) and set(stored) == set(keys) == on_disk
          and all(fresh.get(k) == store.get(k) for k in keys)
          and os.path.exists(store.backup_path) and not leftovers)
    return {"ok": ok, "keys": len(stored), "expected": len(keys),
            "backup_exists": os.path.exists(store.backup_path), "temp_files_left": leftovers}


# ----------------------------------------------------------------------------- output


def fmt_us(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def print_table(res: dict[str, Any], rows: list[Row]) -> None:
    m = res["machine"]
    p = res["params"]
    print(f"oauth-callback FileStore benchmark: {p['keys']} keys, {p['file_bytes']:,}-byte "
          f"file, {p['set_rounds_durable']} set rounds (+{p['warmup']} warm-up), "
          f"get batches of {p['get_batch']} x {p['get_samples']}")
    print(f"machine: {m['python']} on {m['platform']}, {m['cpus']} CPUs | "
          f"dir {res['dir']} on {res['fs']['describe']}")
    print(f"         ({res['dir_reason']})")
    if res["fs"]["fstype"] in _MEMORY_FS:
        print("WARNING: the directory is on a memory filesystem: fsync is free, "
              "the durable floor is meaningless.")
    print()
    hdr = (f"{'operation':<34}{'median':>9}{'p90':>9}   {'floor / baseline':<36}"
           f"{'median':>9}{'p90':>9}{'ratio':>8}{'target':>8}  result")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        tgt = f"<={r.target:g}x" if r.target is not None else "-"
        print(f"{r.name:<34}{fmt_us(r.median_us):>9}{fmt_us(r.p90_us):>9}   {r.floor_name:<36}"
              f"{fmt_us(r.floor_median_us):>9}{fmt_us(r.floor_p90_us):>9}"
              f"{r.ratio:>7.2f}x{tgt:>8}  {r.result}")
    print("(all times in µs per call; ratio = median / floor median)")
    npm = res["npm_vs_warm_get"]
    print(f"npm-style read costs {npm:.0f}x a warm get().")
    for note in res["notes"]:
        print(f"note: {note}")
    sc = res["self_check"]
    print(f"self-check: {'OK' if sc['ok'] else 'FAILED'} - store holds {sc['keys']} keys "
          f"(expected {sc['expected']}), backup {'present' if sc['backup_exists'] else 'MISSING'}"
          f", temp files left: {len(sc['temp_files_left'])}")
    print(f"total run time {res['elapsed_s']:.1f} s")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=100, help="keys in the store (default 100)")
    ap.add_argument("--rounds", type=int, default=400,
                    help="measured set() rounds per durability mode (default 400)")
    ap.add_argument("--warmup", type=int, default=20, help="unmeasured set() rounds (default 20)")
    ap.add_argument("--get-samples", type=int, default=200, help="get()/stat batches (default 200)")
    ap.add_argument("--get-batch", type=int, default=1000, help="calls per batch (default 1000)")
    ap.add_argument("--dir", help="put the files in a temp dir under PATH "
                    "(default: temp dir on the working directory's filesystem)")
    ap.add_argument("--json", action="store_true", help="print JSON results instead of a table")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile durable set() and print the top functions")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="soft time budget in seconds; set() loops stop early past it")
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args(argv)
    if args.keys < 1 or args.rounds < 1 or args.get_batch < 1 or args.get_samples < 2:
        ap.error("--keys, --rounds, --get-batch must be >= 1 and --get-samples >= 2")

    started = time.monotonic()
    budget = Budget(args.budget)
    rng = random.Random(args.seed)
    base = float(int(time.time()))
    keys = store_keys(args.keys)
    notes: list[str] = []
    work_dir, fs, why = choose_dir(args.dir)
    if fs.fstype in _MEMORY_FS:
        notes.append(f"{work_dir} is on {fs.fstype}: fsync costs nothing there")
    try:
        d_set, d_floor, d_store, size = bench_set(
            work_dir, keys, args.rounds, args.warmup, True, rng, base, budget, 0.6, notes)
        n_set, n_floor, _n_store, _ = bench_set(
            work_dir, keys, args.rounds, args.warmup, False, rng, base, budget, 0.5, notes)
        npm_batch = max(1, min(50, args.get_batch))
        g_ns, s_ns, npm_ns = bench_get(d_store, keys, args.get_samples, args.get_batch,
                                       npm_samples=60, npm_batch=npm_batch)
        check = self_check(d_store, keys)
        profile_text = (profile_set(work_dir, keys, min(args.rounds, 300), rng, base, 20)
                        if args.profile else None)
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)

    rows = [
        row_from("set() durable=True", d_set, "floor: write+fsync+rename+dirfsync",
                 d_floor, SET_TARGET),
        row_from("get() warm (file unchanged)", g_ns, "one os.stat", s_ns, GET_TARGET,
                 per_call=args.get_batch),
        row_from("set() durable=False", n_set, "floor, no fsync: write+rename", n_floor, None),
        row_from("npm-style get (open+read+loads)", npm_ns, "one os.stat", s_ns, None,
                 per_call=npm_batch, floor_per_call=args.get_batch),
    ]
    res = {
        "machine": {
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": f"{platform.system()}-{platform.machine()}",
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
        },
        "dir": work_dir,
        "dir_reason": why,
        "fs": {**asdict(fs), "describe": fs.describe()},
        "params": {
            "keys": args.keys, "file_bytes": size, "access_len": ACCESS_LEN,
            "refresh_len": REFRESH_LEN, "warmup": args.warmup,
            "set_rounds_durable": len(d_set), "set_rounds_nondurable": len(n_set),
            "get_batch": args.get_batch, "get_samples": args.get_samples,
            "npm_batch": npm_batch, "npm_samples": len(npm_ns),
        },
        "results": [asdict(r) for r in rows],
        "npm_vs_warm_get": rows[3].median_us / rows[1].median_us,
        "targets": {"set_over_floor": SET_TARGET, "get_over_stat": GET_TARGET},
        "self_check": check,
        "notes": notes,
        "elapsed_s": time.monotonic() - started,
    }
    if args.json:
        if profile_text is not None:
            res["profile"] = profile_text
        print(json.dumps(res, indent=2, ensure_ascii=False))
    else:
        print_table(res, rows)
        if profile_text is not None:
            print("\ncProfile of durable set():")
            print(profile_text)
    if not check["ok"]:
        return 2
    if args.strict and any(r.result == "FAIL" for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
