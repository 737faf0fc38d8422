"""The background side of `OpenMonetize`: one dispatcher thread that owns the buffer and forms
batches, and a few sender threads that post them through the generated `EventsApi`.

A batch is resolved exactly once: acknowledged (accepted or duplicate), rejected for good (reported),
or given back to the buffer to be sent again, with the same event ids, after a jittered pause.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import urllib3

from openmonetize.api.events_api import EventsApi
from openmonetize.exceptions import ApiException
from openmonetize.lib.buffers import Batch, MemoryBuffer
from openmonetize.lib.failures import DeliveryFailure
from openmonetize.lib.retry import RETRY_STATUSES, full_jitter, retry_after_seconds

logger = logging.getLogger("openmonetize")


@dataclass
class DeliverySettings:
    batch_size: int = 1000
    max_batch_bytes: int = 5 * 1024 * 1024
    flush_interval: float = 0.5
    max_concurrent_requests: int = 4
    request_timeout: float = 10.0
    retry_base: float = 0.5
    retry_cap: float = 30.0
    commit_interval: float = 0.05
    gzip: bool = False
    adopt_interval: float = 30.0


@dataclass
class Stats:
    sent: int = 0
    duplicates: int = 0
    retried: int = 0
    rejected: int = 0
    dropped: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


@dataclass
class _Outcome:
    batch: Batch
    kind: Literal["ack", "retry", "reject", "split"]
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failure: DeliveryFailure | None = None
    retry_after: float | None = None


class Dispatcher:
    """Runs the delivery thread; all buffer access happens on it."""

    def __init__(
        self,
        buffer: MemoryBuffer,
        events_api: EventsApi,
        settings: DeliverySettings,
        stats: Stats,
        report: Callable[[DeliveryFailure], None],
    ) -> None:
        self.buffer = buffer
        self.api = events_api
        self.settings = settings
        self.stats = stats
        self.report = report
        self.wakeup = threading.Event()
        self.resolved = threading.Condition()
        self.low_water: float = math.inf  # lowest seq not yet resolved
        self.iterations = 0  # loops completed: flush() waits for one that began after it
        self.flush_waiters = 0
        self.stopping = False
        self.failed_attempts = 0
        self._paused_until = 0.0
        self._in_flight: dict[int, Batch] = {}
        self._outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._work: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._batch_limit = settings.batch_size
        self._thread = threading.Thread(target=self._run, name="openmonetize-dispatcher", daemon=True)
        self._senders = [
            threading.Thread(target=self._send_loop, name=f"openmonetize-sender-{i}", daemon=True)
            for i in range(settings.max_concurrent_requests)
        ]
        self.opened = threading.Event()
        self.open_error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        for sender in self._senders:
            sender.start()

    def stop(self, timeout: float | None) -> bool:
        """Ask the threads to finish; True if the dispatcher ended within `timeout`."""
        self.stopping = True
        self.wakeup.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def unresolved_batches(self) -> list[Batch]:
        """Batches handed to senders and not yet resolved (read once the dispatcher is told to stop)."""
        return list(self._in_flight.values())

    # -- dispatcher thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.buffer.open()
        except BaseException as exc:  # reported to the caller by OpenMonetize
            self.open_error = exc
            self.opened.set()
            return
        self.opened.set()
        last_send = last_adopt = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                timeout = self.settings.flush_interval - (now - last_send)
                if self.buffer.durable:
                    timeout = min(timeout, self.settings.commit_interval)
                if self._paused_until > now:
                    timeout = min(timeout, self._paused_until - now)
                self.wakeup.wait(max(timeout, 0.0))
                self.wakeup.clear()
                now = time.monotonic()
                self.buffer.commit()
                self._collect_outcomes()
                if now - last_adopt >= self.settings.adopt_interval:
                    self.buffer.adopt_orphans()
                    last_adopt = now
                interval_over = now - last_send >= self.settings.flush_interval
                due = interval_over or self.flush_waiters > 0 or self.stopping
                if self._dispatch(due, now) or interval_over:
                    last_send = now  # the interval restarts whether or not there was anything to send
                self._update_low_water()
                if self.stopping and not self._in_flight and (len(self.buffer) == 0 or self._paused_until > now):
                    break
        except BaseException:
            logger.exception("openmonetize delivery thread failed; events stay %s",
                             "in the spool" if self.buffer.durable else "in memory")
            raise
        finally:
            for _ in self._senders:
                self._work.put(None)

    def _dispatch(self, due: bool, now: float) -> bool:
        """Hand batches to senders; returns True if any was sent."""
        if self._paused_until > now:
            return False
        sent = False
        while len(self._in_flight) < self.settings.max_concurrent_requests:
            if len(self.buffer) < self._batch_limit and not due:
                break
            batch = self.buffer.take(self._batch_limit, self.settings.max_batch_bytes)
            if batch is None:
                break
            self._in_flight[id(batch)] = batch
            self._work.put(batch)
            sent = True
            if self.failed_attempts:
                break  # while the service is failing, probe with one batch at a time
        return sent

    def _collect_outcomes(self) -> None:
        while True:
            try:
                outcome = self._outcomes.get_nowait()
            except queue.Empty:
                return
            batch = outcome.batch
            del self._in_flight[id(batch)]
            if outcome.kind == "ack":
                self.buffer.ack(batch)
                self.failed_attempts = 0
                self._batch_limit = self.settings.batch_size
                self.stats.add(sent=outcome.accepted, duplicates=outcome.duplicates, rejected=outcome.rejected)
            elif outcome.kind == "reject":
                self.buffer.ack(batch)
                self.stats.add(rejected=len(batch.bodies))
            elif outcome.kind == "split":
                self.buffer.give_back(batch)
                self._batch_limit = max(1, len(batch.bodies) // 2)
            else:  # retry later, same events, same ids
                self.buffer.give_back(batch)
                self.failed_attempts += 1
                self.stats.add(retried=1)
                pause = full_jitter(self.failed_attempts, self.settings.retry_base, self.settings.retry_cap)
                if outcome.retry_after is not None:
                    pause = max(pause, outcome.retry_after)
                self._paused_until = time.monotonic() + pause
            if outcome.failure is not None:
                self.report(outcome.failure)

    def _update_low_water(self) -> None:
        low = min([self.buffer.low_seq(), *(b.min_seq for b in self._in_flight.values())])
        with self.resolved:
            self.low_water = low
            self.iterations += 1
            self.resolved.notify_all()

    # -- sender threads ---------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            batch = self._work.get()
            if batch is None:
                return
            try:
                outcome = self._send(batch)
            except Exception:  # never lose a batch to a bug in the path below
                logger.exception("openmonetize: unexpected error sending %d events; will retry", len(batch.bodies))
                outcome = _Outcome(batch, "retry")
            self._outcomes.put(outcome)
            self.wakeup.set()

    def _send(self, batch: Batch) -> _Outcome:
        self.stats.add(requests=1)
        try:
            response = self.api.ingest_serialized(
                batch.request_body(), _request_timeout=self.settings.request_timeout,
                _headers={"Content-Encoding": "gzip"} if self.settings.gzip else None)
        except ApiException as exc:
            return self._error_outcome(batch, exc)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            logger.warning("openmonetize: sending %d events failed (%s); will retry", len(batch.bodies),
                           type(exc).__name__)
            return _Outcome(batch, "retry")
        errors = [error for error in response.errors or [] if 0 <= error.index < len(batch.bodies)]
        failure = None
        if errors:
            failure = DeliveryFailure(
                "rejected", batch.events(error.index for error in errors),
                "; ".join(f"{error.code}: {error.message}" for error in errors[:5]), status=202,
                details=[error.to_dict() for error in errors])
        return _Outcome(batch, "ack", accepted=response.accepted, duplicates=response.duplicates,
                        rejected=len(errors), failure=failure)

    def _error_outcome(self, batch: Batch, exc: ApiException) -> _Outcome:
        status = exc.status or 0
        if status == 0 or status in RETRY_STATUSES:
            logger.warning("openmonetize: ingest answered %s for %d events; will retry", status or "no response",
                           len(batch.bodies))
            return _Outcome(batch, "retry", retry_after=retry_after_seconds(exc.headers))
        if status == 413 and len(batch.bodies) > 1:
            return _Outcome(batch, "split")
        error = getattr(exc, "data", None)
        message = getattr(error, "message", None) or exc.reason or "refused"
        details = [d.to_dict() for d in (getattr(error, "details", None) or [])]
        failure = DeliveryFailure("rejected", batch.events(), f"{status} {message}", status=status,
                                  details=details)
        return _Outcome(batch, "reject", failure=failure)
