"""A tour of the SDK with no account and no network: `openmonetize demo` (or `python -m openmonetize.cli.demo`).

Starts the embedded LocalIngestServer on loopback, sends the SDK guide's three events with
`EventsApi.ingest`, then a mixed batch, and prints what the server accepted, per customer.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime
from typing import TYPE_CHECKING

from openmonetize import ApiClient, CustomEvent, EventsApi, ImageGenerationEvent, TokenUsageEvent
from openmonetize.configuration import Configuration

if TYPE_CHECKING:
    from openmonetize.models.event import Event
    from openmonetize.testing import LocalIngestServer
    from openmonetize.testing.store import SummaryRow

DEMO_KEY = "demo-key"


def guide_events() -> list[Event]:
    """The three events of the OpenMonetize SDK guide, as written there."""
    return [
        TokenUsageEvent(event_id="evt_123", customer_id="cust_abc", user_id="user_456",
                        feature_id="chat-completion", provider="openai", model="gpt-4-turbo",
                        input_tokens=1000, output_tokens=500, timestamp=datetime.now().isoformat()),
        ImageGenerationEvent(event_id="evt_img_123", customer_id="cust_abc", user_id="user_456",
                             feature_id="image-gen", provider="openai", model="dall-e-3", image_count=1,
                             image_size="1024x1024", quality="hd", timestamp=datetime.now().isoformat()),
        CustomEvent(event_id="evt_custom_123", customer_id="cust_abc", user_id="user_456",
                    feature_id="pdf-processing", unit_type="pages", quantity=10,
                    timestamp=datetime.now().isoformat()),
    ]


def mixed_batch(size: int, seed: int = 7) -> list[Event]:
    """Usage of a few customers across features, models and units; ids are generated."""
    rng = random.Random(seed)
    models = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4"), ("google", "gemini-2.5-flash")]
    events: list[Event] = []
    for _ in range(size):
        customer = rng.choice(["cust_abc", "cust_def", "cust_ghi"])
        kind = rng.random()
        if kind < 0.7:
            provider, model = rng.choice(models)
            output_tokens = rng.randint(50, 2000)
            events.append(TokenUsageEvent(
                customer_id=customer, feature_id="chat-completion", provider=provider, model=model,
                input_tokens=rng.randint(100, 8000), output_tokens=output_tokens,
                reasoning_tokens=rng.randint(0, output_tokens // 2)))
        elif kind < 0.85:
            events.append(ImageGenerationEvent(
                customer_id=customer, feature_id="image-gen", provider="openai", model="gpt-image-1",
                image_count=rng.randint(1, 4), image_size="1024x1024"))
        else:
            events.append(CustomEvent(
                customer_id=customer, feature_id="pdf-processing", unit_type="pages", quantity=rng.randint(1, 40)))
    return events


def format_summary(rows: list[SummaryRow]) -> str:
    lines: list[str] = []
    header = f"  {'feature':<16} {'model / unit':<20} {'events':>6} {'input tok':>10} {'output tok':>10} " \
             f"{'images':>6} {'units':>7}"
    for customer in sorted({row["customer_id"] for row in rows}):
        lines += ["", f"{customer}", header]
        for row in rows:
            if row["customer_id"] != customer:
                continue
            what = row["model"] or row["unit_type"] or ""
            lines.append(
                f"  {row['feature_id']:<16} {what:<20} {row['events']:>6} {row['input_tokens']:>10,} "
                f"{row['output_tokens']:>10,} {row['image_count']:>6} {row['quantity']:>7g}")
    return "\n".join(lines)


def background_delivery(server: LocalIngestServer) -> None:
    """The OpenMonetize client delivering through failures: 30% of requests fail, nothing is lost.

    Only faults that fail a request (error statuses, 429s, dropped connections; no mere delays) are
    injected, so each one is answered by exactly one retry: the two counts printed must be equal.
    """
    from openmonetize import OpenMonetize

    server.set_fault_rate(0.3, seed=3, delay=0)
    with OpenMonetize(api_key=DEMO_KEY, base_url=server.url, flush_interval=0.05, batch_size=100) as om:
        ids = {om.track_token_usage(customer_id="cust_def", feature_id="summarize", provider="openai",
                                    model="gpt-4o-mini", input_tokens=900, output_tokens=120) for _ in range(3000)}
        delivered = om.flush(timeout=60)
        stats = om.stats()
    faults = server.faults_injected
    server.set_fault_rate(0)
    arrived = len(ids & server.event_ids)
    print(f"background delivery, 30% of requests failing: {arrived}/{len(ids)} arrived once each "
          f"(flush ok: {delivered})")
    print(f"  {stats['requests']} requests: {faults} failed on purpose (faults injected), "
          f"{stats['retried']} retried with the same event ids")


def main() -> None:
    from openmonetize.testing import LocalIngestServer

    logging.basicConfig(level=logging.ERROR)  # retries are expected here; their warnings would drown the tour

    with LocalIngestServer(api_key=DEMO_KEY) as server:
        print(f"local ingest server listening on {server.url}")
        config = Configuration(host=server.url)
        config.api_key["bearerAuth"] = DEMO_KEY
        with ApiClient(config) as client:
            events_api = EventsApi(client)

            first = events_api.ingest(events=guide_events())
            print(f"guide events: accepted={first.accepted} duplicates={first.duplicates} batch={first.batch_id}")

            again = events_api.ingest(events=guide_events())
            print(f"same events again: accepted={again.accepted} duplicates={again.duplicates} (deduplicated by id)")

            batch = mixed_batch(500)
            second = events_api.ingest(events=batch)
            print(f"mixed batch of {len(batch)}: accepted={second.accepted} duplicates={second.duplicates}")

        background_delivery(server)

        print("\nWhat the server accepted, per customer:" + format_summary(server.summary()))
        print(f"\n{len(server.events)} events stored, {server.request_count} requests served")


if __name__ == "__main__":
    main()
