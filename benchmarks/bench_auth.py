"""Per-request overhead of ``manager.httpx_auth()`` with a valid cached token.

Run from the project root::

    .venv/bin/python benchmarks/bench_auth.py            # table, ~10 s
    .venv/bin/python benchmarks/bench_auth.py --json     # machine-readable
    .venv/bin/python benchmarks/bench_auth.py --requests 5000 --rounds 15

What is measured, in one run, side by side:

1. the auth step alone, as a client runs it for each request: httpx2's own
   no-auth flow (``httpx2.Auth()``, which a client without ``auth=`` runs)
   plus setting the header by hand, next to ``httpx_auth()``'s flow (sync and
   async). This is the precise per-request overhead; goal: within a few
   microseconds.
2. ``httpx2.Client`` with an in-process transport (``httpx2.MockTransport``
   answering ``200``; no socket, so the difference is the auth and nothing
   else): two baselines, a bare ``Authorization`` header passed with every
   request and one set once on the client, next to the same requests sent
   with ``auth=manager.httpx_auth()`` over a ``FileStore`` holding a valid
   token. The overhead is measured against the cheaper baseline; on a loaded
   machine the noise of a whole request is larger than the overhead.
3. the same with ``httpx2.AsyncClient`` (asyncio).
4. for context, a real loopback HTTP server (keep-alive): bare header vs auth;
   the network dominates here.
5. for context, ``manager.access_token()`` per call, which reads the store
   every time (what the auth's in-memory cache saves).

Baseline and auth batches alternate (ABC CBA order) after a warm-up, ``gc`` is
off while timing; each figure is the median over ``--rounds`` batches of
``--requests`` requests, in microseconds per request. Every answer is checked
(status 200, the token sent is the stored one), so a broken auth cannot look
fast. Exit status 0, or 2 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2

from oauth_callback import FileStore, TokenManager, Tokens

TOKEN = "at_" + "x" * 797  # a JWT-sized access token (800 chars)
KEY = "bench"


def _check(ok: bool, what: str) -> None:
    if not ok:
        print(f"self-check failed: {what}", file=sys.stderr)
        raise SystemExit(2)


def _handler(request: httpx2.Request) -> httpx2.Response:
    ok = request.headers.get("authorization") == "Bearer " + TOKEN
    return httpx2.Response(200 if ok else 401)


def _interleaved(runs: list[Callable[[], float]], rounds: int) -> list[list[float]]:
    """Run each batch once per round, the order reversed every other round (ABC CBA)."""
    results: list[list[float]] = [[] for _ in runs]
    for run in runs:  # warm-up
        run()
    for i in range(rounds):
        order = list(range(len(runs))) if i % 2 == 0 else list(reversed(range(len(runs))))
        for j in order:
            results[j].append(runs[j]())
    return results


def _medians(results: list[list[float]]) -> dict[str, float]:
    names = ("per_request_header_us", "client_header_us", "auth_us")
    return {name: statistics.median(r) for name, r in zip(names, results, strict=True)}


def _timed(batch: Callable[[], None], n: int) -> Callable[[], float]:
    def run() -> float:
        gc.disable()
        try:
            start = time.perf_counter()
            batch()
            return (time.perf_counter() - start) / n * 1e6
        finally:
            gc.enable()

    return run


def bench_sync(manager: TokenManager, n: int, rounds: int) -> dict[str, float]:
    transport = httpx2.MockTransport(_handler)
    header = {"Authorization": "Bearer " + TOKEN}
    with httpx2.Client(transport=transport) as bare, httpx2.Client(
        transport=transport, headers=header
    ) as preset, httpx2.Client(transport=transport, auth=manager.httpx_auth()) as authed:
        return _medians(_interleaved([
            _timed(_batch(bare, "http://api.test/me", n, header), n),
            _timed(_batch(preset, "http://api.test/me", n, None), n),
            _timed(_batch(authed, "http://api.test/me", n, None), n),
        ], rounds))


def _batch(client: httpx2.Client, url: str, n: int, headers: Any) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            response = client.get(url, headers=headers)
        _check(response.status_code == 200, f"sync request to {url}")

    return run


def bench_async(manager: TokenManager, n: int, rounds: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        transport = httpx2.MockTransport(_handler)
        header = {"Authorization": "Bearer " + TOKEN}
        async with httpx2.AsyncClient(transport=transport) as bare, httpx2.AsyncClient(
            transport=transport, headers=header
        ) as preset, httpx2.AsyncClient(
            transport=transport, auth=manager.httpx_auth()
        ) as authed:
            async def batch(client: httpx2.AsyncClient, headers: Any) -> float:
                gc.disable()
                try:
                    start = time.perf_counter()
                    for _ in range(n):
                        response = await client.get("http://api.test/me", headers=headers)
                    elapsed = time.perf_counter() - start
                finally:
                    gc.enable()
                _check(response.status_code == 200, "async request")
                return elapsed / n * 1e6

            sides = [(bare, header), (preset, None), (authed, None)]
            results: list[list[float]] = [[] for _ in sides]
            for client, headers in sides:  # warm-up
                await batch(client, headers)
            for i in range(rounds):
                order = [0, 1, 2] if i % 2 == 0 else [2, 1, 0]
                for j in order:
                    results[j].append(await batch(*sides[j]))
        return _medians(results)

    return asyncio.run(main())


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == "Bearer " + TOKEN
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()


def bench_loopback(manager: TokenManager, n: int, rounds: int) -> dict[str, float]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/me"
    header = {"Authorization": "Bearer " + TOKEN}
    try:
        with httpx2.Client() as bare, httpx2.Client(headers=header) as preset, httpx2.Client(
            auth=manager.httpx_auth()
        ) as authed:
            return _medians(_interleaved([
                _timed(_batch(bare, url, n, header), n),
                _timed(_batch(preset, url, n, None), n),
                _timed(_batch(authed, url, n, None), n),
            ], rounds))
    finally:
        server.shutdown()
        server.server_close()


def bench_flow(manager: TokenManager, n: int, rounds: int) -> dict[str, dict[str, float]]:
    """The auth step alone, as the client runs it for every request: httpx2's own
    no-auth flow (``httpx2.Auth()``, what a client without ``auth=`` runs) plus
    setting the header by hand, next to ``httpx_auth()``'s flow."""
    auth = manager.httpx_auth()
    plain = httpx2.Auth()
    request = httpx2.Request("GET", "http://api.test/me")
    response = httpx2.Response(200)
    value = "Bearer " + TOKEN

    def bare_sync() -> None:
        for _ in range(n):
            flow = plain.sync_auth_flow(request)
            next(flow).headers["Authorization"] = value
            with contextlib.suppress(StopIteration):
                flow.send(response)

    def auth_sync() -> None:
        for _ in range(n):
            flow = auth.sync_auth_flow(request)
            next(flow)
            with contextlib.suppress(StopIteration):
                flow.send(response)
        _check(request.headers["Authorization"] == value, "sync flow header")

    sync = _interleaved([_timed(bare_sync, n), _timed(auth_sync, n)], rounds)

    async def bare_async() -> None:
        for _ in range(n):
            flow = plain.async_auth_flow(request)
            (await flow.__anext__()).headers["Authorization"] = value
            with contextlib.suppress(StopAsyncIteration):
                await flow.asend(response)

    async def auth_async() -> None:
        for _ in range(n):
            flow = auth.async_auth_flow(request)
            await flow.__anext__()
            with contextlib.suppress(StopAsyncIteration):
                await flow.asend(response)

    def in_loop(coro: Callable[[], Any]) -> Callable[[], float]:
        return _timed(lambda: asyncio.run(coro()), n)

    asynchronous = _interleaved([in_loop(bare_async), in_loop(auth_async)], rounds)
    out = {}
    for name, (bare, authed) in (("sync_flow", sync), ("async_flow", asynchronous)):
        out[name] = {"no_auth_flow_us": statistics.median(bare),
                     "auth_us": statistics.median(authed)}
    return out


def bench_store_read(manager: TokenManager, n: int, rounds: int) -> dict[str, float]:
    def run() -> None:
        for _ in range(n):
            token = manager.access_token()
        _check(token == TOKEN, "manager.access_token()")

    timed = _timed(run, n)
    timed()
    return {"access_token_us": statistics.median(timed() for _ in range(rounds))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=9, help="batches per side")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "tokens.json")
        store.set(KEY, Tokens(TOKEN, refresh_token="rt", expires_at=time.time() + 86400))
        manager = TokenManager(store, KEY)
        n, rounds = args.requests, args.rounds
        flows = bench_flow(manager, n * 5, rounds)
        results = {
            "sync_mock_transport": bench_sync(manager, n, rounds),
            "async_mock_transport": bench_async(manager, n, rounds),
            "sync_loopback": bench_loopback(manager, max(n // 4, 1), rounds),
        }
        store_read = bench_store_read(manager, n, rounds)
    for row in results.values():
        bare = min(row["per_request_header_us"], row["client_header_us"])
        row["overhead_us"] = row["auth_us"] - bare  # against the cheaper bare header
        row["ratio"] = row["auth_us"] / bare
    for row in flows.values():
        row["overhead_us"] = row["auth_us"] - row["no_auth_flow_us"]
    if args.json:
        print(json.dumps({"requests": n, "rounds": rounds, **flows, **results, **store_read},
                         indent=2))
        return 0
    print(f"httpx_auth() per-request overhead with a valid cached token "
          f"(medians of {rounds} batches; microseconds per request)")
    print()
    print(f"1. the auth step alone, {n * 5} requests per batch")
    print(f"{'flow':<22}{'no auth + header':>17}{'httpx_auth()':>13}{'overhead':>10}")
    for name, row in flows.items():
        print(f"{name:<22}{row['no_auth_flow_us']:>17.2f}{row['auth_us']:>13.2f}"
              f"{row['overhead_us']:>+10.2f}")
    print()
    print(f"2. whole requests through a client, {n} per batch "
          "(mock transport: no socket; loopback: a real server)")
    print(f"{'client':<22}{'header/request':>15}{'client header':>14}{'httpx_auth()':>13}"
          f"{'overhead':>10}{'ratio':>8}")
    for name, row in results.items():
        print(f"{name:<22}{row['per_request_header_us']:>15.1f}{row['client_header_us']:>14.1f}"
              f"{row['auth_us']:>13.1f}{row['overhead_us']:>+10.1f}{row['ratio']:>7.2f}x")
    print("overhead and ratio: httpx_auth() against the cheaper of the two bare headers")
    print(f"context: manager.access_token() (reads the store each call): "
          f"{store_read['access_token_us']:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
