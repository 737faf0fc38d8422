"""openmonetize: meter AI usage (LLM tokens, images, any unit) and send it to the OpenMonetize ingest API.

Hand-written (protected by .openapi-generator-ignore); the dependency pins match what the generated
client needs (see the generator's requirements.txt template).
"""

import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
# One version: openapi-generator.yaml's packageVersion, which ./generate.sh writes into `__version__` (and the
# User-Agent); read back from there so an sdist, which has no generator config, builds the same version.
_VERSION = re.search(r'^__version__ = "([^"]+)"$', (HERE / "openmonetize" / "__init__.py").read_text(encoding="utf-8"),
                     re.MULTILINE)
if _VERSION is None:
    raise SystemExit("setup.py: openmonetize/__init__.py has no __version__ (run ./generate.sh)")
VERSION = _VERSION.group(1)

# Documentation the wheel ships as package data under openmonetize/guides/ (`openmonetize docs [TOPIC]` reads
# it): source path (glob) in this tree -> folder in the package. The sdist carries the sources (MANIFEST.in).
SHIPPED_DOCS = {
    "docs/guides/*.md": "guides",
    "docs/[A-Z]*.md": "guides/reference",  # the generated reference pages (docs/README.md, their index, is not)
    "BENCHMARKS.md": "guides",
}

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
# EventsApi.ingest's bodies of event models by orjson, the same bytes as pydantic's, faster
# (openmonetize/lib/body_json.py; test/test_body_json.py pins the bytes against the installed version)
EXTRAS["orjson"] = ["orjson >= 3.10, < 4"]
# the `openmonetize` command: click and rich, plus the local server (`serve`, `demo`), so that every
# command works after `pip install 'openmonetize[cli]'`; kept out of the runtime set, which services embed.
# orjson: `send` writes each line's canonical JSON for its derived id with it (openmonetize/cli/jsonl.py)
EXTRAS["cli"] = ["click >= 8.1", "rich >= 13"] + EXTRAS["testing"] + EXTRAS["orjson"]
# AsyncEventsApi / AsyncApiClient (openmonetize/lib/async_http.py): aiohttp (measured faster than httpx over
# loopback, see that module), imported only when an AsyncApiClient is made
EXTRAS["async"] = ["aiohttp >= 3.9"]
# benchmarks: the peer SDK bench/track.py compares against; httpx: the floor row of the old stack; orjson: the
# fastest JSON floor of bench/ingest.py, and the SDK's own encoder there
EXTRAS["bench"] = ["segment-analytics-python == 2.4.0", "httpx >= 0.27"] + EXTRAS["orjson"]
EXTRAS["dev"] = EXTRAS["cli"] + EXTRAS["async"] + EXTRAS["providers"] + EXTRAS["litellm"] + EXTRAS["orjson"] + [
    "pytest >= 8",
    # the README's test command runs the suite on 2 workers: most of its time is waiting on subprocesses and
    # loopback servers, and one process left the machine's second core idle (CI's limit is 5 minutes)
    "pytest-xdist >= 3.5",
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
    # test/test_packaging.py builds the wheel offline with setuptools' backend (setuptools < 70.1 needs it)
    "wheel >= 0.42",
    # test/test_layout.py reads pyproject.toml on Python 3.10 (tomllib from 3.11); mypy checks that branch too
    "tomli >= 2",
] + EXTRAS["langchain"] + [
    # test/test_llm_langchain.py drives real LangChain chat models and a pydantic-ai agent against fake_llm
    "langchain-openai >= 1.0",
    "langchain-anthropic >= 1.0",
    "pydantic-ai-slim[openai] >= 1.0",
]



def shipped_docs() -> list[tuple[Path, str]]:
    """(source file, its path inside the package) for every shipped page; BENCHMARKS.md as benchmarks.md."""
    pages = []
    for pattern, folder in SHIPPED_DOCS.items():
        for source in sorted(HERE.glob(pattern)):
            if source.name == "README.md":
                continue
            name = "benchmarks.md" if source.name == "BENCHMARKS.md" else source.name
            pages.append((source, f"openmonetize/{folder}/{name}"))
    return pages


class BuildPyWithDocs(build_py):
    """build_py, plus the shipped documentation copied into the built package."""

    def run(self) -> None:
        super().run()
        for source, target in shipped_docs():
            destination = Path(self.build_lib) / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)


# A link of the README to a file of this tree, as text naming where the installed package has it: the package
# index shows the README without the tree, so a relative link there is broken.
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
_ELSEWHERE = {
    "BENCHMARKS.md": "`openmonetize docs benchmarks`",
    "docs/README.md": "`openmonetize docs`",
    "openapi.yaml": "the package's `openmonetize/openapi.yaml`",
}


def _where_shipped(target: str) -> str | None:
    guide = re.fullmatch(r"docs/guides/([a-z_-]+)\.md", target)
    if guide and (HERE / target).exists():
        return f"`openmonetize docs {guide.group(1)}`"
    return _ELSEWHERE.get(target)


def readme_for_the_index(text: str) -> str:
    """The README with every relative link rewritten as text (absolute links and URLs stay); a relative link
    to something not shipped fails the build instead of rendering broken."""

    def rewrite(match: re.Match[str]) -> str:
        image, label, target = match.groups()
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            return match.group(0)  # https:, mailto:
        where = _where_shipped(target.split("#", 1)[0])
        if image or where is None:
            raise SystemExit(f"setup.py: README.md links to {target!r}, which the package index cannot show: "
                             "ship it (SHIPPED_DOCS, _ELSEWHERE) or link it absolutely")
        return where if label.strip("`") == target else f"{label} ({where})"

    return _LINK.sub(rewrite, text)


setup(
    name="openmonetize",
    version=VERSION,
    description="Meter AI usage and send it, as typed events, to the OpenMonetize ingest API.",
    long_description=readme_for_the_index((HERE / "README.md").read_text(encoding="utf-8")),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    # No project_urls: this SDK has no public repository or documentation site yet (the docs ship in the
    # wheel: `openmonetize docs`). Add "Source", "Documentation" and "Issues" here once they exist.
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Office/Business :: Financial :: Accounting",
        "Topic :: Software Development :: Libraries :: Python Modules",
        "Typing :: Typed",
    ],
    python_requires=">= 3.10",
    packages=find_packages(include=["openmonetize", "openmonetize.*"]),
    package_data={"openmonetize": ["py.typed", "openapi.yaml"]},
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    cmdclass={"build_py": BuildPyWithDocs},
    entry_points={
        "console_scripts": ["openmonetize = openmonetize.cli:main"],
        "pytest11": ["openmonetize = openmonetize.testing.pytest_plugin"],
    },
)
