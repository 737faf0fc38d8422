"""Misbehaviour on demand: which of the next requests fail, stall, lose their connection or get their
answer one byte at a time."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Fault", "FaultPlan", "Trickle"]


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or before) answering one request.

    ``fail``: answer ``status`` with ``body`` (JSON) or ``raw`` (bytes as they are), ``content_type`` and
    extra ``headers``; with ``store`` the batch is first processed and stored as usual, so that the client
    sees a planned answer for events the service kept (a resend is a duplicate).
    """

    kind: Literal["fail", "delay", "drop"]
    status: int = 503
    retry_after: float | None = None
    body: Mapping[str, Any] | None = None
    seconds: float = 0.0
    raw: bytes | None = None
    content_type: str | None = None
    headers: Mapping[str, str] | None = None
    store: bool = False


@dataclass(frozen=True)
class Trickle:
    """Write one request's answer one byte every ``interval`` seconds, status line and headers included.

    ``store``: with no planned answer for the request, process it as usual (the events are stored: a
    client that gives up and resends sends duplicates) and trickle the real answer; without it, store
    nothing and trickle a 503.
    """

    interval: float = 0.5
    store: bool = True


class FaultPlan:
    """Faults for upcoming requests: queued ones first, in order, then random ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._trickles: deque[Trickle] = deque()
        self._rate = 0.0
        self._rng = random.Random()
        self._menu: list[list[Fault]] = []
        self.injected = 0

    def enqueue(self, fault: Fault, n: int) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._queue.extend([fault] * n)

    def enqueue_trickle(self, trickle: Trickle, n: int) -> None:
        """Trickle the answers of the next ``n`` requests (a queue of its own: it paces whatever the request
        is answered, planned fault or real answer)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._trickles.extend([trickle] * n)

    def take_trickle(self) -> Trickle | None:
        with self._lock:
            if not self._trickles:
                return None
            self.injected += 1
            return self._trickles.popleft()

    def randomize(self, rate: float, rng: random.Random, menu: list[list[Fault]]) -> None:
        with self._lock:
            self._rate, self._rng, self._menu = rate, rng, menu

    def take(self) -> Fault | None:
        with self._lock:
            if self._queue:
                fault = self._queue.popleft()
            elif self._rate > 0 and self._rng.random() < self._rate:
                fault = self._rng.choice(self._rng.choice(self._menu))
            else:
                return None
            self.injected += 1
            return fault

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._trickles.clear()
            self._rate, self._menu = 0.0, []
            self.injected = 0
