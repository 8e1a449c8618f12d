"""Request ids: minting them cheaply, and knowing which ones were served (for /feedback).

An id is ``<12 hex chars random per server start>-<hex counter>``: unique within a
process by construction and across restarts with overwhelming probability, and minting
one costs a counter increment instead of a ``uuid4``.

``/feedback`` must only accept ids the server answered. Recent ids live in a bounded
in-memory set (evicted a request at a time, oldest first); older ones are looked up in the
on-disk prediction log with DuckDB.
"""

from __future__ import annotations

import collections
import itertools
import secrets
from collections.abc import Iterable
from pathlib import Path

from mlcicd_dagster.serving.logs import PART_GLOB


class IdMinter:
    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6) + "-"
        self._counter = itertools.count(1)

    def mint(self, n: int) -> list[str]:
        p, c = self._prefix, self._counter
        if n == 1:
            return [f"{p}{next(c):x}"]
        return [f"{p}{next(c):x}" for _ in range(n)]


class RecentIds:
    """A bounded set of the most recent request ids (oldest evicted first).

    Ids are kept in a set plus a deque of plain strings: neither holds per-request
    containers, so hundreds of thousands of ids add nothing to what the garbage collector
    has to traverse (a deque of per-request lists made full collections take ~200 ms).
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._ids: set[str] = set()
        self._order: collections.deque[str] = collections.deque()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: list[str]) -> None:
        self._ids.update(ids)
        self._order.extend(ids)
        while len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._ids


def ids_on_disk(directory: Path, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` appear in the prediction log parts under ``directory``."""
    wanted = sorted(set(ids))
    if not wanted or not any(Path(directory).glob(PART_GLOB)):
        return set()
    import duckdb

    glob = str(Path(directory) / PART_GLOB)
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT DISTINCT request_id FROM read_parquet(?, union_by_name=true) "
            "WHERE request_id IN (SELECT unnest(?::VARCHAR[]))",
            [glob, wanted],
        ).fetchall()
    finally:
        con.close()
    return {r[0] for r in rows}
