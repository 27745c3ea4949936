"""Start-up time of the ``oauth-callback`` command next to a bare interpreter.

Run from the project root::

    .venv/bin/python benchmarks/bench_cli.py              # table
    .venv/bin/python benchmarks/bench_cli.py --rounds 60  # more rounds
    .venv/bin/python benchmarks/bench_cli.py --json       # machine-readable

Measured, as wall time of a fresh process (``subprocess.run`` from start to
exit), in one run with the rounds interleaved (the baseline and every command
take turns, so machine load hits all alike):

* baseline: ``python -c pass`` (the same interpreter);
* ``oauth-callback token KEY`` for a valid stored token (a temporary
  ``FileStore`` holding one token that expires in a day);
* ``oauth-callback --help``;
* ``oauth-callback tokens list`` (the same store).

The command is the console script installed next to the interpreter
(``oauth-callback``), or ``python -m oauth_callback`` when there is none.
Printed per row: the median and the 90th percentile in milliseconds, and the
ratio of the medians to the baseline. Target: every ratio <= 3x.
``PYTHONDONTWRITEBYTECODE`` is removed from the children's environment so
that, as in an installed package, modules load from cached bytecode.

Exit status: 0; 1 with ``--strict`` when a target is missed; 2 when a command
fails (non-zero exit or, for ``token``, not the stored token on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TARGET = 3.0
TOKEN = "bench-access-token-0123456789"


def _command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "oauth-callback")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "oauth_callback"]


def _make_store(directory: str) -> str:
    path = os.path.join(directory, "tokens.json")
    setup = (
        "import sys, time\n"
        "from oauth_callback import FileStore, Tokens\n"
        "FileStore(sys.argv[1]).set('bench', Tokens(access_token=sys.argv[2], "
        "refresh_token='r', expires_at=time.time() + 86400, scope='read'))\n"
    )
    subprocess.run([sys.executable, "-c", setup, path, TOKEN], check=True)
    return path


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed runs per row (30)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="oauth-callback-bench-cli-")
    try:
        store = _make_store(directory)
        env = {**os.environ, "OAUTH_CALLBACK_STORE": store}
        # As installed: compiled bytecode is cached (the warm-up writes it).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        command = _command()
        rows: dict[str, list[str]] = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "oauth-callback token KEY": [*command, "token", "bench"],
            "oauth-callback --help": [*command, "--help"],
            "oauth-callback tokens list": [*command, "tokens", "list"],
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        for name, argv in rows.items():  # warm-up: page cache, .pyc files
            _, done = _time(argv, env)
            wrong = name.endswith("token KEY") and done.stdout.strip() != TOKEN
            if done.returncode != 0 or wrong:
                print(f"{name} failed (exit {done.returncode}): {done.stderr.strip()}",
                      file=sys.stderr)
                return 2
        for i in range(args.rounds):
            order = list(rows) if i % 2 == 0 else list(reversed(rows))  # ABBA
            for name in order:
                elapsed, _ = _time(rows[name], env)
                times[name].append(elapsed)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    base = statistics.median(times["python -c pass"])
    report = []
    for name, samples in times.items():
        median = statistics.median(samples)
        p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
        report.append({"row": name, "median_ms": round(median * 1000, 1),
                       "p90_ms": round(p90 * 1000, 1), "ratio": round(median / base, 2)})
    missed = [r for r in report[1:] if r["ratio"] > TARGET]
    if args.json:
        print(json.dumps({"command": " ".join(command), "rounds": args.rounds,
                          "target_ratio": TARGET, "rows": report}, indent=2))
    else:
        print(f"command: {' '.join(command)}   rounds: {args.rounds}   target: <= {TARGET:g}x")
        print(f"{'row':<28} {'median ms':>10} {'p90 ms':>8} {'ratio':>7}")
        for r in report:
            mark = "" if r is report[0] else ("  ok" if r["ratio"] <= TARGET else "  MISSED")
            print(f"{r['row']:<28} {r['median_ms']:>10.1f} {r['p90_ms']:>8.1f} "
                  f"{r['ratio']:>6.2f}x{mark}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
