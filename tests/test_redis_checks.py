"""RedisStore checks no other test pinned.

* A renewal extends the lock only while its owner token is still the one in Redis
  (``_RENEW``'s compare). A holder that was paused past its lease, and whose lock
  another process then took, must not extend (or shorten) the new holder's lease when
  it wakes up. The old holder is a real child process paused with SIGSTOP.
* With replicas required, an update that finds nothing to change confirms that on
  the primary (``_modify``): after a failover a pooled connection may still read the
  demoted primary, whose data can hold a save the new primary never got; taking
  "already saved" from there loses it (seen in the Sentinel refresh storm).

Real redis-servers (tests/redis_server.py). Each test fails when the check it names is
deleted from oauth_callback.storage.redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .redis_server import REDIS_SERVER, RedisServer, prefix_for, session_server, skip_reason

pytestmark = [pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
              pytest.mark.timeout(120)]

pytest.importorskip("redis", reason="redis-py is not installed (pip install 'oauth-callback[redis]')")

from oauth_callback import StoreError, Tokens  # noqa: E402
from oauth_callback.storage.redis import RedisStore  # noqa: E402

from .conftest import python_env  # noqa: E402

# Holds the "shared" lock with a short lease until a line arrives on stdin.
HOLDER = """
import sys
from oauth_callback.storage.redis import RedisStore
store = RedisStore(sys.argv[1], lock_lease=float(sys.argv[2]))
with store.refresh_lock("shared", timeout=10):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""

A_LEASE = 0.6  # the paused holder's lease, seconds
B_LEASE = 120.0  # the new holder's: its renewer does not run during the test


@pytest.fixture
def server() -> RedisServer:
    return session_server()


def _wait_for(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_stale_holder_waking_up_does_not_renew_the_new_holders_lock(
    server: RedisServer, tmp_path: Path
) -> None:
    url = server.url_for(prefix_for(tmp_path))
    store = RedisStore(url, lock_lease=B_LEASE)
    r = server.client()
    lock_key = store.redis_key("refresh-lock", "shared")
    child = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(A_LEASE)], env=python_env(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(child.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        assert child.stdout.readline().strip() == "held", "".join(errors)
        owner_a = r.get(lock_key)
        assert owner_a is not None
        child.send_signal(signal.SIGSTOP)  # A and its renewer freeze
        _wait_for(lambda: not r.exists(lock_key), "A's lease to run out")
        with store.refresh_lock("shared", timeout=30):
            owner_b = r.get(lock_key)
            assert owner_b is not None and owner_b != owner_a
            child.send_signal(signal.SIGCONT)
            # A's renewer is overdue: it runs at once. Either it sees the lock is not
            # its own any more and says so (and stops), or it touched B's lease.
            _wait_for(lambda: any("expired while held" in line for line in errors)
                      or 0 <= int(r.pttl(lock_key)) <= A_LEASE * 1000 or not r.exists(lock_key),
                      "A's renewer to run")
            assert r.get(lock_key) == owner_b, "B's lock is gone: A's renewal cut B's lease"
            ttl = int(r.pttl(lock_key))
            assert ttl > B_LEASE * 1000 / 2, f"A's renewal set B's lease to {ttl} ms"
            assert any("expired while held" in line for line in errors)
            child.stdin.write("release\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "released"
            assert child.wait(30) == 0, "".join(errors)
            assert r.get(lock_key) == owner_b  # A's release left B's lock alone too
            assert int(r.pttl(lock_key)) > B_LEASE * 1000 / 2
        assert not r.exists(lock_key)  # B's own release deletes it
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.wait()
        reader.join(10)


def test_nothing_to_change_read_from_a_demoted_primary_is_not_taken_as_saved(
    tmp_path: Path,
) -> None:
    """The state a failover leaves behind: this process's connection still reaches the
    old primary, now a replica that has not resynced yet (it serves its own data, with
    the save it took but never replicated, and refuses writes). A save retried there
    (``TokenManager`` re-runs its compare-and-set update after a failed acknowledgement)
    finds its own tokens and would write nothing: the update must fail instead, so the
    caller tries again on the new primary."""
    assert REDIS_SERVER is not None
    demoted = RedisServer(tmp_path / "old-primary")
    demoted.start()
    try:
        prefix = prefix_for(tmp_path)
        before, saved = Tokens("at-before", refresh_token="rt-before"), Tokens(
            "at-saved", refresh_token="rt-saved")
        RedisStore(demoted.url_for(prefix), replicas=0).set("k", saved)  # never replicated
        gone = RedisServer(tmp_path / "gone")  # a primary that is not there
        demoted.client().execute_command("REPLICAOF", "127.0.0.1", str(gone.port))
        assert demoted.client().info("replication")["role"] == "slave"
        store = RedisStore(demoted.url_for(prefix), replicas=1, replicas_timeout=0.1,
                           retry_timeout=1.0)
        assert store.get("k") == saved  # the stale read

        def if_unchanged(current: Tokens | None) -> Tokens | None:
            return current if current != before else saved  # as TokenManager's save

        with pytest.raises(StoreError):
            store.update("k", if_unchanged)
        store.close()
    finally:
        demoted.stop()
