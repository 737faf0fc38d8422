"""What background delivery reports when events cannot be delivered: never silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FailureKind = Literal["rejected", "dropped", "undelivered"]


@dataclass(frozen=True)
class DeliveryFailure:
    """Events that will not be billed, and why.

    - `rejected`: the service refused them for good (a 4xx other than 408/429, or a per-event
      rejection in a 2xx answer). They are not retried.
    - `dropped`: the in-memory queue was full and no spool was configured.
    - `undelivered`: shutdown's deadline passed while they were still queued or in flight, with no
      spool to keep them for the next process.
    """

    kind: FailureKind
    events: list[dict[str, Any]]  # as sent on the wire
    reason: str
    status: int | None = None
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def event_ids(self) -> list[str]:
        return [str(event["event_id"]) for event in self.events]

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{len(self.events)} event(s) {self.kind}{status}: {self.reason}"

