"""events/s of `EventsApi.ingest` (1000-event batches of prebuilt events) against a floor, in one run.

The floor posts the same events as `json.dumps` bytes with a bare urllib3 pool: what any client must at
least pay. Both send to the same loopback sink (bench/sink.py, another process), alternating rounds.

    .venv/bin/python bench/ingest.py [--batches 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

from openmonetize import ApiClient, CustomEvent, EventsApi, ImageGenerationEvent, TokenUsageEvent
from openmonetize.configuration import Configuration
from openmonetize.models.event import Event
from openmonetize.models.ingest_request import IngestRequest

BATCH = 1000


def prebuilt_batch() -> list[Event]:
    events: list[Event] = []
    for i in range(BATCH):
        if i % 3 == 0:
            events.append(TokenUsageEvent(customer_id=f"cust_{i % 50}", feature_id="chat", provider="openai",
                                          model="gpt-4o", input_tokens=1200 + i, output_tokens=300,
                                          cached_input_tokens=200, metadata={"request_id": f"req_{i}"}))
        elif i % 3 == 1:
            events.append(ImageGenerationEvent(customer_id=f"cust_{i % 50}", feature_id="images", provider="openai",
                                               model="gpt-image-1", image_count=2, image_size="1024x1024"))
        else:
            events.append(CustomEvent(customer_id=f"cust_{i % 50}", user_id="user_1", feature_id="pdf",
                                      unit_type="pages", quantity=12))
    return events


def events_per_second(send: Callable[[], object], batches: int) -> float:
    started = time.perf_counter()
    for _ in range(batches):
        send()
    return batches * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    sink = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sink.py"))], stdout=subprocess.PIPE,
                            text=True)
    assert sink.stdout is not None
    url = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
    try:
        events = prebuilt_batch()
        config = Configuration(host=url)
        config.api_key["bearerAuth"] = "bench-key"
        api = EventsApi(ApiClient(config))

        pool = urllib3.PoolManager()
        dicts = [e.to_dict() for e in events]
        for d in dicts:
            d["timestamp"] = d["timestamp"].isoformat()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": "Bearer bench-key"}

        def floor() -> object:
            body = json.dumps({"events": dicts}).encode()
            response = pool.request("POST", f"{url}/v1/events/ingest", body=body, headers=headers)
            return json.loads(response.data)

        def sdk() -> object:
            return api.ingest(events=events)

        request = IngestRequest(events=events)

        def generic_walk() -> object:
            # what the stock generated client does with the body: sanitize_for_serialization, then json.dumps
            body = json.dumps(api.api_client.sanitize_for_serialization(request)).encode()
            response = pool.request("POST", f"{url}/v1/events/ingest", body=body, headers=headers)
            return json.loads(response.data)

        assert sdk().accepted == 1000  # type: ignore[attr-defined]
        floor()
        sdk_rates, floor_rates, walk_rates = [], [], []
        for _ in range(args.rounds):
            floor_rates.append(events_per_second(floor, args.batches))
            sdk_rates.append(events_per_second(sdk, args.batches))
            walk_rates.append(events_per_second(generic_walk, max(1, args.batches // 5)))
        sdk_rate, floor_rate = statistics.median(sdk_rates), statistics.median(floor_rates)
        walk_rate = statistics.median(walk_rates)
        print(f"batches of {BATCH}, {args.batches} batches x {args.rounds} rounds, median of rounds")
        print(f"floor (json.dumps + urllib3)  : {floor_rate:>10,.0f} events/s")
        print(f"EventsApi.ingest              : {sdk_rate:>10,.0f} events/s   ratio {sdk_rate / floor_rate:.2f}")
        print(f"generic walk (stock client)   : {walk_rate:>10,.0f} events/s   ratio {walk_rate / floor_rate:.2f}")
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
