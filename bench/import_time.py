"""What `import openmonetize` adds over importing its dependencies, in fresh interpreters, side by side.

    .venv/bin/python bench/import_time.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

# The dependencies' API surface the SDK uses: `import pydantic` alone is lazy and loads none of it.
DEPENDENCIES = ("from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, validate_call, field_validator, "
                "model_validator; import pydantic_core, urllib3, dateutil.parser, typing_extensions")
CASES = {
    "dependencies only": DEPENDENCIES,
    "+ import openmonetize": f"{DEPENDENCIES}; import openmonetize",
    "+ the seed's imports": f"{DEPENDENCIES}; from openmonetize import ApiClient, EventsApi, CustomEvent, "
                            "ImageGenerationEvent, TokenUsageEvent; "
                            "from openmonetize.configuration import Configuration",
}


def import_ms(code: str) -> float:
    timer = f"import time; t = time.perf_counter(); {code}; print((time.perf_counter() - t) * 1000)"
    out = subprocess.run([sys.executable, "-c", timer], check=True, capture_output=True, text=True).stdout
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    medians: dict[str, float] = {}
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.runs):  # interleaved, so drift of the machine hits every case alike
        for name, code in CASES.items():
            samples[name].append(import_ms(code))
    for name in CASES:
        medians[name] = statistics.median(samples[name])
    base = medians["dependencies only"]
    print(f"median of {args.runs} fresh interpreters, milliseconds")
    for name, ms in medians.items():
        extra = "" if name == "dependencies only" else f"   adds {ms - base:6.1f} ms"
        print(f"  {name:<24} {ms:7.1f} ms{extra}")


if __name__ == "__main__":
    main()
