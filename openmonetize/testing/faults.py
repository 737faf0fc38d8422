"""Misbehaviour on demand: which of the next requests fail, stall or lose their connection."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Fault", "FaultPlan"]


@dataclass(frozen=True)
class Fault:
    kind: Literal["fail", "delay", "drop"]
    status: int = 503
    retry_after: float | None = None
    body: Mapping[str, Any] | None = None
    seconds: float = 0.0


class FaultPlan:
    """Faults for upcoming requests: queued ones first, in order, then random ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._rate = 0.0
        self._rng = random.Random()
        self._menu: list[list[Fault]] = []
        self.injected = 0

    def enqueue(self, fault: Fault, n: int) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._queue.extend([fault] * n)

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
            self._rate, self._menu = 0.0, []
            self.injected = 0
