"""Several servers behind one client: least-outstanding-requests balancing, ejection and health-checked
re-admission, and a retry on another replica.

    mmserve.Client("grpc://10.0.0.1:8001,grpc://10.0.0.2:8001")      # or a list of URLs

Every request goes to the replica with the fewest requests in flight from
this client (ties: the one used least recently), so a slow or busy replica
gets less. A replica that fails a request with "unavailable" (refused
connection, a restarting model, a dead process) is ejected at once and the
request is retried on another without waiting; it is ejected for
`eject_s`, doubled for each further failure (30 s at most). A health checker
asks every replica `/v2/health/ready` every `health_interval_s`: an ejected
replica that answers ready is re-admitted (a healthy one that stops
answering is ejected before a request finds out). When every replica is
ejected, requests go to the one whose ejection ends first (with the usual
backoff), so a client never refuses to try.

Nothing here does I/O: the faces (`Client`, `AsyncClient`, the load
generator) probe and send through their own transports.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Iterable

from mmserve.client.options import ClientOptions

MAX_EJECTION_S = 30.0


@dataclasses.dataclass(eq=False)
class Replica:
    """One server: its options (one URL), what this client has in flight there, and its ejection."""

    options: ClientOptions
    outstanding: int = 0
    sent: int = 0  # requests started here
    failures: int = 0  # consecutive: each one doubles the ejection
    ejected_until: float = 0.0  # monotonic seconds; 0: admitted
    last_used: int = 0  # order of the last acquire (ties go to the least recently used)

    @property
    def url(self) -> str:
        return self.options.url

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now


class ReplicaSet:
    """The replicas of one client and the bookkeeping of which to use (thread-safe; asyncio-safe)."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.replicas = [Replica(options.model_copy(update={"url": url})) for url in options.urls]
        self._lock = threading.Lock()
        self._order = itertools.count(1)

    def __len__(self) -> int:
        return len(self.replicas)

    def acquire(self, avoid: Iterable[Replica] = ()) -> Replica:
        """The admitted replica with the fewest requests in flight (not in `avoid` where another exists), or,
        when all are ejected, the one whose ejection ends first; counted as in flight until `release`."""
        avoided = set(avoid)
        with self._lock:
            now = time.monotonic()
            admitted = [r for r in self.replicas if not r.ejected(now)]
            candidates = [r for r in admitted if r not in avoided] or admitted
            if candidates:
                replica = min(candidates, key=lambda r: (r.outstanding, r.last_used))
            else:
                replica = min(self.replicas, key=lambda r: (r in avoided, r.ejected_until))
            replica.outstanding += 1
            replica.sent += 1
            replica.last_used = next(self._order)
            return replica

    def release(self, replica: Replica) -> None:
        with self._lock:
            replica.outstanding -= 1

    def eject(self, replica: Replica) -> None:
        """After an "unavailable" failure (or a failed health check)."""
        with self._lock:
            replica.failures += 1
            pause = min(MAX_EJECTION_S, self.options.eject_s * 2 ** (replica.failures - 1))
            replica.ejected_until = max(replica.ejected_until, time.monotonic() + pause)

    def admit(self, replica: Replica) -> None:
        """After a request succeeded there or it answered a health check ready."""
        with self._lock:
            replica.failures = 0
            replica.ejected_until = 0.0

    def has_alternative(self, replica: Replica) -> bool:
        """Whether another replica is admitted right now (a retry there need not wait)."""
        now = time.monotonic()
        return any(r is not replica and not r.ejected(now) for r in self.replicas)

    def checked(self, replica: Replica, ready: bool) -> None:
        """The outcome of a health check."""
        if ready:
            if replica.failures or replica.ejected_until:
                self.admit(replica)
        elif not replica.ejected(time.monotonic()):
            self.eject(replica)

    def status(self) -> dict[str, dict[str, float | int | bool]]:
        """Per URL: requests sent and in flight from this client, and whether it is ejected."""
        now = time.monotonic()
        return {r.url: {"sent": r.sent, "outstanding": r.outstanding, "ejected": r.ejected(now),
                        "ejected_for_s": max(0.0, r.ejected_until - now)} for r in self.replicas}
