"""What background delivery reports through `on_error` and the log: never silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FailureKind = Literal["rejected", "unconfirmed", "dropped", "undelivered", "paused", "spool_error", "untracked",
                      "adjusted"]

# Kinds that are notices about the client's state, not about particular events: their `events` is empty.
NOTICE_KINDS: frozenset[str] = frozenset({"paused", "spool_error"})


@dataclass(frozen=True)
class DeliveryFailure:
    """Events that were not billed (or a notice that delivery is held up), and why.

    Events:
    - `rejected`: the service refused these events on their own (a 400/413/422 or a 403 that the
      others in their batch did not get, isolated by splitting; or a per-event error in a 2xx answer).
      With a spool they are kept in its dead-letter table (`openmonetize spool dead-letters`).
    - `unconfirmed`: the service answered 2xx but never accounted for them (a body that breaks the
      contract, counts that do not add up), after a bounded number of resends. Kept like `rejected`.
    - `dropped`: the in-memory queue was full and no spool was configured.
    - `undelivered`: shutdown's deadline passed while they were still queued or in flight, with no
      spool to keep them for the next process.
    - `untracked` (LLM tracking): a billable call whose event could not be built, most often because
      no customer was named (neither the wrap nor a `tracker.customer(...)` scope). `events` holds
      what was known, as it would have been sent, so it can be completed and tracked by hand.
    - `adjusted` (LLM tracking): the event WAS recorded and queued, but the provider's counts broke a
      rule (cached above input, reasoning above output, a negative count) and were capped; the event
      carries `metadata.usage_adjusted` saying how.

    Notices (`events` is empty; nothing is lost, events are kept):
    - `paused`: the service refused the key or the account (401, 402, a 403 for every event, an
      unexpected status); delivery pauses with a long backoff and resumes by itself. Once per episode.
    - `spool_error`: the spool could not store events (disk full, I/O error); they are kept in memory
      and written to disk again once it has room. Once per episode.
    """

    kind: FailureKind
    events: list[dict[str, Any]]  # as sent on the wire
    reason: str
    status: int | None = None
    details: list[dict[str, Any]] = field(default_factory=list)
    # the service's id for the refusing answer (`ApiException.request_id`), to quote to support; None when the
    # answer carried none, or the events were refused one by one in a 2xx (the answer's ids are not kept)
    request_id: str | None = None

    @property
    def event_ids(self) -> list[str]:
        return [str(event["event_id"]) for event in self.events]

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        if self.request_id:
            status += f" [request {self.request_id}]"
        if self.kind in NOTICE_KINDS:
            return f"delivery {self.kind}{status}: {self.reason}"
        return f"{len(self.events)} event(s) {self.kind}{status}: {self.reason}"
