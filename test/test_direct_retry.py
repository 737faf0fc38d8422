"""Direct `ingest` retries (`Configuration.max_retries`), sync and async, against a real LocalIngestServer.

The waits go through an injected sleep (recorded, never slept), so nothing here waits for real.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import API_KEY

from openmonetize import ApiClient, AsyncApiClient, AsyncEventsApi, CustomEvent, EventsApi, RetryPolicy
from openmonetize.configuration import Configuration
from openmonetize.exceptions import (
    ApiConnectionError,
    ApiException,
    ApiTimeoutError,
    BadRequestException,
    ServiceException,
)
from openmonetize.lib.direct_retry import DirectRetry
from openmonetize.models.ingest_response import IngestResponse
from openmonetize.testing import LocalIngestServer

NOW = 1_900_000_000.0


def events(n: int = 3) -> list[CustomEvent]:
    return [CustomEvent(customer_id="cust", feature_id="f", unit_type="pages", quantity=i + 1) for i in range(n)]


class Caller:
    """One way of calling `ingest` (sync `EventsApi` or async `AsyncEventsApi`), with recorded waits."""

    def __init__(self, kind: str, url: str, max_retries: int | None) -> None:
        self.kind = kind
        self.config = Configuration(host=url, access_token=API_KEY)
        if max_retries is not None:
            self.config.max_retries = max_retries
        self.sleeps: list[float] = []

        async def async_sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.retry = DirectRetry(policy=RetryPolicy(rng=random.Random(7)), sleep=self.sleeps.append,
                                 async_sleep=async_sleep, now=lambda: NOW)

    def ingest(self, batch: list[CustomEvent], **kwargs: Any) -> IngestResponse:
        if self.kind == "sync":
            with ApiClient(self.config) as client:
                client.retry = self.retry
                return EventsApi(client).ingest(events=batch, **kwargs)

        async def run() -> IngestResponse:
            async with AsyncApiClient(self.config) as client:
                client.retry = self.retry
                return await AsyncEventsApi(client).ingest(events=batch, **kwargs)

        return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def caller(request: pytest.FixtureRequest, server: LocalIngestServer) -> Iterator[Callable[..., Caller]]:
    def make(max_retries: int | None = None) -> Caller:
        return Caller(request.param, server.url, max_retries)

    yield make


def test_the_default_is_two_retries():
    assert Configuration().max_retries == 2


def test_a_500_then_202_is_one_successful_call_of_two_requests(caller, server):
    c = caller()
    server.fail_next(1, status=500)
    batch = events()
    answer = c.ingest(batch)
    assert answer.accepted == 3
    assert server.request_count == 2
    assert len(c.sleeps) == 1 and 0 <= c.sleeps[0] <= RetryPolicy().base  # full jitter of the first backoff
    assert sorted(e["event_id"] for e in server.events) == sorted(e.event_id for e in batch)


def test_retry_after_in_seconds_is_honoured(caller, server):
    c = caller()
    server.fail_next(1, status=429, retry_after=7)
    assert c.ingest(events()).accepted == 3
    assert c.sleeps == [7.0]


def test_retry_after_as_an_http_date_is_read_against_the_injected_clock(caller, server):
    c = caller()
    server.fail_next(1, status=503, headers={"Retry-After": email.utils.formatdate(NOW + 12, usegmt=True)})
    assert c.ingest(events()).accepted == 3
    assert c.sleeps == [12.0]


def test_a_retry_after_longer_than_the_direct_limit_raises_at_once(caller, server):
    c = caller()
    server.fail_next(1, status=429, retry_after=RetryPolicy().direct_retry_after_max + 1)
    with pytest.raises(ApiException) as exc:
        c.ingest(events())
    assert exc.value.status == 429 and exc.value.headers and exc.value.headers["Retry-After"]
    assert server.request_count == 1 and c.sleeps == []


@pytest.mark.parametrize("status", [408, 502, 503])
def test_other_transient_statuses_are_retried(caller, server, status):
    c = caller()
    server.fail_next(1, status=status)
    assert c.ingest(events()).accepted == 3
    assert server.request_count == 2


@pytest.mark.parametrize("status", [400, 401, 402, 403, 413])
def test_a_refusal_is_not_retried(caller, server, status):
    c = caller()
    server.fail_next(1, status=status)
    with pytest.raises(ApiException) as exc:
        c.ingest(events())
    assert exc.value.status == status
    if status == 400:
        assert isinstance(exc.value, BadRequestException)
    assert server.request_count == 1 and c.sleeps == []


def test_max_retries_0_sends_once(caller, server):
    c = caller(max_retries=0)
    server.fail_next(1, status=503)
    with pytest.raises(ServiceException):
        c.ingest(events())
    assert server.request_count == 1 and c.sleeps == []


def test_exhausted_retries_raise_the_last_error(caller, server):
    c = caller(max_retries=2)
    server.fail_next(2, status=503)
    server.fail_next(1, status=500, body={"error": "LAST", "message": "the third answer"})
    with pytest.raises(ServiceException) as exc:
        c.ingest(events())
    assert exc.value.status == 500 and exc.value.data.error == "LAST"
    assert server.request_count == 3 and len(c.sleeps) == 2
    assert server.events == []


def test_a_dropped_connection_is_retried(caller, server):
    c = caller()
    server.drop_next(1)
    assert c.ingest(events()).accepted == 3
    assert server.request_count == 2


def test_exhausted_retries_after_connection_failures_raise_the_connection_error(caller):
    c = Caller(caller().kind, "http://127.0.0.1:1", max_retries=2)
    with pytest.raises(ApiConnectionError) as exc:
        c.ingest(events())
    assert exc.value.status == 0 and API_KEY not in str(exc.value)
    assert len(c.sleeps) == 2


def test_a_timed_out_attempt_whose_events_were_stored_is_resent_and_counted_as_duplicates(caller, server):
    """The first attempt's batch was stored before its answer timed out: the resend carries the same ids."""
    c = caller()
    server.trickle_next(1, interval=0.5, store=True)
    batch = events()
    answer = c.ingest(batch, _request_timeout=0.3)
    assert (answer.accepted, answer.duplicates) == (0, 3)
    assert server.request_count == 2 and len(server.events) == 3


def test_a_timeout_on_every_attempt_raises_api_timeout_error(caller, server):
    c = caller(max_retries=1)
    server.trickle_next(2, interval=0.5, store=False)
    with pytest.raises(ApiTimeoutError):
        c.ingest(events(), _request_timeout=0.2)
    assert server.request_count == 2 and server.events == []


def test_the_background_client_never_retries_below_its_dispatcher(server):
    """Its dispatcher owns retries: one HTTP attempt per send, whatever the default `max_retries`."""
    from openmonetize import OpenMonetize

    with OpenMonetize(api_key=API_KEY, base_url=server.url) as client:
        send = client._send()
        server.fail_next(1, status=503)
        with pytest.raises(ServiceException):
            send(b'{"events":[' + events(1)[0].model_dump_json(exclude_none=True).encode() + b"]}", 1)
        assert server.request_count == 1
