"""The one retry policy of the SDK: what an answer means for the events in it, and when to try again.
The HTTP layer sends once per attempt; every pause and resend is decided here and applied by the
background dispatcher (`delivery.py`) or, for a direct `EventsApi.ingest` / `AsyncEventsApi.ingest`
call, by `direct_retry.py` (`Configuration.max_retries`).

Resending is safe because a resend carries the same event ids and the service deduplicates on them.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["retry", "isolate", "forbidden", "pause"]

_SECONDS = re.compile(r"^\s*[0-9]+(\.[0-9]+)?\s*$")


def verdict(status: int) -> Verdict:
    """What an error answer (or `0`: no answer at all) says about the events of the batch.

    - `retry`: transient (no answer, timeout, 408, 429, 5xx): resend the same events later.
    - `isolate`: the service refused something in the batch (400, 413, 422): split it until the refused
      events stand alone; only an event refused on its own is refused for good.
    - `forbidden` (403): either the key may not send some of these events (a customer it may not bill:
      isolate them) or it may send none (a key problem: pause). The dispatcher tells them apart.
    - `pause`: about the key, the account or the URL, not the events (401, 402, 3xx, 404, any other
      status): keep everything and pause delivery until the service accepts again.
    """
    if status == 0 or status in (408, 429) or status >= 500:
        return "retry"
    if status in (400, 413, 422):
        return "isolate"
    if status == 403:
        return "forbidden"
    return "pause"


def transient(status: int) -> bool:
    """Whether an answer (or `0`: none) is worth resending as it is: `verdict(status) == "retry"`."""
    return verdict(status) == "retry"


@dataclass
class RetryPolicy:
    """Backoff for transient failures, pauses for key/account trouble, and the bound on answers that
    do not confirm events.

    Full jitter (a uniform draw between 0 and the capped exponential) spreads the retries of many clients
    after an outage instead of letting them arrive in waves. A pause (401, 402, ...) starts at
    `pause_base` and doubles up to `pause_cap`: long enough not to hammer a service that refuses the key,
    short enough that delivery resumes soon after the key is fixed.
    """

    base: float = 0.5
    cap: float = 30.0
    pause_base: float = 5.0
    pause_cap: float = 300.0
    max_unconfirmed: int = 3  # 2xx answers that fail to account for an event before it is reported unconfirmed
    retry_after_max: float = 3600.0
    # a direct call resends after a `Retry-After` up to this long; a longer one raises at once (the caller
    # is waiting on the call: it decides what to do with the 429 / 503 and its `headers`)
    direct_retry_after_max: float = 60.0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def backoff(self, attempt: int) -> float:
        """Seconds before resending after the `attempt`-th failure in a row (1-based)."""
        return float(self.rng.uniform(0, min(self.cap, self.base * _doubled(attempt))))

    def pause(self, episode_attempt: int) -> float:
        """Seconds to pause after the `episode_attempt`-th refusal of the key or account in a row."""
        ceiling = min(self.pause_cap, self.pause_base * _doubled(episode_attempt))
        return float(ceiling / 2 + self.rng.uniform(0, ceiling / 2))  # never much shorter than the ceiling

    def retry_after(self, headers: Mapping[str, Any] | None, now: float | None = None) -> float | None:
        """The answer's `Retry-After` in seconds (a number or an HTTP date), if it has a usable one."""
        value = headers.get("Retry-After") if headers else None
        if not value:
            return None
        text = str(value)
        if _SECONDS.match(text):
            seconds = float(text)
        else:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when is None or when.tzinfo is None:
                return None
            seconds = when.timestamp() - (time.time() if now is None else now)
        return min(max(seconds, 0.0), self.retry_after_max)

    def before_resend(self, attempt: int, headers: Mapping[str, Any] | None = None,
                      now: float | None = None) -> float | None:
        """Seconds a direct call waits before resending after its `attempt`-th transient failure (1-based).

        The answer's `Retry-After` when it has one, else `backoff(attempt)`; None (do not resend) when
        `Retry-After` asks for longer than `direct_retry_after_max`.
        """
        asked = self.retry_after(headers, now)
        if asked is None:
            return self.backoff(attempt)
        return asked if asked <= self.direct_retry_after_max else None


def _doubled(attempt: int) -> int:
    """2 ** (attempt - 1), bounded: past ~1024 failures (a few hours of outage at the default cap) the power
    times a float base is too large for a float and raises OverflowError; 2 ** 62 is above any cap."""
    return 1 << min(max(attempt - 1, 0), 62)
