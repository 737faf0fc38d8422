"""The retry policy of background delivery, as a urllib3 `Retry` that the generated client applies itself.

Resending is safe because a resend carries the same event ids and the service deduplicates on them, so
POST is retried like any idempotent method.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from urllib3.util.retry import Retry

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_SECONDS = re.compile(r"^\s*[0-9]+(\.[0-9]+)?\s*$")


class DeliveryRetry(Retry):
    """urllib3's Retry with full jitter, fractional `Retry-After`, and a hook counting each retry.

    Full jitter (a uniform draw between 0 and the capped exponential) spreads the retries of many
    clients after an outage instead of letting them arrive in waves.
    """

    def __init__(self, *args: Any, on_retry: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_retry = on_retry

    def new(self, **kw: Any) -> DeliveryRetry:
        retry = super().new(**kw)
        retry.on_retry = self.on_retry
        return retry

    def increment(self, *args: Any, **kwargs: Any) -> DeliveryRetry:
        retry = super().increment(*args, **kwargs)  # raises MaxRetryError when exhausted
        if self.on_retry is not None:
            self.on_retry()
        return retry

    def get_backoff_time(self) -> float:
        errors = 0
        for attempt in reversed(self.history):
            if attempt.redirect_location is not None:
                break
            errors += 1
        if errors == 0:
            return 0.0
        return random.uniform(0, min(self.backoff_max, self.backoff_factor * 2 ** (errors - 1)))

    def parse_retry_after(self, retry_after: str) -> float:
        if _SECONDS.match(retry_after):
            return min(max(float(retry_after), 0.0), self.retry_after_max)
        return super().parse_retry_after(retry_after)


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before attempt number `attempt` (1-based) of a batch the client gave up on."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def retry_after_seconds(headers: Any) -> float | None:
    """The `Retry-After` of an error answer, in seconds, if it has a usable one."""
    value = headers.get("Retry-After") if headers else None
    if not value:
        return None
    try:
        return DeliveryRetry(retry_after_max=3600).parse_retry_after(str(value))
    except Exception:
        return None
