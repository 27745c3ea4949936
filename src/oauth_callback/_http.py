"""The HTTP client library, chosen once.

``httpx2`` (the client the ``mcp`` SDK 2.x uses) needs Python 3.11+; on
Python 3.10 its API-identical predecessor ``httpx`` is used instead (the
package declares the matching conditional dependency).
"""

from __future__ import annotations

try:
    import httpx2
except ImportError:  # pragma: no cover - Python 3.10
    import httpx as httpx2  # type: ignore[no-redef,import-not-found,unused-ignore]

__all__ = ["httpx2"]
