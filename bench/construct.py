"""Cost of building one validated event with a generated id, beside a plain pydantic model, in one run.

The plain model has the same fields and constraints but none of the SDK's work (no id, no default
timestamp, no cross-field rules): the ratio is what the SDK adds.

    .venv/bin/python bench/construct.py
"""

from __future__ import annotations

import timeit
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from openmonetize import CustomEvent, TokenUsageEvent
from openmonetize.lib.event_ids import new_event_id

NUMBER = 20_000
REPEAT = 7

Str = Annotated[str, Field(min_length=1, max_length=256, strict=True)]
Count = Annotated[int, Field(ge=0, strict=True)]


class PlainTokenUsage(BaseModel):
    model_config = ConfigDict(validate_assignment=True)
    event_type: str = "TOKEN_USAGE"
    event_id: Str
    customer_id: Str
    user_id: Str | None = None
    team_id: Str | None = None
    feature_id: Str
    timestamp: datetime
    metadata: dict[str, Any] | None = None
    provider: Str
    model: Str
    input_tokens: Count
    output_tokens: Count
    cached_input_tokens: Count | None = None
    reasoning_tokens: Count | None = None


def best_us(stmt: str, namespace: dict[str, Any]) -> float:
    return min(timeit.repeat(stmt, number=NUMBER, repeat=REPEAT, globals=namespace)) / NUMBER * 1e6


def main() -> None:
    now = datetime.now(timezone.utc)
    ns: dict[str, Any] = {"TokenUsageEvent": TokenUsageEvent, "CustomEvent": CustomEvent, "new_event_id": new_event_id,
                          "PlainTokenUsage": PlainTokenUsage, "now": now}
    fields = "customer_id='cust_1', feature_id='chat', provider='openai', model='gpt-4o', " \
             "input_tokens=1200, output_tokens=300"
    rows = [
        ("TokenUsageEvent(...), id and timestamp generated", best_us(f"TokenUsageEvent({fields})", ns)),
        ("TokenUsageEvent(...), id and timestamp given",
         best_us(f"TokenUsageEvent(event_id='evt_1', timestamp=now, {fields})", ns)),
        ("CustomEvent(...), id and timestamp generated",
         best_us("CustomEvent(customer_id='c', feature_id='pdf', unit_type='pages', quantity=3)", ns)),
        ("plain pydantic model, same fields, id and timestamp given",
         best_us(f"PlainTokenUsage(event_id='evt_1', timestamp=now, {fields})", ns)),
        ("new_event_id()", best_us("new_event_id()", ns)),
    ]
    print(f"best of {REPEAT} x {NUMBER:,} calls, microseconds per call")
    for label, us in rows:
        print(f"  {label:<58} {us:6.2f} us")
    print(f"  ratio SDK event (generated id) / plain pydantic model      {rows[0][1] / rows[3][1]:6.2f}")


if __name__ == "__main__":
    main()
