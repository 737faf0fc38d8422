"""events/s of `EventsApi.ingest` and `AsyncEventsApi.ingest` (1000-event batches of prebuilt events) against
floors, in one run.

The sync floor posts the same events as `json.dumps` bytes with a bare urllib3 pool, the async floor with a
bare `aiohttp.ClientSession` (what `AsyncEventsApi` runs on): what any client must at least pay. The orjson
floor is the same urllib3 post with the dicts encoded by orjson (a C JSON encoder much faster than json), the
cheapest client there is; both ratios are printed. The SDK encodes the body with orjson too when the `orjson`
extra is installed (`openmonetize/lib/body_json.py`; the `bench` extra includes it, and this bench requires it):
the "pydantic's body" rows are the same calls with that module's switch off, as without the extra, in the
same run (asserted to send the same bytes). The httpx row
is the same floor over httpx, the stack `AsyncEventsApi` ran on before (kept to show why it moved). The
concurrent row runs `--concurrency` async calls at once on one loop, against one sync caller. All send to
the same loopback sink (bench/sink.py, another process, a thread per connection), alternating rounds.

The body rows split `ingest`'s serialization: the body alone as `ingest` builds it (by orjson, and by the body
model's pydantic serializer with the switch off), the same bytes from one cached `TypeAdapter(list[Event])`
call and from each event's own serializer plus one join (asserted byte-identical), and the batch's 1000
timestamps alone. One more row waits (busy) as long as that body before each orjson floor call: what the body's
time alone costs a call on this machine, where a core left idle for long wakes up slower.

    .venv/bin/python bench/ingest.py [--batches 200] [--rounds 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import httpx
import orjson
import urllib3
from pydantic import TypeAdapter

from openmonetize import (
    ApiClient,
    AsyncApiClient,
    AsyncEventsApi,
    CustomEvent,
    EventsApi,
    ImageGenerationEvent,
    TokenUsageEvent,
)
from openmonetize.configuration import Configuration
from openmonetize.lib import body_json
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


def async_events_per_second(
    open_call: Callable[[], Awaitable[tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]]],
    batches: int, concurrency: int = 1,
) -> float:
    """events/s of `batches` awaited calls, `concurrency` at a time on one fresh loop (client opened and warmed
    outside the timing)."""

    async def run() -> float:
        call, close = await open_call()
        try:
            await call()
            per_worker = max(1, batches // concurrency)

            async def worker() -> None:
                for _ in range(per_worker):
                    await call()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return per_worker * concurrency * BATCH / (time.perf_counter() - started)
        finally:
            await close()

    return asyncio.run(run())


@dataclass
class Rig:
    """What this bench and bench/ingest_compiled.py post with: the sink (another process), the prebuilt batch,
    the SDK's client of the sink, and the floors' urllib3 pool, dicts (timestamps as text) and headers."""

    sink: subprocess.Popen[str]
    url: str
    events: list[Event]
    config: Configuration
    api: EventsApi
    pool: urllib3.PoolManager
    dicts: list[dict[str, Any]]
    headers: dict[str, str]

    @classmethod
    def start(cls) -> Rig:
        sink = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sink.py"))], stdout=subprocess.PIPE,
                                text=True)
        assert sink.stdout is not None
        url = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
        events = prebuilt_batch()
        config = Configuration(host=url)
        config.api_key["bearerAuth"] = "bench-key"
        dicts = [e.to_dict() for e in events]
        for d in dicts:
            d["timestamp"] = d["timestamp"].isoformat()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": "Bearer bench-key"}
        return cls(sink, url, events, config, EventsApi(ApiClient(config)), urllib3.PoolManager(), dicts, headers)

    def json_floor(self) -> object:
        body = json.dumps({"events": self.dicts}).encode()
        response = self.pool.request("POST", f"{self.url}/v1/events/ingest", body=body, headers=self.headers)
        return json.loads(response.data)

    def orjson_floor(self) -> object:
        body = orjson.dumps({"events": self.dicts})
        response = self.pool.request("POST", f"{self.url}/v1/events/ingest", body=body, headers=self.headers)
        return orjson.loads(response.data)

    def close(self) -> None:
        self.sink.terminate()
        self.sink.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    rig = Rig.start()
    try:
        url, events, config, api, pool, dicts, headers = (rig.url, rig.events, rig.config, rig.api, rig.pool,
                                                           rig.dicts, rig.headers)
        floor, orjson_floor = rig.json_floor, rig.orjson_floor

        def sdk() -> object:
            return api.ingest(events=events)

        def sdk_pydantic_body() -> object:
            # the same call with orjson switched off (lib/body_json.py's switch): pydantic writes the body, as
            # before the `orjson` extra, or as without it
            body_json.orjson = None
            try:
                return api.ingest(events=events)
            finally:
                body_json.orjson = encoder

        def serialize_pydantic_body() -> object:
            body_json.orjson = None
            try:
                return api._ingest_serialize(events, None, None, None, 0)
            finally:
                body_json.orjson = encoder

        request = IngestRequest(events=events)
        # typed `Optional[str]` by the generator's RequestSerialized; model bodies are bytes (api_client.mustache)
        prebuilt_body = cast(bytes, api._ingest_serialize(events, None, None, None, 0)[3])
        assert isinstance(prebuilt_body, bytes)

        def serialize_only() -> object:
            # the body `ingest` builds, without sending it: the serialization share of a call
            return api._ingest_serialize(events, None, None, None, 0)

        list_adapter = TypeAdapter(list[Event])
        serializers = {cls: cls.__pydantic_serializer__ for cls in (TokenUsageEvent, ImageGenerationEvent, CustomEvent)}
        timestamps = [e.timestamp for e in events]
        timestamp_adapter = TypeAdapter(list[datetime.datetime])

        def body_one_list() -> object:
            # the whole list in one Rust call through a cached TypeAdapter(list[Event]), not the body model
            return b'{"events":' + list_adapter.dump_json(events, by_alias=True, exclude_none=True) + b"}"

        def body_per_event() -> object:
            # each event by its own model's serializer, then one join
            return b'{"events":[' + b",".join([serializers[type(e)].to_json(e, by_alias=True, exclude_none=True)
                                                for e in events]) + b"]}"

        def timestamps_only() -> object:
            # the 1000 timestamps alone, as the body's serializer writes them: their share of the body
            return timestamp_adapter.dump_json(timestamps)

        assert body_one_list() == body_per_event() == prebuilt_body  # the variants write the same bytes

        def orjson_floor_after(us: float) -> Callable[[], object]:
            # the orjson floor's call after `us` of busy CPU (as long as ingest's body): what the body's time costs
            # a call here, where a core left idle longer than a few hundred µs wakes up slower (a VM's vCPU)
            def run() -> object:
                end = time.perf_counter() + us / 1e6
                while time.perf_counter() < end:
                    pass
                return orjson_floor()

            return run

        def http_only() -> object:
            # the same body, prebuilt, through the SDK's HTTP path and answer checks: the transport share
            return api.ingest_serialized(prebuilt_body, _event_count=BATCH)

        def generic_walk() -> object:
            # what the stock generated client does with the body: sanitize_for_serialization, then json.dumps
            body = json.dumps(api.api_client.sanitize_for_serialization(request)).encode()
            response = pool.request("POST", f"{url}/v1/events/ingest", body=body, headers=headers)
            return json.loads(response.data)

        async def open_async_sdk() -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]:
            client = AsyncApiClient(config)
            async_api = AsyncEventsApi(client)

            async def call() -> object:
                return await async_api.ingest(events=events)

            return call, client.close

        async def open_async_floor() -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))

            async def call() -> object:
                body = json.dumps({"events": dicts}).encode()
                async with session.post(f"{url}/v1/events/ingest", data=body, headers=headers) as response:
                    return json.loads(await response.read())

            return call, session.close

        async def open_httpx_floor() -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]:
            client = httpx.AsyncClient(timeout=None, trust_env=False)

            async def call() -> object:
                body = json.dumps({"events": dicts}).encode()
                response = await client.post(f"{url}/v1/events/ingest", content=body, headers=headers)
                return json.loads(response.content)

            return call, client.aclose

        assert sdk().accepted == 1000  # type: ignore[attr-defined]
        encoder = body_json.orjson
        assert encoder is orjson, "bench/ingest.py measures the orjson body: install the `orjson` extra"
        # both encoders write the same bytes
        assert cast(tuple[object, ...], serialize_pydantic_body())[3] == prebuilt_body
        floor()
        orjson_floor()
        rates: dict[str, list[float]] = {k: [] for k in (
            "floor", "ofloor", "sdk", "psdk", "ser", "after", "pser", "list", "each", "stamps", "http", "walk",
            "afloor", "hfloor", "async", "concurrent")}
        for _ in range(args.rounds):
            rates["floor"].append(events_per_second(floor, args.batches))
            rates["ofloor"].append(events_per_second(orjson_floor, args.batches))
            rates["sdk"].append(events_per_second(sdk, args.batches))
            rates["psdk"].append(events_per_second(sdk_pydantic_body, args.batches))
            rates["ser"].append(events_per_second(serialize_only, args.batches))
            rates["after"].append(events_per_second(orjson_floor_after(1e6 * BATCH / rates["ser"][-1]), args.batches))
            rates["pser"].append(events_per_second(serialize_pydantic_body, args.batches))
            rates["list"].append(events_per_second(body_one_list, args.batches))
            rates["each"].append(events_per_second(body_per_event, args.batches))
            rates["stamps"].append(events_per_second(timestamps_only, args.batches))
            rates["http"].append(events_per_second(http_only, args.batches))
            rates["walk"].append(events_per_second(generic_walk, max(1, args.batches // 5)))
            rates["afloor"].append(async_events_per_second(open_async_floor, args.batches))
            rates["hfloor"].append(async_events_per_second(open_httpx_floor, args.batches))
            rates["async"].append(async_events_per_second(open_async_sdk, args.batches))
            rates["concurrent"].append(async_events_per_second(open_async_sdk, args.batches, args.concurrency))
        m = {k: statistics.median(v) for k, v in rates.items()}
        print(f"batches of {BATCH}, {args.batches} batches x {args.rounds} rounds, median of rounds")
        print(f"floor (json.dumps + urllib3)  : {m['floor']:>10,.0f} events/s")
        print(f"floor (orjson + urllib3)      : {m['ofloor']:>10,.0f} events/s   "
              f"({1e6 * BATCH / m['ofloor']:,.0f} µs per batch, wall time)")
        print(f"EventsApi.ingest              : {m['sdk']:>10,.0f} events/s   ratio {m['sdk'] / m['floor']:.2f}"
              f" of json + urllib3, {m['sdk'] / m['ofloor']:.2f} of orjson + urllib3")
        print(f"  the same, pydantic's body   : {m['psdk']:>10,.0f} events/s   ratio {m['psdk'] / m['floor']:.2f}"
              f" of json + urllib3, {m['psdk'] / m['ofloor']:.2f} of orjson + urllib3 (orjson switched off)")
        per_batch = {k: 1e6 * BATCH / m[k] for k in ("sdk", "ser", "pser", "http")}
        share = per_batch["ser"] / per_batch["sdk"]
        print(f"  of which the body alone     : {per_batch['ser']:>10,.0f} µs per batch ({share:.0%} of a call's"
              f" {per_batch['sdk']:,.0f} µs), {per_batch['pser']:,.0f} µs by pydantic; its HTTP path alone"
              f" (ingest_serialized): {per_batch['http']:,.0f} µs")
        body_us = {k: 1e6 * BATCH / m[k] for k in ("list", "each", "stamps")}
        print(f"  the same body as one TypeAdapter(list[Event]) call: {body_us['list']:,.0f} µs; per event + one join:"
              f" {body_us['each']:,.0f} µs; its 1000 timestamps alone: {body_us['stamps']:,.0f} µs")
        after_us = 1e6 * BATCH / m["after"]
        beyond = after_us - per_batch["ser"] - 1e6 * BATCH / m["ofloor"]
        print(f"  the orjson floor after a busy wait as long as the body: {after_us:,.0f} µs a call ({beyond:+,.0f} µs"
              f" beyond the wait and the floor's own call); ingest is {m['sdk'] / m['after']:.2f} of it")
        print(f"generic walk (stock client)   : {m['walk']:>10,.0f} events/s   ratio {m['walk'] / m['floor']:.2f}")
        print(f"async floor (json.dumps+aiohttp): {m['afloor']:>8,.0f} events/s")
        print(f"the same floor over httpx     : {m['hfloor']:>10,.0f} events/s   ratio {m['hfloor'] / m['afloor']:.2f}"
              " of the aiohttp floor")
        print(f"AsyncEventsApi.ingest         : {m['async']:>10,.0f} events/s   ratio {m['async'] / m['afloor']:.2f}"
              f" of the async floor, {m['async'] / m['sdk']:.2f} of EventsApi.ingest")
        print(f"AsyncEventsApi.ingest x{args.concurrency:<2} on one loop: {m['concurrent']:>6,.0f} events/s   "
              f"{m['concurrent'] / m['sdk']:.2f} x one sync caller")
    finally:
        rig.close()


if __name__ == "__main__":
    main()
