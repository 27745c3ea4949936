"""One process of a benchmark fleet (run by ``_fleet.py``; not a benchmark itself).

``python _fleet_child.py URL KEY BARRIER INDEX THREADS [MODE]``: opens the store,
makes THREADS ``TokenManager``s on one HTTP client (a long-running service keeps one:
its TLS context, its pool), creates ``BARRIER/ready-INDEX`` once every thread waits, and
on ``BARRIER/go`` each thread asks for the access token once. Prints one JSON object:
``{"results": [[monotonic time the thread had it, token], ...], "taken": N}``, N being
how many times a file refresh lock was taken. MODE ``before`` (file stores) removes
``InterProcessLock.acquire_unless``, so waiters queue for the lock as they used to.
"""

import json
import os
import sys
import threading
import time

from oauth_callback import OAuthClient
from oauth_callback.locking import InterProcessLock
from oauth_callback.manager import TokenManager
from oauth_callback.storage.url import open_store

url, key, barrier, index = sys.argv[1:5]
threads = int(sys.argv[5])
mode = sys.argv[6] if len(sys.argv) > 6 else "after"
if mode == "before":
    del InterProcessLock.acquire_unless  # type: ignore[misc]
taken = [0]
original = InterProcessLock.acquire


def acquire(self, timeout=None):  # type: ignore[no-untyped-def]
    original(self, timeout)
    if ".refresh-" in self.path:
        taken[0] += 1


InterProcessLock.acquire = acquire  # type: ignore[method-assign]
store = open_store(url)
store.get(key)  # connected before the release
import httpx2  # noqa: E402

http = httpx2.Client(timeout=30)
oauth = OAuthClient.from_client_info(store.get_client(key), http_client=http)
managers = [TokenManager(store, key, oauth, lock_timeout=60) for _ in range(threads)]
go = threading.Event()
results: list[object] = [None] * threads


def client(i: int) -> None:
    go.wait()
    token = managers[i].access_token()
    results[i] = (time.monotonic(), token)


workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
open(os.path.join(barrier, "ready-" + index), "w").close()
path = os.path.join(barrier, "go")
while not os.path.exists(path):
    time.sleep(0.0005)
go.set()
for w in workers:
    w.join()
print(json.dumps({"results": results, "taken": taken[0]}))
