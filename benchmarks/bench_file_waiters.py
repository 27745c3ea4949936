"""Waiters of a file-based store's refresh lock: one refresh, how fast everyone has the new token.

Run from the project root::

    .venv/bin/python benchmarks/bench_file_waiters.py              # before and after, ~1 minute
    .venv/bin/python benchmarks/bench_file_waiters.py --clients 64 --backends file

For each backend (``file``: FileStore; ``sqlite``: SQLiteStore), each N
(16 = 4 processes x 4 threads, 64 = 8 x 8) and each mode, side by side in one run:

1. A real login against ``oauth_callback.testing.MockProvider`` (refresh-token
   rotation; token endpoint answering after ``--latency`` seconds, default
   0.3), then the stored access token is expired.
2. N clients (one ``TokenManager`` per thread, one store per process, one
   ``OAuthClient`` per process) wait at a barrier and are released together
   (a file appears; the release time is ``time.monotonic()``, system-wide on Linux).
3. Each records its *time to token*: from the release until ``access_token()``
   returned the new token, and how many times it took the refresh lock.

Modes: ``after`` is the library as it is (waiters sleep in a blocking
``flock(LOCK_SH)`` watcher and, on the release, return the replaced token
without taking the lock: ``InterProcessLock.acquire_unless``); ``before``
hides ``acquire_unless`` in the clients, so ``TokenManager`` queues for the
lock as it did before (each waiter polls ``flock(LOCK_EX|LOCK_NB)`` with a
backoff up to 5 ms, takes the lock, reads the store, finds the token fresh).

Printed per row: refreshes the provider saw (must be 1), refresh-lock
acquisitions in all (1 is the refresher alone), when the refresh request
reached the provider (from the release), p50 / p99 / max time to token
and how long after the provider's answer the p99 client had it. Exit status 1
when a row has more than one refresh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _fleet  # noqa: E402

from oauth_callback import OAuthClient, Tokens  # noqa: E402
from oauth_callback.storage.url import open_store  # noqa: E402
from oauth_callback.testing import MockProvider  # noqa: E402

KEY = "fleet"
LAYOUT = {16: (4, 4), 64: (8, 8), 256: (16, 16)}
URLS = {
    "file": lambda d: f"file:{d / 'tokens.json'}",
    "sqlite": lambda d: f"sqlite:{d / 'tokens.db'}",
}



def _browse(url: str) -> None:
    import httpx2

    def run() -> None:
        with httpx2.Client(follow_redirects=True, timeout=10) as http:
            http.get(url)

    threading.Thread(target=run, daemon=True).start()



def run_row(backend: str, n: int, mode: str, latency: float, workdir: Path) -> dict[str, object]:
    procs, threads = LAYOUT[n]
    directory = Path(tempfile.mkdtemp(dir=workdir))
    url = URLS[backend](directory)
    with MockProvider() as provider:
        store = open_store(url)
        client = OAuthClient.discover(provider.issuer, "test-client")
        client.login(store, KEY, open_browser=_browse, timeout=30)
        provider.expire_access_tokens()
        store.update(KEY, lambda t: t.replace(expires_at=time.time() - 5) if t else t)
        provider.token_delay = latency
        barrier = directory / "barrier"
        barrier.mkdir()
        children = _fleet.start(url, KEY, barrier, procs, threads, mode)
        released = _fleet.release(barrier)
        reports = _fleet.collect(children)
        results = [r for report in reports for r in report["results"]]
        times = sorted((t - released) * 1000 for t, _token in results)
        sent = [t for t, r in zip(provider.token_request_times, provider.token_requests,
                                  strict=False)
                if r.get("grant_type") == "refresh_token"]
        final = open_store(url).get(KEY)
        assert isinstance(final, Tokens)
        assert {token for _t, token in results} == {final.access_token}
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        return {
            "backend": backend, "mode": mode, "clients": n, "layout": f"{procs}x{threads}",
            "refreshes": provider.refresh_requests,
            "lock_taken": sum(report["taken"] for report in reports),
            "refresh_sent_ms": (sent[0] - released) * 1000 if sent else float("nan"),
            "p50_ms": statistics.median(times), "p99_ms": p99, "max_ms": times[-1],
            "p99_after_answer_ms": (
                p99 - ((sent[0] - released) * 1000 + latency * 1000) if sent else float("nan")
            ),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[16, 64], choices=sorted(LAYOUT))
    parser.add_argument("--backends", nargs="*", default=["file", "sqlite"], choices=sorted(URLS))
    parser.add_argument("--modes", nargs="*", default=["before", "after"],
                        choices=["before", "after"])
    parser.add_argument("--latency", type=float, default=0.3,
                        help="seconds the token endpoint takes to answer (default 0.3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="oc-bench-file-waiters-") as tmp:
        for backend in args.backends:
            for n in args.clients:
                for mode in args.modes:
                    rows.append(run_row(backend, n, mode, args.latency, Path(tmp)))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"provider latency {args.latency * 1000:.0f} ms; time to token from the release\n")
        columns = ["backend", "clients (proc x thr)", "mode", "refreshes", "lock taken",
                   "refresh sent at ms", "p50 ms", "p99 ms", "max ms", "p99 after answer ms"]
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for r in rows:
            cells = [r["backend"], f"{r['clients']} ({r['layout']})", r["mode"], r["refreshes"],
                     r["lock_taken"],
                     *(f"{float(r[k]):.0f}" for k in (  # type: ignore[arg-type]
                         "refresh_sent_ms", "p50_ms", "p99_ms", "max_ms", "p99_after_answer_ms"))]
            print("| " + " | ".join(str(c) for c in cells) + " |")
    return 1 if any(r["refreshes"] != 1 for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
