"""Retries of a direct `EventsApi.ingest` / `AsyncEventsApi.ingest` call (`Configuration.max_retries`).

A direct call is resent after a connection failure, a timeout, or a 408, 429 or 5xx answer (`retry.verdict`),
up to `max_retries` times, waiting `RetryPolicy.before_resend` in between: the answer's `Retry-After` when it
has one, else full-jitter backoff. Any other answer, and the last one when retries run out, is returned to
the generated client, which raises the usual `ApiException` for it; a transport failure on the last attempt
is raised as it is (`ApiConnectionError` / `ApiTimeoutError`).

Resending is safe because the request body is serialized once and every attempt sends the same bytes: the
same event ids, which the service deduplicates on (a resend of events it already stored counts them as
`duplicates`). `_request_timeout` bounds each attempt, not the sum of attempts and waits.

The background `OpenMonetize` client sets `max_retries = 0`: its dispatcher owns its retries.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from openmonetize.exceptions import ApiConnectionError
from openmonetize.lib.retry import RetryPolicy, transient

__all__ = ["DirectRetry"]

logger = logging.getLogger("openmonetize.retry")


class _Answer(Protocol):
    """What the REST clients return: a status and the headers (`rest.RESTResponse`, `AsyncRESTResponse`)."""

    status: int

    @property
    def headers(self) -> Any: ...


A = TypeVar("A", bound=_Answer)


@dataclass
class DirectRetry:
    """When a direct call resends, and how it waits. `sleep`, `async_sleep` and `now` (wall clock, for an
    HTTP-date `Retry-After`) are injectable so tests never wait for real."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] | None = None  # asyncio.sleep, imported only when used
    now: Callable[[], float] = time.time

    def _wait(self, attempt: int, max_retries: int, failure: BaseException | None,
              answer: _Answer | None) -> float | None:
        """Seconds before the next attempt, or None: this attempt's outcome is final."""
        if attempt > max_retries:
            return None
        if failure is not None:
            wait = self.policy.backoff(attempt)
            what = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
        else:
            assert answer is not None
            if not transient(answer.status):
                return None
            found = self.policy.before_resend(attempt, answer.headers, self.now())
            if found is None:
                return None
            wait, what = found, f"HTTP {answer.status}"
        logger.debug("resending in %.3f s after %s (retry %d of %d)", wait, what, attempt, max_retries)
        return wait

    def call(self, send: Callable[[], A], max_retries: int, discard: Callable[[A], object] | None = None) -> A:
        """`send()` until its answer is final; `discard` reads and drops an answer that is resent."""
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = send()
            except ApiConnectionError as exc:
                wait = self._wait(attempt, max_retries, exc, None)
                if wait is None:
                    raise
            else:
                wait = self._wait(attempt, max_retries, None, answer)
                if wait is None:
                    return answer
                if discard is not None:
                    _quietly(discard, answer)
            self.sleep(wait)

    async def acall(self, send: Callable[[], Awaitable[A]], max_retries: int) -> A:
        """The same, awaiting `send()` and the waits (a cancellation stops it at once)."""
        sleep = self.async_sleep
        if sleep is None:
            import asyncio

            sleep = asyncio.sleep
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = await send()
            except ApiConnectionError as exc:
                wait = self._wait(attempt, max_retries, exc, None)
                if wait is None:
                    raise
            else:
                wait = self._wait(attempt, max_retries, None, answer)
                if wait is None:
                    return answer
            await sleep(wait)


def _quietly(discard: Callable[[A], object], answer: A) -> None:
    """Drain an answer that is resent anyway, so its connection goes back to the pool; failing to is harmless."""
    with contextlib.suppress(ApiConnectionError):
        discard(answer)


DEFAULT = DirectRetry()
