"""What the fleet benchmarks share: start PROCS child processes of THREADS clients each
(``_fleet_child.py``), release them at once, collect what each thread got and when."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).with_name("_fleet_child.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start(url: str, key: str, barrier: Path, procs: int, threads: int,
          *extra: str) -> list[subprocess.Popen[str]]:
    """The children, once every thread of every one waits for the release."""
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), url, key, str(barrier), str(i), str(threads), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        for i in range(procs)
    ]
    deadline = time.monotonic() + 120
    while len(list(barrier.glob("ready-*"))) < procs:
        if time.monotonic() > deadline or any(c.poll() is not None for c in children):
            failed = [c for c in children if c.poll() is not None]
            raise RuntimeError("clients did not start: " + "".join(
                c.stderr.read() for c in failed if c.stderr))
        time.sleep(0.005)
    time.sleep(0.2)  # every thread is parked on its event
    return children


def release(barrier: Path) -> float:
    """Let every client go; the monotonic time of the release."""
    released = time.monotonic()
    (barrier / "go").touch()
    return released


def collect(children: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Each child's report (``_fleet_child.py``); a child that failed raises."""
    outputs = [c.communicate(timeout=180) for c in children]
    for c, (_out, err) in zip(children, outputs, strict=True):
        if c.returncode != 0:
            raise RuntimeError(f"a client failed:\n{err[-3000:]}")
    return [json.loads(out) for out, _ in outputs]
