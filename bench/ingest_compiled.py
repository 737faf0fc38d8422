"""What a compiled body builder would give `EventsApi.ingest` (issue 14's 0.4x orjson goal): evidence for a
decision, not a part of the SDK. `openmonetize/lib/body_json.py` turns each event into the dict orjson writes
(its `__dict__` without the None values, after a few checks) in straight-line Python, ~0.5 µs an event; the
same builder compiled by Cython (bench/compiled_builder.pyx, the same checks for the bench's events, built by
pyximport) is swapped in for one row, and for another each `__dict__` as it is (None values sent as null: a
contract change, shown as the lower bound of that option). Interleaved rounds against the same loopback sink
as bench/ingest.py, the same prebuilt 1000-event batches; the compiled body is asserted byte-identical first.

    .venv/bin/pip install cython && .venv/bin/python bench/ingest_compiled.py [--batches 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import statistics
import timeit
import typing
from functools import partial
from pathlib import Path
from typing import Any, cast

import orjson
from ingest import BATCH, Rig, events_per_second

from openmonetize.lib import body_json
from openmonetize.lib.event_types import EVENT_MODELS


def compiled_builder() -> Any:
    # (imported by name: Cython is not a dependency of the project, only of this bench)
    importlib.import_module("pyximport").install(language_level=3, build_dir=str(Path(__file__).parent / ".pyxbld"))
    cb = importlib.import_module("compiled_builder")

    def kind(annotation: Any) -> int:
        held = body_json._holds
        return 2 if held(annotation, datetime.datetime) else 3 if held(annotation, typing.Any) \
            else 1 if held(annotation, int) or held(annotation, float) else 0

    layouts = {m: (tuple(m.model_fields), bytes(kind(i.annotation) for i in m.model_fields.values()))
               for m in EVENT_MODELS}
    return cb.make(layouts, (datetime.timezone.utc, body_json._parsed_utc()), body_json._whole_minutes,
                   body_json._plain_json)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rig = Rig.start()
    try:
        events, api = rig.events, rig.api
        body = cast(bytes, api._ingest_serialize(events, None, None, None, 0)[3])
        python_build = body_json._build
        assert python_build is not None
        compiled = compiled_builder()
        assert compiled(events) == python_build(events)

        def with_builder(build: Any) -> Any:
            def run() -> object:
                body_json._build = build
                try:
                    return api.ingest(events=events)
                finally:
                    body_json._build = python_build
            return run

        body_json._build = compiled
        assert cast(bytes, api._ingest_serialize(events, None, None, None, 0)[3]) == body
        body_json._build = python_build

        def as_held(batch: list[Any]) -> list[dict[str, Any]]:
            # each `__dict__` as it is, None values included: what would be sent if the spec let every optional
            # field be null (a contract change, bodies ~30% longer); no checks: a lower bound
            return [event.__dict__ for event in batch]

        rows = {"orjson floor": rig.orjson_floor, "json floor": rig.json_floor, "ingest": with_builder(python_build),
                "ingest, compiled builder": with_builder(compiled),
                "ingest, nulls sent as held": with_builder(as_held)}
        rates: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, call in rows.items():
                rates[name].append(events_per_second(call, args.batches))
        m = {k: statistics.median(v) for k, v in rates.items()}
        builder_us = {name: 1e6 * min(timeit.repeat(partial(build, events), number=20, repeat=9)) / 20
                      for name, build in (("python", python_build), ("compiled", compiled), ("as held", as_held))}
        held_body = orjson.dumps({"events": as_held(events)}, option=orjson.OPT_UTC_Z)
        print(f"batches of {BATCH}, {args.batches} batches x {args.rounds} rounds, median of rounds")
        for name in rows:
            print(f"{name:<26}: {m[name]:>10,.0f} events/s   {m[name] / m['orjson floor']:.2f} of the orjson floor,"
                  f" {m[name] / m['json floor']:.2f} of the json floor")
        print(f"the builder alone, 1000 events: {builder_us['python']:,.0f} µs in Python, "
              f"{builder_us['compiled']:,.0f} µs compiled, {builder_us['as held']:,.0f} µs as held; bodies of"
              f" {len(body):,} bytes, {len(held_body):,} with the nulls")
    finally:
        rig.close()


if __name__ == "__main__":
    main()
