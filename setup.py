"""openmonetize: meter AI usage (LLM tokens, images, any unit) and send it to the OpenMonetize ingest API.

Hand-written (protected by .openapi-generator-ignore); the dependency pins match what the generated
client needs (see the generator's requirements.txt template).
"""

from pathlib import Path

from setuptools import find_packages, setup

RUNTIME = [
    "urllib3 >= 2.1.0, < 3.0.0",
    "python-dateutil >= 2.8.2",
    "pydantic >= 2.11, < 3",
    "typing-extensions >= 4.7.1",
    # transparent proxies for the LLM tracker (isinstance, context managers, every attribute pass through)
    "wrapt >= 2, < 3",
]

EXTRAS = {
    # openmonetize.testing.LocalIngestServer validates requests against openapi.yaml
    "testing": [
        "openapi-schema-validator >= 0.6",
        "rfc3339-validator >= 0.1.4",
        "PyYAML >= 6.0",
    ],
}
# the provider SDKs that usage tracking wraps; tests drive them against openmonetize.testing.fake_llm
EXTRAS["providers"] = ["openai >= 3", "anthropic >= 2", "google-genai >= 3", "groq >= 1"]
# tracker.langchain_handler(): a LangChain callback handler (openmonetize/lib/llm/langchain.py)
EXTRAS["langchain"] = ["langchain-core >= 1.0"]
# LiteLLM (`tracker.wrap(client=litellm)`); 1.107.x was withdrawn as compromised: never allow it
EXTRAS["litellm"] = ["litellm >= 1.110"]
# the `openmonetize` command: click and rich, plus the local server (`serve`, `demo`), so that every
# command works after `pip install 'openmonetize[cli]'`; kept out of the runtime set, which services embed
EXTRAS["cli"] = ["click >= 8.1", "rich >= 13"] + EXTRAS["testing"]
# AsyncEventsApi / AsyncApiClient (openmonetize/lib/async_http.py): httpx, the HTTP stack of the openai and
# anthropic SDKs, imported only when an AsyncApiClient is made
EXTRAS["async"] = ["httpx >= 0.27"]
# benchmarks only: the peer SDK bench/track.py compares against
EXTRAS["bench"] = ["segment-analytics-python == 2.4.0"]
EXTRAS["dev"] = EXTRAS["cli"] + EXTRAS["async"] + EXTRAS["providers"] + EXTRAS["litellm"] + [
    "pytest >= 8",
    "hypothesis >= 6.100",
    "schemathesis >= 4, < 5",
    "openapi-spec-validator >= 0.7",
    "mypy >= 1.10",
    # pyright's checker for test/typed_usage.py; this distribution bundles Node and the checker, so nothing is
    # downloaded when the tests run (the `pyright` wrapper fetches it from npm on first use)
    "basedpyright >= 1.20",
    "ruff >= 0.6",
    "types-python-dateutil",
    "types-PyYAML",
    "types-jsonschema",
    # Celery's prefork pool (a fork of multiprocessing): test/test_process_exit.py checks its children deliver
    "billiard >= 4.2",
] + EXTRAS["langchain"] + [
    # test/test_llm_langchain.py drives real LangChain chat models and a pydantic-ai agent against fake_llm
    "langchain-openai >= 1.0",
    "langchain-anthropic >= 1.0",
    "pydantic-ai-slim[openai] >= 1.0",
]

setup(
    name="openmonetize",
    version="0.1.0",
    description="Meter AI usage and send it, as typed events, to the OpenMonetize ingest API.",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">= 3.10",
    packages=find_packages(include=["openmonetize", "openmonetize.*"]),
    package_data={"openmonetize": ["py.typed", "openapi.yaml"]},
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": ["openmonetize = openmonetize.cli:main"],
        "pytest11": ["openmonetize = openmonetize.testing.pytest_plugin"],
    },
)
