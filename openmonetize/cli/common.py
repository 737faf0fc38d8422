"""What the commands share: the key and URL options, consoles, signals, logging, exit codes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import types
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
from rich.console import Console

from openmonetize.lib.client import DEFAULT_BASE_URL

# Exit codes: the shell's conventions.
OK = 0
PARTIAL_FAILURE = 1  # some events invalid, refused or not delivered
USAGE_ERROR = 2  # click's own code for bad flags and arguments

F = TypeVar("F", bound=Callable[..., Any])


def api_key_option(help_text: str) -> Callable[[F], F]:
    """`--api-key`, read from OPENMONETIZE_API_KEY when not given; never shown in help or output."""
    return click.option(
        "--api-key", envvar="OPENMONETIZE_API_KEY", show_envvar=True, metavar="KEY",
        help=help_text + " Prefer the environment variable: a command line is visible to other users of the"
                         " machine (ps).",
    )


def base_url_option() -> Callable[[F], F]:
    return click.option(
        "--base-url", envvar="OPENMONETIZE_BASE_URL", show_envvar=True, default=DEFAULT_BASE_URL,
        show_default=True, metavar="URL", callback=_check_url, help="The ingest API to send to.",
    )


def _check_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"{display_url(value)!r} is not an http:// or https:// URL")
    return value.rstrip("/")


def require_key(api_key: str | None) -> str:
    if not api_key:
        raise click.UsageError("no API key: set OPENMONETIZE_API_KEY (or pass --api-key)")
    return api_key


def mask(key: str) -> str:
    """Enough of a key to tell which one it is, never enough to use it."""
    return "*" * 8 + key[-4:] if len(key) >= 16 else "*" * 8


def display_url(url: str) -> str:
    """The URL without credentials someone may have put in it (https://user:secret@host)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))


def stderr_console() -> Console:
    """Progress, warnings and errors go to stderr, so stdout holds only results."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    # Wide enough for the tables when piped (rich would default to 80 columns).
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "140"))
    return Console(highlight=False, width=width)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop reading, hand back what is safe, say how to resume.

    A BaseException, as KeyboardInterrupt is: the signal handler raises it wherever the main thread is, and
    code that declines on any error (`except Exception`, as the direct event writer does) must not take it
    for one, or the signal is lost and `send` reads on."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` (once: a second signal stops the process at once)."""

    def handler(signum: int, frame: types.FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _ConsoleHandler(logging.Handler):
    """Log records printed through rich, so they appear above a live progress bar, not through it."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


def log_to(console: Console, level: int = logging.WARNING) -> None:
    """The delivery client's warnings (retries) and errors (refusals) on stderr."""
    logger = logging.getLogger("openmonetize")
    for handler in list(logger.handlers):
        if isinstance(handler, _ConsoleHandler):
            logger.removeHandler(handler)
    handler = _ConsoleHandler(console)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
