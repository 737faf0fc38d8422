"""`await AsyncEventsApi(...).ingest(...)` against a real LocalIngestServer: the same validation, body,
exceptions and answer checks as `EventsApi.ingest`, the whole-request deadline, and cancellation."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from conftest import API_KEY
from pydantic import ValidationError

from openmonetize import AsyncApiClient, AsyncEventsApi, CustomEvent, TokenUsageEvent
from openmonetize.configuration import Configuration
from openmonetize.exceptions import (
    ApiConnectionError,
    ApiTimeoutError,
    BadRequestException,
    InvalidResponseError,
    UnauthorizedException,
)
from openmonetize.lib.direct_retry import DirectRetry
from openmonetize.testing import LocalIngestServer

T = TypeVar("T")


def event(n: int = 0) -> CustomEvent:
    return CustomEvent(customer_id="cust", feature_id="f", unit_type="pages", quantity=n + 1)


def run(server: LocalIngestServer, body: Callable[[AsyncEventsApi], Awaitable[T]], *, max_retries: int = 0,
        key: str = API_KEY) -> T:
    """`body(api)` on a fresh loop, with a client that sends once unless told otherwise."""

    async def main() -> T:
        config = Configuration(host=server.url)
        config.api_key["bearerAuth"] = key
        config.max_retries = max_retries
        async with AsyncApiClient(config) as client:
            return await body(AsyncEventsApi(client))

    return asyncio.run(main())


def test_ingest_stores_events_and_answers_like_the_sync_api(server):
    batch = [event(i) for i in range(3)] + [TokenUsageEvent(customer_id="cust", feature_id="chat",
                                                           provider="openai", model="gpt-4o", input_tokens=10,
                                                           output_tokens=5)]
    answer = run(server, lambda api: api.ingest(events=batch))
    assert (answer.accepted, answer.duplicates, answer.rejected) == (4, 0, 0)
    assert {e["event_id"] for e in server.events} == {e.event_id for e in batch}


def test_dicts_are_validated_into_events(server):
    raw: dict[str, Any] = {"customer_id": "c", "feature_id": "f", "unit_type": "pages", "quantity": 2,
                           "event_type": "CUSTOM"}
    assert run(server, lambda api: api.ingest(events=[raw])).accepted == 1
    assert server.events[0]["quantity"] == 2


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_bounds_are_checked_before_anything_is_sent(server, count):
    with pytest.raises(ValidationError) as exc:
        run(server, lambda api: api.ingest(events=[event(i) for i in range(count)]))
    assert "events" in str(exc.value)
    assert server.request_count == 0


def test_an_invalid_dict_names_the_field(server):
    with pytest.raises(ValidationError) as exc:
        run(server, lambda api: api.ingest(events=[{"event_type": "CUSTOM", "customer_id": "c"}]))
    assert "feature_id" in str(exc.value)


def test_with_http_info_gives_status_and_headers(server):
    response = run(server, lambda api: api.ingest_with_http_info(events=[event()]))
    assert response.status_code == 202 and response.data.accepted == 1
    assert response.headers is not None and response.headers["content-type"].startswith("application/json")


def test_ingest_serialized_sends_the_bytes_and_checks_the_counts(server):
    body = b'{"events":[' + event().model_dump_json(exclude_none=True).encode() + b"]}"
    assert run(server, lambda api: api.ingest_serialized(body, _event_count=1)).accepted == 1
    with pytest.raises(InvalidResponseError):  # the answer accounts for 1 event, not 2
        run(server, lambda api: api.ingest_serialized(body, _event_count=2))


def test_gzip_header_compresses_the_body(server):
    assert run(server, lambda api: api.ingest(events=[event()], _headers={"Content-Encoding": "gzip"})).accepted == 1
    assert server.gzip_requests == 1


def test_a_400_is_bad_request_with_the_error_body(server):
    server.fail_next(1, status=400)
    with pytest.raises(BadRequestException) as exc:
        run(server, lambda api: api.ingest(events=[event()]))
    assert exc.value.status == 400 and exc.value.data.error


def test_a_wrong_key_is_unauthorized_and_not_echoed(server):
    with pytest.raises(UnauthorizedException) as exc:
        run(server, lambda api: api.ingest(events=[event()]), key="sk_wrong_key_value")
    assert "sk_wrong_key_value" not in str(exc.value)


def test_a_broken_2xx_is_invalid_response(server):
    server.fail_next(1, status=202, body={"accepted": 5, "duplicates": 0, "rejected": 0, "batch_id": "b"})
    with pytest.raises(InvalidResponseError) as exc:
        run(server, lambda api: api.ingest(events=[event()]))
    assert exc.value.status == 202


def test_the_number_timeout_is_a_whole_request_deadline(server):
    server.trickle_next(1, interval=0.2, store=False)  # every read gets a byte in time
    with pytest.raises(ApiTimeoutError) as exc:
        run(server, lambda api: api.ingest(events=[event()], _request_timeout=0.5))
    assert "0.5 s request deadline" in str(exc.value) and exc.value.status == 0


def test_no_server_is_a_connection_error_without_the_key():
    async def main() -> None:
        config = Configuration(host="http://127.0.0.1:1", access_token=API_KEY)
        config.max_retries = 0
        async with AsyncApiClient(config) as client:
            await AsyncEventsApi(client).ingest(events=[event()])

    with pytest.raises(ApiConnectionError) as exc:
        asyncio.run(main())
    assert type(exc.value) is ApiConnectionError and "127.0.0.1:1" in str(exc.value)
    assert API_KEY not in str(exc.value) and API_KEY not in repr(exc.value)


async def _until(condition: Callable[[], bool], bound: float = 30.0) -> None:
    """Wait for the condition, polling, within a generous bound (a hung server fails the test, never hangs it)."""
    deadline = asyncio.get_running_loop().time() + bound
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"condition not met within {bound} s"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("stored", [True, False], ids=["cancelled-after-store", "cancelled-before-store"])
def test_a_cancelled_call_then_a_resend_stores_each_event_once(server, stored):
    """A cancel leaves nothing half-sent: the batch was either stored whole (the resend's ids are duplicates)
    or not at all (the resend stores it)."""
    batch = [event(i) for i in range(5)]

    async def scenario(api: AsyncEventsApi) -> Any:
        server.trickle_next(1, interval=0.3, store=stored)  # holds the answer until we cancel
        task = asyncio.ensure_future(api.ingest(events=batch))
        await _until(lambda: server.request_count == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await api.ingest(events=batch)

    answer = run(server, scenario)
    assert answer.accepted + answer.duplicates == 5
    assert answer.duplicates == (5 if stored else 0)
    assert sorted(e["event_id"] for e in server.events) == sorted(e.event_id for e in batch)


def test_a_cancel_during_the_retry_wait_sends_nothing_more(server):
    server.fail_next(1, status=503, retry_after=30)
    waits: list[float] = []

    async def wait_forever(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.get_running_loop().create_future()

    async def main() -> None:
        config = Configuration(host=server.url, access_token=API_KEY)
        async with AsyncApiClient(config) as client:
            client.retry = DirectRetry(async_sleep=wait_forever)
            task = asyncio.ensure_future(AsyncEventsApi(client).ingest(events=[event()]))
            await _until(lambda: waits == [30.0])
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert server.request_count == 1 and server.events == []


def test_many_concurrent_calls_on_one_loop(server):
    async def scenario(api: AsyncEventsApi) -> list[Any]:
        return await asyncio.gather(*(api.ingest(events=[event(i) for i in range(k * 10, k * 10 + 10)])
                                      for k in range(8)))

    answers = run(server, scenario)
    assert [a.accepted for a in answers] == [10] * 8 and len(server.events) == 80


def test_the_default_client_and_the_api_as_context_manager(server):
    async def main() -> int:
        async with AsyncEventsApi() as api:
            api.api_client.configuration.host = server.url
            api.api_client.configuration.access_token = API_KEY
            return (await api.ingest(events=[event()])).accepted

    assert asyncio.run(main()) == 1


def test_a_client_belongs_to_the_loop_it_first_sends_on(server):
    config = Configuration(host=server.url, access_token=API_KEY)
    client = AsyncApiClient(config)
    assert asyncio.run(AsyncEventsApi(client).ingest(events=[event()])).accepted == 1
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(AsyncEventsApi(client).ingest(events=[event(1)]))
    assert server.request_count == 1


def test_async_client_refuses_a_plain_with():
    with pytest.raises(TypeError, match="async with"), AsyncApiClient(Configuration()):
        pass


def test_importing_the_package_or_the_async_api_does_not_import_aiohttp():
    script = "import sys; import openmonetize; from openmonetize import AsyncEventsApi; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_readme_async_block_runs_verbatim(capsys):
    from conftest import ROOT

    [block] = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
               if "AsyncEventsApi" in b]
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.split() == ["1", "8"]
