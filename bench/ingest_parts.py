"""Where `EventsApi.ingest`'s time goes apart from the network, for 1000-event batches: the body (by orjson,
`openmonetize/lib/body_json.py`, which the `bench` extra installs; and by pydantic's serializer, with that
module's switch off, as without the `orjson` extra; and of the same events validated from their JSON text, whose
timestamps hold pydantic's tzinfo), what pydantic spends on a timestamp and on a model, the
same events' plain dicts through orjson, and the SDK's own work around the HTTP call with a canned answer (no
socket), with either body. Best of `--rounds`, in µs.

    .venv/bin/python bench/ingest_parts.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import datetime
import io
import timeit
from collections.abc import Callable
from typing import Any, cast

import orjson
from ingest import BATCH, prebuilt_batch
from pydantic import BaseModel, TypeAdapter
from urllib3 import HTTPResponse

from openmonetize import ApiClient, EventsApi
from openmonetize.configuration import Configuration
from openmonetize.lib import body_json

ANSWER = b'{"accepted": 1000, "duplicates": 0, "rejected": 0, "batch_id": "bench"}'


class OneDatetime(BaseModel):
    timestamp: datetime.datetime


class OneStr(BaseModel):
    timestamp: str


class CannedPool:
    """Stands in for urllib3's pool manager: every request answers 202 with counts for 1000 events."""

    def request(self, *args: Any, **kwargs: Any) -> HTTPResponse:
        return HTTPResponse(body=io.BytesIO(ANSWER), status=202, preload_content=False,
                            headers={"Content-Type": "application/json", "Content-Length": str(len(ANSWER))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    events = prebuilt_batch()
    config = Configuration(host="http://127.0.0.1:9")
    config.api_key["bearerAuth"] = "bench-key"
    api = EventsApi(ApiClient(config))
    api.api_client.rest_client.pool_manager = cast(Any, CannedPool())
    body = cast(bytes, api._ingest_serialize(events, None, None, None, 0)[3])
    # the same events validated from their JSON text, as `openmonetize send` reads them: pydantic's own
    # tzinfo on each timestamp (the prebuilt ones hold datetime.timezone.utc)
    read_back = [type(event).model_validate_json(event.model_dump_json()) for event in events]
    assert cast(bytes, api._ingest_serialize(read_back, None, None, None, 0)[3]) == body
    assert body_json.orjson is orjson, "install the `orjson` extra: this compares its body with pydantic's"
    now = datetime.datetime.now(datetime.timezone.utc)
    with_datetime = [OneDatetime(timestamp=now) for _ in range(BATCH)]
    with_str = [OneStr(timestamp=now.isoformat()) for _ in range(BATCH)]
    datetime_list, str_list = TypeAdapter(list[OneDatetime]), TypeAdapter(list[OneStr])
    dicts = [e.to_dict() for e in events]
    canned = CannedPool()

    encoder = body_json.orjson if body_json.orjson is not None else orjson

    def without_orjson(part: Callable[[], object]) -> Callable[[], object]:
        """`part` with lib/body_json.py's switch off: pydantic writes the body, as without the `orjson` extra."""

        def run() -> object:
            body_json.orjson = None
            try:
                return part()
            finally:
                body_json.orjson = encoder

        return run

    serialize = lambda: api._ingest_serialize(events, None, None, None, 0)  # noqa: E731
    ingest = lambda: api.ingest(events=events)  # noqa: E731
    parts = {
        "the body (ingest's serializer)": serialize,
        "the body, pydantic (orjson off)": without_orjson(serialize),
        "the body, events read from JSON": lambda: api._ingest_serialize(read_back, None, None, None, 0),
        "1000 one-field models, a datetime": lambda: datetime_list.dump_json(with_datetime),
        "1000 one-field models, a str": lambda: str_list.dump_json(with_str),
        "the same events' dicts by orjson": lambda: orjson.dumps({"events": dicts}),
        "ingest, canned answer": ingest,
        "ingest, canned answer, orjson off": without_orjson(ingest),
        "ingest_serialized, canned answer": lambda: api.ingest_serialized(body, _event_count=BATCH),
        "the canned answer alone": lambda: canned.request().data,
    }
    best = dict.fromkeys(parts, float("inf"))
    for _ in range(args.rounds):
        for name, part in parts.items():
            best[name] = min(best[name], timeit.timeit(part, number=10) / 10 * 1e6)
    for name, us in best.items():
        print(f"{name:36s}: {us:8,.1f} µs")
    canned_alone = best["the canned answer alone"]
    print(f"the SDK's own work around the HTTP call (ingest_serialized - the canned answer): "
          f"{best['ingest_serialized, canned answer'] - canned_alone:,.1f} µs")


if __name__ == "__main__":
    main()
