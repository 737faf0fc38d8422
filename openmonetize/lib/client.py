"""`OpenMonetize`: track usage on the hot path, deliver it in the background, lose nothing.

`track_*` validate and enqueue in microseconds and return the event id; delivery, batching and
retries happen on background threads (see `delivery.py`), through the generated `EventsApi`.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from pydantic import ConfigDict, TypeAdapter

from openmonetize.api.events_api import EventsApi
from openmonetize.api_client import ApiClient
from openmonetize.configuration import Configuration
from openmonetize.lib import event_json, exit_hooks
from openmonetize.lib.delivery import DeliverySettings, DeliveryWorker, Dispatcher, Send, Stats
from openmonetize.lib.event_types import EVENT_MODELS
from openmonetize.lib.failures import DeliveryFailure
from openmonetize.lib.memory_buffer import MemoryBuffer
from openmonetize.lib.retry import RetryPolicy
from openmonetize.models.custom_event import CustomEvent
from openmonetize.models.event import Event
from openmonetize.models.image_generation_event import ImageGenerationEvent
from openmonetize.models.ingest_response import IngestResponse
from openmonetize.models.token_usage_event import TokenUsageEvent

logger = logging.getLogger("openmonetize")

DEFAULT_BASE_URL = "https://api.openmonetize.io"
_EVENT_TYPES = EVENT_MODELS  # track() takes these as they are: built (and validated) by their constructors
_event_adapter: TypeAdapter[Event] | None = None


class OpenMonetize:
    """The background delivery client.

    Memory is bounded by `max_queue_bytes` of events waiting in memory (default 64 MiB, about 180,000
    token events; `max_queue_size` adds a bound in events). When that is full, `track_*` waits up to
    `block_timeout` seconds for room (never on an asyncio event loop's thread), then drops the event and
    reports it through `on_error` and the log. With a `spool_dir`, the spool is opened here (a directory
    that cannot be used raises `SpoolError`), what dead processes left in it is delivered from now on,
    and events are committed to disk within `spool_commit_interval` seconds (default 0.05) of being
    tracked, unless delivered first: they survive crashes, `kill -9`, reboots and outages of any length.
    At interpreter exit, queued events are delivered for up to `shutdown_timeout` seconds. `retry_policy`
    sets the backoffs (see `RetryPolicy`).
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        spool_dir: str | os.PathLike[str] | None = None,
        on_error: Callable[[DeliveryFailure], None] | None = None,
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_queue_size: int | None = None,
        block_timeout: float = 1.0,
        batch_size: int = 1000,
        max_batch_bytes: int = 5 * 1024 * 1024,
        flush_interval: float = 0.5,
        max_concurrent_requests: int = 2,
        request_timeout: float = 10.0,
        gzip: bool = False,
        shutdown_timeout: float = 10.0,
        spool_commit_interval: float = 0.05,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        api_key = api_key if api_key is not None else os.environ.get("OPENMONETIZE_API_KEY")
        if not api_key:
            raise ValueError("OpenMonetize needs an API key: pass api_key= or set OPENMONETIZE_API_KEY")
        if not 1 <= batch_size <= 1000:
            raise ValueError(f"batch_size={batch_size!r}: must be between 1 and 1000 (the service's limit)")
        if max_queue_size is not None and max_queue_size < 1:
            raise ValueError(f"max_queue_size={max_queue_size!r}: must be at least 1 (or None: no bound in events)")
        if max_queue_bytes < 1:
            raise ValueError(f"max_queue_bytes={max_queue_bytes!r}: must be at least 1")
        self.base_url = (base_url or os.environ.get("OPENMONETIZE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.spool_dir = os.fspath(spool_dir) if spool_dir is not None else None
        self.on_error = on_error
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        self.retry_policy = retry_policy or RetryPolicy()
        self.block_timeout = block_timeout
        self.shutdown_timeout = shutdown_timeout
        self._api_key = api_key
        self._settings = DeliverySettings(
            batch_size=batch_size, max_batch_bytes=max_batch_bytes, flush_interval=flush_interval,
            max_concurrent_requests=max_concurrent_requests, request_timeout=request_timeout,
            commit_interval=spool_commit_interval, gzip=gzip,
        )
        self._closed = False
        self._reset_state()
        if self.spool_dir is not None:
            self._start()  # open the spool now (a bad directory fails here) and deliver what it holds
        _live_clients.add(self)
        exit_hooks.client_created(self)  # SIGTERM

    def _reset_state(self) -> None:
        """Everything a process must own alone: rebuilt in a forked child."""
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._stats = Stats()
        self._buffer: MemoryBuffer
        if self.spool_dir:
            from openmonetize.lib.buffers import SpoolBuffer  # (here: without a spool, no SQLite, no spool modules)

            self._buffer = SpoolBuffer(self.spool_dir, report=self._report)
        else:
            self._buffer = MemoryBuffer()
        self._worker: DeliveryWorker | None = None

    def _send(self) -> Send:
        """One HTTP attempt per call: the worker alone decides retries (`retries=False`, `max_retries = 0`)."""
        config = Configuration(host=self.base_url, access_token=self._api_key)
        config.connection_pool_maxsize = self._settings.max_concurrent_requests
        config.retries = False
        config.max_retries = 0
        api = EventsApi(ApiClient(config))
        timeout = self._settings.request_timeout
        headers = {"Content-Encoding": "gzip"} if self._settings.gzip else None

        def send(body: bytes, count: int) -> IngestResponse:
            return api.ingest_serialized(body, _event_count=count, _request_timeout=timeout, _headers=headers)

        return send

    def start(self) -> None:
        """Start delivering now instead of at the first `track_*` (with a `spool_dir`, the constructor
        already did: it opens the spool and delivers what dead processes left there)."""
        self._start()

    def _start(self) -> DeliveryWorker:
        with self._lock:
            if self._closed:
                raise RuntimeError("this OpenMonetize client is shut down")
            if self._worker is None:
                self._buffer.open()  # on this thread: fast (adopting orphans happens on the delivery thread)
                dispatcher = Dispatcher(self._buffer, self._send(), self._settings, self._stats, self._report,
                                        self.retry_policy)
                worker = DeliveryWorker(dispatcher, self.max_queue_bytes, self.max_queue_size)
                with exit_hooks.starting_delivery():  # signals stay with the program's threads; child exits
                    worker.start()
                self._worker = worker
            return self._worker

    # -- tracking (the caller's hot path) -------------------------------------------------------------

    @event_json.method(TokenUsageEvent, "_enqueue_json")
    def track_token_usage(
        self,
        *,
        customer_id: str,
        feature_id: str,
        provider: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        user_id: str | None = None,
        team_id: str | None = None,
        event_id: str | None = None,
        timestamp: datetime | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Record LLM tokens; returns the event id. Bad input raises `pydantic.ValidationError` here, before
        anything is queued. (The body that runs is compiled by `event_json.method`: the JSON written
        directly, or by the model when it must decide, then `_enqueue_json`.)"""
        raise NotImplementedError

    @event_json.method(ImageGenerationEvent, "_enqueue_json")
    def track_image_generation(
        self,
        *,
        customer_id: str,
        feature_id: str,
        provider: str,
        model: str,
        image_count: int = 1,
        image_size: str | None = None,
        quality: str | None = None,
        user_id: str | None = None,
        team_id: str | None = None,
        event_id: str | None = None,
        timestamp: datetime | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Record generated images; returns the event id."""
        raise NotImplementedError

    @event_json.method(CustomEvent, "_enqueue_json")
    def track_custom_event(
        self,
        *,
        customer_id: str,
        feature_id: str,
        unit_type: str,
        quantity: float,
        user_id: str | None = None,
        team_id: str | None = None,
        event_id: str | None = None,
        timestamp: datetime | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Record any other unit (pages, API calls, seconds...); returns the event id."""
        raise NotImplementedError

    def track(self, event: Event | Mapping[str, Any]) -> str:
        """Record a prebuilt event (or a dict with an `event_type`); returns its id."""
        if type(event) not in _EVENT_TYPES:
            global _event_adapter
            if _event_adapter is None:
                # titled, or a bad dict reads "1 validation error for function-wrap[_accept_Event_members()]"
                _event_adapter = TypeAdapter(Event, config=ConfigDict(title="Event"))
            event = _event_adapter.validate_python(event)
        return self._enqueue(event)  # type: ignore[arg-type]

    def _enqueue(self, event: Event, *, wait: bool = True) -> str:
        """Queue a built event's JSON (serialized once, as it will be sent)."""
        return self._enqueue_json(event.event_id, event.__pydantic_serializer__.to_json(event, exclude_none=True),
                                  wait=wait)

    def _enqueue_json(self, event_id: str, body: bytes, wait: bool = True) -> str:
        """Queue an event's JSON. `wait=False` never waits for room (the LLM tracker, after a paid call, passes
        it by position: by keyword the call costs its caller 3-4 us more after an HTTP call, bench/llm_overhead.py
        --parts)."""
        worker = self._worker or self._start()
        intake = self._buffer.intake
        if (worker.room_waiters or len(intake) >= worker.queue_limit) and not self._wait_for_room(worker, body, wait):
            return event_id
        intake.append((next(self._seq), body))
        # (idle: a spool's loop sleeps long, with nothing to commit; this event must be on disk in time)
        if worker.idle or len(intake) % self._settings.batch_size == 0:
            worker.wakeup.set()
        return event_id

    def _wait_for_room(self, worker: DeliveryWorker, body: bytes, wait: bool) -> bool:
        """The back-pressure policy; False when the event was dropped (and reported).

        Callers that may wait take turns: while one waits, a later one queues behind it instead of taking
        the room the delivery thread frees, and a waiter goes when there is room for it and all ahead of it.
        Without turns a waiting thread starves: another producer fills a freed batch's 1000 places within
        one GIL switch interval (5 ms), again and again, until the waiter's `block_timeout` passes and its
        event is dropped although delivery never stopped.
        """
        on_event_loop = _on_event_loop()
        intake = self._buffer.intake
        if not wait or on_event_loop:  # may not wait: room now, or never
            if len(intake) < worker.queue_limit:
                return True
            return self._drop(body, wait, on_event_loop)
        worker.wakeup.set()
        deadline = time.monotonic() + self.block_timeout
        turn = object()
        with worker.resolved:  # notified by the delivery thread after each round (when it took a batch)
            worker.room_waiters.append(turn)
            try:
                while worker.room_waiters.index(turn) >= worker.queue_limit - len(intake):  # room for those ahead
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    worker.resolved.wait(min(remaining, 0.05))
                else:
                    return True
            finally:
                worker.room_waiters.remove(turn)
                worker.resolved.notify_all()  # those behind move up
        return self._drop(body, wait, on_event_loop)

    def _drop(self, body: bytes, wait: bool, on_event_loop: bool) -> bool:
        worker = self._worker
        self._stats.add(dropped=1)
        if worker is not None:
            with worker.resolved:
                worker.failures.add([next(self._seq)])
        self._report(DeliveryFailure(
            "dropped", [json.loads(body)],
            f"the queue held {len(self._buffer.intake)} events (max_queue_bytes={self.max_queue_bytes}"
            + (f", max_queue_size={self.max_queue_size}" if self.max_queue_size else "")
            + f") for {self.block_timeout}s"
            + (" (not waiting on an asyncio event loop)" if on_event_loop else "")
            + ("" if wait else " (not waiting after an LLM call)")
            + "; configure spool_dir= to keep events on disk instead"))
        return False

    # -- flushing and lifecycle ------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event tracked before this call is resolved: delivered, refused, unconfirmed
        or dropped (a pause for a refused key resolves nothing: the events wait for the service).

        True only when all of them were accepted or recognised as duplicates by the service; False if
        `timeout` passed first, or if one was refused, dead-lettered, unconfirmed or dropped (each such
        event makes the first flush() that waits for it return False; they are reported to `on_error`).
        """
        worker = self._worker
        if worker is None:
            return True
        with worker.resolved:
            ticket = next(self._seq)  # under the lock: the ledger knows every ticket above the seqs it collapses
            worker.failures.begin(ticket)
            worker.flush_waiters += 1
            worker.flushes += 1
            started = worker.iterations
        worker.wakeup.set()
        try:
            with worker.resolved:
                if worker.resolved.wait_for(lambda: worker.iterations > started and worker.low_water > ticket,
                                            timeout):
                    return not worker.failures.failed_before(ticket)
            if self._buffer.durable:  # out of time: what it waited for is on disk when it returns (delivery.md)
                worker.write_unresolved()
            return False
        finally:
            with worker.resolved:
                worker.flush_waiters -= 1
                worker.failures.end(ticket)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, then stop the background threads, within `timeout` seconds (None: the client's
        `shutdown_timeout`, as at interpreter exit, so that a refused key cannot hold the end of a script
        forever; `flush()` first to wait without a bound). True if everything was delivered in time (as
        `flush`).

        Without a spool, what could not be delivered in time is reported through `on_error` as
        `undelivered`; with a spool it stays on disk for the next process.
        """
        if timeout is None:
            timeout = self.shutdown_timeout
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        _live_clients.discard(self)
        worker = self._worker
        if worker is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        delivered = self.flush(timeout)
        stopped = worker.stop(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._worker = None
        if self._buffer.durable:
            if stopped:
                self._buffer.close()
            if not delivered:
                # (on disk and not resolved, in flight or not: `len` leaves out those in flight, which stay too)
                logger.warning("openmonetize: %d events stay in the spool %s for the next process",
                               self._buffer.stored, self.spool_dir)
            return delivered
        # Not confirmed in time and nowhere to keep them: report them (a late answer may still land,
        # in which case a resend is deduplicated by id).
        leftover = [event for batch in worker.unresolved_batches() for event in batch.events()]
        leftover += [json.loads(body) for body in self._buffer.remaining()]
        if leftover:
            self._report(DeliveryFailure("undelivered", leftover,
                                         f"shutdown deadline ({timeout}s) passed before the service confirmed them"))
        return delivered

    async def aflush(self, timeout: float | None = None) -> bool:
        """`flush` for asyncio services: waits on a worker thread, never on the event loop."""
        import asyncio

        return await asyncio.to_thread(self.flush, timeout)

    async def ashutdown(self, timeout: float | None = None) -> bool:
        import asyncio

        return await asyncio.to_thread(self.shutdown, timeout)

    def __enter__(self) -> OpenMonetize:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown(self.shutdown_timeout)

    def stats(self) -> dict[str, int]:
        """Counters since this client started (in this process)."""
        worker = self._worker
        in_flight = sum(len(b.bodies) for b in worker.unresolved_batches()) if worker else 0
        s = self._stats
        return {
            "queued": len(self._buffer) + in_flight,
            "sent": s.sent,
            "duplicates": s.duplicates,
            "retried": s.retried,
            "rejected": s.rejected,
            "unconfirmed": s.unconfirmed,
            "dead_letters": self._buffer.dead_letters,
            "spooled": self._buffer.stored,
            "dropped": s.dropped,
            "requests": s.requests,
        }

    def _report(self, failure: DeliveryFailure) -> None:
        logger.error("openmonetize: %s; event ids: %s", failure, ", ".join(failure.event_ids[:10]))
        if self.on_error is not None:
            try:
                self.on_error(failure)
            except Exception:
                logger.exception("openmonetize: the on_error callback raised")

    def _after_fork_in_child(self) -> None:
        # The parent's threads do not exist here and its queue is the parent's to deliver.
        self._buffer.release_after_fork()
        self._reset_state()

    def __repr__(self) -> str:
        return f"OpenMonetize(base_url={self.base_url!r}, spool_dir={self.spool_dir!r})"


_live_clients: weakref.WeakSet[OpenMonetize] = weakref.WeakSet()


def _shutdown_all_at_exit() -> None:
    for client in list(_live_clients):
        try:
            client.shutdown(client.shutdown_timeout)
        except Exception:
            logger.exception("openmonetize: shutdown at exit failed")


def _reset_all_after_fork() -> None:
    for client in list(_live_clients):
        client._after_fork_in_child()


atexit.register(_shutdown_all_at_exit)
os.register_at_fork(after_in_child=_reset_all_after_fork)


def _on_event_loop() -> bool:
    """Whether this thread is running an asyncio event loop, without importing asyncio for the answer (a
    program that never uses it does not pay for its import): a program that has not imported it runs none."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
