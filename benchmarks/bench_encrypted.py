"""Encrypted stores next to plain ones: set() and warm get() of FileStore and SQLiteStore.

Run from the project root::

    .venv/bin/python benchmarks/bench_encrypted.py            # table, about 30-60 s
    .venv/bin/python benchmarks/bench_encrypted.py --quick    # short run
    .venv/bin/python benchmarks/bench_encrypted.py --json     # machine-readable

For each backend (``FileStore`` and ``SQLiteStore``, both ``durable=True``) a
plain store and an :class:`EncryptedStore` over the same backend (key from
memory) are filled with 100 keys (``--keys``) of JWT-sized tokens (access 800
chars, refresh 300, expiry, scope) and measured in the same run:

1. ``set()`` overwriting an existing key, keys rotating: plain and encrypted
   rounds alternate (ABBA order), each call timed; median and p90. Goal:
   encrypted median within 1.1x of plain (the fsync dominates).
2. warm ``get()`` (nothing changed since the last read), keys rotating:
   batches of 1000 calls, plain and encrypted batches alternating; median and
   p90 of the per-call mean of a batch. Goal: the encrypted store adds at most
   a few µs (5 µs here) per call: the decrypted record is cached against the
   inner record it came from, so a warm get() decrypts nothing.
3. for context, a cold get() of the encrypted store (a different handle wrote
   the record since, so it is decrypted): median per call.

Files go to a fresh temp dir chosen as ``bench_store.py`` does (never a tmpfs
when avoidable: fsync must cost what it costs on disk); its filesystem is
printed. Exit status 0, 1 with ``--strict`` if a goal is missed, 2 if a
check (every value reads back) fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_store import choose_dir, fmt_us, make_tokens, pct, store_keys

from oauth_callback import FileStore, Tokens, TokenStore
from oauth_callback.storage import SQLiteStore
from oauth_callback.storage.encrypted import EncryptedStore
from oauth_callback.storage.key_sources import StaticKey, generate_key

SET_GOAL = 1.1  # median encrypted set() / median plain set()
GET_GOAL_US = 5.0  # median encrypted warm get() - median plain warm get(), µs


def open_backend(kind: str, directory: str, *, durable: bool) -> TokenStore:
    if kind == "file":
        return FileStore(os.path.join(directory, "tokens.json"), durable=durable)
    return SQLiteStore(os.path.join(directory, "tokens.db"), durable=durable)


def make_pair(kind: str, base_dir: str, keys: list[str], rng: random.Random, base: float,
              key: bytes) -> tuple[TokenStore, TokenStore]:
    """(plain, encrypted) stores of ``kind``, each filled with ``keys``, reopened durable."""
    stores = []
    for label in ("plain", "encrypted"):
        directory = os.path.join(base_dir, f"{kind}-{label}")
        os.mkdir(directory, 0o700)
        filler = open_backend(kind, directory, durable=False)
        if label == "encrypted":
            filler = EncryptedStore(filler, StaticKey(key))
        for i, k in enumerate(keys):
            filler.set(k, make_tokens(rng, i, base))
        filler.close()
        store = open_backend(kind, directory, durable=True)
        if label == "encrypted":
            store = EncryptedStore(store, StaticKey(key))
        store.get(keys[0])  # load once, as a long-lived process would have
        stores.append(store)
    return stores[0], stores[1]


def bench_set(plain: TokenStore, encrypted: TokenStore, keys: list[str], rounds: int,
              warmup: int, rng: random.Random, base: float) -> tuple[list[int], list[int]]:
    n = len(keys)
    toks = [make_tokens(rng, r, base) for r in range(warmup + rounds)]
    plain_ns: list[int] = []
    enc_ns: list[int] = []
    pc = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for r in range(warmup + rounds):
            key, tok = keys[r % n], toks[r]
            first, second = (plain, encrypted) if r % 2 == 0 else (encrypted, plain)
            t0 = pc()
            first.set(key, tok)
            t1 = pc()
            second.set(key, tok)
            t2 = pc()
            a, b = t1 - t0, t2 - t1
            p, e = (a, b) if first is plain else (b, a)
            if r >= warmup:
                plain_ns.append(p)
                enc_ns.append(e)
    finally:
        gc.enable()
    return plain_ns, enc_ns


def bench_get(plain: TokenStore, encrypted: TokenStore, keys: list[str], samples: int,
              batch: int) -> tuple[list[float], list[float]]:
    n = len(keys)
    seq = [keys[(i * 7) % n] for i in range(batch)]
    for store in (plain, encrypted):
        for k in keys:
            assert store.get(k) is not None
        for k in seq:  # warm-up
            store.get(k)
    plain_ns: list[float] = []
    enc_ns: list[float] = []
    pc = time.perf_counter_ns
    pget, eget = plain.get, encrypted.get
    gc.collect()
    gc.disable()
    try:
        for s in range(samples):
            order = ((pget, plain_ns), (eget, enc_ns))
            if s % 2:
                order = order[::-1]
            for get, out in order:
                t0 = pc()
                for k in seq:
                    get(k)
                out.append((pc() - t0) / batch)
    finally:
        gc.enable()
    return plain_ns, enc_ns


def bench_cold_get(kind: str, directory: str, key: bytes, keys: list[str], rounds: int,
                   rng: random.Random, base: float) -> list[int]:
    """get() of a record another handle just rewrote: one decryption per call."""
    reader = EncryptedStore(open_backend(kind, directory, durable=True), StaticKey(key))
    writer = EncryptedStore(open_backend(kind, directory, durable=False), StaticKey(key))
    out: list[int] = []
    pc = time.perf_counter_ns
    for r in range(rounds):
        k = keys[r % len(keys)]
        writer.set(k, make_tokens(rng, r, base))
        reader.get(keys[(r + 1) % len(keys)])  # the file is re-read; k not yet decrypted
        t0 = pc()
        reader.get(k)
        out.append(pc() - t0)
    reader.close()
    writer.close()
    return out


def check(plain: TokenStore, encrypted: TokenStore, kind: str, directory: str,
          key: bytes, keys: list[str]) -> list[str]:
    problems = []
    fresh = EncryptedStore(open_backend(kind, directory, durable=True), StaticKey(key))
    for k in keys:
        value = encrypted.get(k)
        if not isinstance(value, Tokens) or fresh.get(k) != value:
            problems.append(f"{kind}: encrypted {k!r} does not read back")
        if not isinstance(plain.get(k), Tokens):
            problems.append(f"{kind}: plain {k!r} missing")
    fresh.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=200, help="set() rounds per backend")
    parser.add_argument("--samples", type=int, default=200, help="get() batches per store")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dir", help="directory for the store files (default: see above)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.samples = 60, 60
    base_dir, fs, why = choose_dir(args.dir)
    rng = random.Random(17)
    base = time.time()
    key = generate_key()
    keys = store_keys(args.keys)
    results: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "dir": base_dir, "fs": fs.fstype, "why": why, "keys": args.keys, "backends": {},
    }
    problems: list[str] = []
    missed: list[str] = []
    try:
        for kind in ("file", "sqlite"):
            plain, encrypted = make_pair(kind, base_dir, keys, rng, base, key)
            p_set, e_set = bench_set(plain, encrypted, keys, args.rounds, 10, rng, base)
            p_get, e_get = bench_get(plain, encrypted, keys, args.samples, args.batch)
            cold = bench_cold_get(kind, os.path.join(base_dir, f"{kind}-encrypted"), key, keys,
                                  min(args.rounds, 100), rng, base)
            problems += check(plain, encrypted, kind, os.path.join(base_dir, f"{kind}-encrypted"),
                              key, keys)
            plain.close()
            encrypted.close()
            set_ratio = pct(e_set, 50) / pct(p_set, 50)
            get_extra = (pct(e_get, 50) - pct(p_get, 50)) / 1000
            if set_ratio > SET_GOAL:
                missed.append(f"{kind}: encrypted set() {set_ratio:.2f}x plain > {SET_GOAL}x")
            if get_extra > GET_GOAL_US:
                missed.append(f"{kind}: encrypted warm get() +{get_extra:.2f} µs > {GET_GOAL_US}")
            results["backends"][kind] = {
                "set_plain_ns": {"median": pct(p_set, 50), "p90": pct(p_set, 90)},
                "set_encrypted_ns": {"median": pct(e_set, 50), "p90": pct(e_set, 90)},
                "set_ratio_median": set_ratio,
                "get_plain_ns": {"median": pct(p_get, 50), "p90": pct(p_get, 90)},
                "get_encrypted_ns": {"median": pct(e_get, 50), "p90": pct(e_get, 90)},
                "get_extra_us_median": get_extra,
                "cold_get_encrypted_ns": {"median": pct([float(x) for x in cold], 50)},
                "rounds": len(p_set), "samples": len(p_get),
            }
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
    results["problems"] = problems
    results["missed"] = missed
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"Python {results['python']} on {results['platform']}")
        print(f"files in {base_dir} ({fs.fstype}; {why}); {args.keys} keys, JWT-sized tokens")
        if fs.fstype in ("tmpfs", "ramfs"):
            print("WARNING: tmpfs: fsync is free, so the set() ratio says little")
        head = (f"{'backend':<8} {'operation':<16} {'plain':>18} {'encrypted':>18} "
                f"{'ratio / extra':>16}")
        print(head)
        print("-" * len(head))
        for kind, r in results["backends"].items():
            ps, es = r["set_plain_ns"], r["set_encrypted_ns"]
            print(f"{kind:<8} {'set() durable':<16} "
                  f"{fmt_us(ps['median'] / 1000):>8} p90 {fmt_us(ps['p90'] / 1000):>5} "
                  f"{fmt_us(es['median'] / 1000):>8} p90 {fmt_us(es['p90'] / 1000):>5} "
                  f"{r['set_ratio_median']:>9.3f}x (<= {SET_GOAL}x)")
            pg, eg = r['get_plain_ns'], r['get_encrypted_ns']
            print(f"{kind:<8} {'warm get()':<16} "
                  f"{fmt_us(pg['median'] / 1000):>8} p90 {fmt_us(pg['p90'] / 1000):>5} "
                  f"{fmt_us(eg['median'] / 1000):>8} p90 {fmt_us(eg['p90'] / 1000):>5} "
                  f"{r['get_extra_us_median']:>+8.2f} µs (<= {GET_GOAL_US:g} µs)")
            print(f"{kind:<8} {'cold get() (dec)':<16} {'':>18} "
                  f"{fmt_us(r['cold_get_encrypted_ns']['median'] / 1000):>8}")
        for line in missed:
            print("MISSED:", line)
        for line in problems:
            print("CHECK FAILED:", line)
    if problems:
        return 2
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
