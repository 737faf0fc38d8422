"""Usage as a user writes it (the guides' examples), type-checked by test_package with `mypy --strict` and
pyright (basedpyright in pyright's standard mode, test/pyrightconfig.typed_usage.json), never run.

The `type: ignore[...]` lines are the mistakes a type checker must keep catching: with `warn_unused_ignores`
(mypy) and `reportUnnecessaryTypeIgnoreComment` (pyright), an ignore that is no longer needed (the mistake
slipped through) is itself an error.
"""

from __future__ import annotations

from datetime import datetime

from openmonetize import ApiClient, CustomEvent, EventsApi, ImageGenerationEvent, OpenMonetize, TokenUsageEvent
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


def readme_example() -> None:
    config = Configuration()
    config.api_key["bearerAuth"] = "your-api-key"
    config.host = "https://api.openmonetize.io"
    events_api = EventsApi(ApiClient(config))
    event = TokenUsageEvent(event_id="evt_123", customer_id="cust_abc", user_id="user_456",
                            feature_id="chat-completion", provider="openai", model="gpt-4-turbo",
                            input_tokens=1000, output_tokens=500,
                            timestamp=datetime.now().isoformat())
    image = ImageGenerationEvent(event_id="evt_img_123", customer_id="cust_abc", user_id="user_456",
                                 feature_id="image-gen", provider="openai", model="dall-e-3", image_count=1,
                                 image_size="1024x1024", quality="hd", timestamp=datetime.now().isoformat())
    events_api.ingest(events=[event, image])
    om = OpenMonetize(spool_dir="openmonetize-spool")
    om.track_token_usage(customer_id="cust_abc", feature_id="chat-completion", provider="openai", model="gpt-4o",
                         input_tokens=1200, output_tokens=350)
    om.track_custom_event(customer_id="cust_abc", feature_id="pdf-processing", unit_type="pages", quantity=10)
    delivered: bool = om.flush(timeout=5)
    print(delivered, om.stats()["sent"])


def quickstart_example(events_api: EventsApi) -> int:
    response = events_api.ingest(events=[
        TokenUsageEvent(customer_id="cust_abc", feature_id="chat", provider="openai", model="gpt-4o",
                        input_tokens=1200, output_tokens=350, cached_input_tokens=1000),
        CustomEvent(customer_id="cust_abc", feature_id="pdf-processing", unit_type="pages", quantity=12),
        {"event_type": "IMAGE_GENERATION", "customer_id": "cust_abc", "feature_id": "images",
         "provider": "openai", "model": "gpt-image-1", "image_count": 2},
    ])
    return response.accepted


def mistakes_are_caught() -> None:
    TokenUsageEvent(cached_tokens=3,  # type: ignore[call-arg]  # misspells cached_input_tokens
                    customer_id="c", feature_id="f", provider="p", model="m", input_tokens=1, output_tokens=1)
    TokenUsageEvent(customer_id="c", feature_id="f", provider="p", model="m",
                    input_tokens="1", output_tokens=1)  # type: ignore[arg-type]


def client() -> EventsApi:
    return EventsApi(ApiClient(Configuration(host="http://127.0.0.1:8080", access_token="k")))
