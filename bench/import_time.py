"""What `import openmonetize` adds over importing its dependencies, in fresh interpreters, side by side.

    .venv/bin/python bench/import_time.py [--runs 7] [--compile-sources]

By default every interpreter reads bytecode, ours included, as an installed wheel has it (pip byte-compiles
what it installs). An editable checkout under PYTHONDONTWRITEBYTECODE=1 (common in containers) never has
bytecode for our sources, so each import compiles them while the dependencies' bytecode is read:
`--compile-sources` measures that way too, for comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

# The dependencies' API surface the SDK uses: `import pydantic` alone is lazy and loads none of it.
DEPENDENCIES = ("from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, validate_call, field_validator, "
                "model_validator; import pydantic_core, urllib3, dateutil.parser, typing_extensions")
SEED_IMPORTS = ("from openmonetize import ApiClient, EventsApi, CustomEvent, ImageGenerationEvent, TokenUsageEvent; "
                "from openmonetize.configuration import Configuration")
CASES = {
    "dependencies only": DEPENDENCIES,
    "+ import openmonetize": f"{DEPENDENCIES}; import openmonetize",
    "+ the seed's imports": f"{DEPENDENCIES}; {SEED_IMPORTS}",
    "+ the delivery client": f"{DEPENDENCIES}; from openmonetize import OpenMonetize",
    # schemas are built at first use: what the first event costs on top of the imports
    "+ imports, first event": f"{DEPENDENCIES}; {SEED_IMPORTS}; "
                              "TokenUsageEvent(customer_id='c', feature_id='f', provider='OPENAI', model='m', "
                              "input_tokens=1, output_tokens=1).model_dump_json()",
}


def import_ms(code: str, env: dict[str, str]) -> float:
    timer = f"import time; t = time.perf_counter(); {code}; print((time.perf_counter() - t) * 1000)"
    out = subprocess.run([sys.executable, "-c", timer], check=True, capture_output=True, text=True, env=env).stdout
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--compile-sources", action="store_true",
                        help="no bytecode for our sources (PYTHONDONTWRITEBYTECODE=1 on an editable checkout)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ)
        if args.compile_sources:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:  # bytecode for everything, kept out of the checkout
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
            for code in CASES.values():  # writes the caches
                import_ms(code, env)
        samples: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(args.runs):  # interleaved, so drift of the machine hits every case alike
            for name, code in CASES.items():
                samples[name].append(import_ms(code, env))
    best = {name: min(values) for name, values in samples.items()}
    median = {name: statistics.median(values) for name, values in samples.items()}
    mode = "our sources compiled at each import" if args.compile_sources else "bytecode, as installed"
    print(f"{args.runs} fresh interpreters per case ({mode}), milliseconds: best, median")
    for name in CASES:
        extra = ""
        if name != "dependencies only":
            extra = (f"   adds {best[name] - best['dependencies only']:6.1f} best, "
                     f"{median[name] - median['dependencies only']:6.1f} median")
        print(f"  {name:<24} {best[name]:7.1f} {median[name]:7.1f}{extra}")


if __name__ == "__main__":
    main()
