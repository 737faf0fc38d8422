"""Usage as a user writes it, type-checked by the suite's mypy run (test_package.test_mypy_is_clean), not run.

The `type: ignore[...]` lines are the mistakes a type checker must keep catching: with `warn_unused_ignores`,
an ignore that is no longer needed (the mistake slipped through) is itself an error.
"""

from __future__ import annotations

from openmonetize import ApiClient, CustomEvent, EventsApi, TokenUsageEvent
from openmonetize.configuration import Configuration
from openmonetize.exceptions import ApiException


def errors_guide_example(events_api: EventsApi) -> str | None:
    event = CustomEvent(customer_id="c", feature_id="f", unit_type="pages", quantity=1)
    try:
        events_api.ingest(events=[event])
    except ApiException as e:
        if e.status == 429:
            return str(e.data.error)  # `data` is the parsed ErrorResponse: no Optional to narrow first
    return None


def mistakes_are_caught() -> None:
    TokenUsageEvent(customer_id="c", feature_id="f", provider="p", model="m", input_tokens=1,  # type: ignore[call-arg]
                    output_tokens=1, cached_tokens=3)
    TokenUsageEvent(customer_id="c", feature_id="f", provider="p", model="m",
                    input_tokens="1", output_tokens=1)  # type: ignore[arg-type]


def client() -> EventsApi:
    return EventsApi(ApiClient(Configuration(host="http://127.0.0.1:8080", access_token="k")))
