"""A lease lock in the home: one writer at a time, and a dead holder never jams it.

A lease is a small JSON file (``owner``, ``pid``, ``host``, ``expires_at``) at a path
in the home (``Home.lease(name)``). Acquiring it succeeds when no lease is there, or the
one there has expired, or its holder is a process of this host that no longer
exists (a ``kill -9`` releases it at once, without waiting for the expiry). Every
read-check-write of a lease file happens under an ``flock`` of a guard file beside
it, so two processes can never both take a free lease. A holder renews its lease
while it works (``renew_every_s``, in a background thread), so a long step keeps
it and a hung host loses it after ``ttl_s``.

Leases are re-entrant within a process: a rollout tick that holds the deployment
lease may call ``transition``, which takes the same lease again without waiting.

Who uses them: every change of deployment state (``rollout.state.transition`` and the
rollout controller's tick) and ``mlcicd cycle``'s claim of a sensor's run request, so
two cycles, or a cycle beside the daemon, never both deploy or both run the same work.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcicd_dagster.errors import MlcicdError

DEFAULT_TTL_S = 60.0  # a holder that stops renewing (host hung) loses the lease after this
HOST = socket.gethostname()


class LeaseBusy(MlcicdError, RuntimeError):
    """Another live process holds the lease (and did not release it in time)."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            f"{path.name} is held by pid {holder.get('pid')} on {holder.get('host')} "
            f"({holder.get('owner')}) until {holder.get('expires_at_iso')}"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(info: dict[str, Any], now: float | None = None) -> bool:
    """Is the lease ``info`` still held (not expired, and its process alive if local)?"""
    now = time.time() if now is None else now
    if float(info.get("expires_at", 0)) <= now:
        return False
    if info.get("host") == HOST:
        try:
            return _pid_alive(int(info.get("pid", 0)))
        except (TypeError, ValueError):
            return False
    return True


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".guard", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # a torn or corrupt lease holds nothing
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def read_holder(path: Path) -> dict[str, Any] | None:
    """The live holder of the lease at ``path``, or None (free, expired or dead)."""
    info = _read(Path(path))
    return info if info is not None and holder_alive(info) else None


@dataclass
class _Held:
    token: str
    depth: int
    stop: threading.Event
    thread: threading.Thread | None


_HELD: dict[str, _Held] = {}
_HELD_LOCK = threading.RLock()


class Lease:
    """``with Lease(path, owner="rollout tick"):`` holds the lease for the block."""

    def __init__(
        self,
        path: Path,
        *,
        owner: str = "",
        ttl_s: float = DEFAULT_TTL_S,
        wait_s: float = 30.0,
        poll_s: float = 0.05,
    ) -> None:
        self.path = Path(path)
        self.owner = owner or f"pid {os.getpid()}"
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.poll_s = poll_s

    # -- acquire / release ----------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the lease if free (or re-enter it); False if a live process holds it."""
        key = str(self.path)
        with _HELD_LOCK:
            held = _HELD.get(key)
            if held is not None:
                held.depth += 1
                return True
            token = uuid.uuid4().hex
            with _guard(self.path):
                current = _read(self.path)
                if current is not None and holder_alive(current):
                    return False
                _write(self.path, self._info(token))
            stop = threading.Event()
            thread = threading.Thread(
                target=self._renew_loop, args=(token, stop), daemon=True, name="mlcicd-lease"
            )
            _HELD[key] = _Held(token, 1, stop, thread)
            thread.start()
            return True

    def acquire(self) -> None:
        """Wait up to ``wait_s`` for the lease; raise ``LeaseBusy`` naming the holder."""
        deadline = time.monotonic() + self.wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise LeaseBusy(self.path, _read(self.path) or {})
            time.sleep(self.poll_s)

    def release(self) -> None:
        key = str(self.path)
        with _HELD_LOCK:
            held = _HELD.get(key)
            if held is None:
                return
            held.depth -= 1
            if held.depth > 0:
                return
            del _HELD[key]
            held.stop.set()
            with _guard(self.path):
                current = _read(self.path)
                if current is not None and current.get("token") == held.token:
                    self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals -------------------------------------------------------------
    def _info(self, token: str) -> dict[str, Any]:
        expires = time.time() + self.ttl_s
        return {
            "owner": self.owner,
            "pid": os.getpid(),
            "host": HOST,
            "token": token,
            "expires_at": expires,
            "expires_at_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
        }

    def _renew_loop(self, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.ttl_s / 3):
            with _guard(self.path):
                current = _read(self.path)
                if current is None or current.get("token") != token:
                    return  # lost (expired and taken): the holder finds out on release
                _write(self.path, self._info(token))


def held_here(path: Path) -> bool:
    """Does this process hold the lease at ``path``?"""
    with _HELD_LOCK:
        return str(Path(path)) in _HELD
