"""Who we are and which request failed: the User-Agent every request carries, and the service's request id on
every `ApiException`, in its text, in the debug log and on `DeliveryFailure`, over loopback."""

from __future__ import annotations

import asyncio
import logging
import platform
import re
import threading

import pytest
from conftest import API_KEY

import openmonetize
from openmonetize import AsyncApiClient, AsyncEventsApi, OpenMonetize, TokenUsageEvent
from openmonetize.configuration import Configuration
from openmonetize.exceptions import (
    ApiConnectionError,
    ApiException,
    BadRequestException,
    InvalidResponseError,
    ServiceException,
)
from openmonetize.lib.failures import DeliveryFailure

USER_AGENT = f"openmonetize-python/{openmonetize.__version__} python/{platform.python_version()}"


def event(**overrides: object) -> TokenUsageEvent:
    fields: dict[str, object] = dict(customer_id="cust_1", feature_id="chat", provider="openai", model="gpt-4o",
                                     input_tokens=10, output_tokens=5)
    return TokenUsageEvent(**{**fields, **overrides})  # type: ignore[arg-type]


def test_ingest_names_the_sdk_and_python_in_its_user_agent(events_api, server):
    events_api.ingest(events=[event()])
    [request] = server.received_requests
    assert request.headers["User-Agent"] == USER_AGENT
    assert re.fullmatch(r"openmonetize-python/\d+\.\d+\.\d+\S* python/\d+\.\d+\.\d+\S*", USER_AGENT)
    # the server's record of a request never holds the key
    assert request.headers["Authorization"] == "<redacted>"
    assert API_KEY not in repr(server.received_requests)


def test_the_background_client_sends_the_same_user_agent(server):
    om = OpenMonetize(api_key=API_KEY, base_url=server.url, flush_interval=0.05)
    try:
        om.track_token_usage(customer_id="cust_1", feature_id="chat", provider="openai", model="gpt-4o",
                             input_tokens=1, output_tokens=1)
        assert om.flush(10) is True
    finally:
        om.shutdown(10)
    assert server.received_requests
    assert {r.headers["User-Agent"] for r in server.received_requests} == {USER_AGENT}


def test_the_async_api_sends_the_same_user_agent_not_aiohttps(server):
    """aiohttp adds its own User-Agent unless the request has one: ours must be the one the server sees."""

    async def main() -> None:
        async with AsyncApiClient(Configuration(host=server.url, access_token=API_KEY)) as client:
            await AsyncEventsApi(client).ingest(events=[event()])

    asyncio.run(main())
    [request] = server.received_requests
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.headers["Authorization"] == "<redacted>"


def test_every_answer_of_the_local_server_carries_a_sequential_request_id(events_api, server):
    events_api.ingest(events=[event()])
    server.fail_next(1, status=400)
    with pytest.raises(BadRequestException):
        events_api.ingest(events=[event()])
    assert [r.request_id for r in server.received_requests] == ["req_1", "req_2"]
    assert [r.status for r in server.received_requests] == [202, 400]


def test_a_400_carries_the_request_id_the_service_answered(events_api, server):
    server.fail_next(1, status=400)
    with pytest.raises(BadRequestException) as caught:
        events_api.ingest(events=[event()])
    sent = server.received_requests[-1].request_id
    assert sent is not None and caught.value.request_id == sent
    assert f"Request id: {sent}\n" in str(caught.value)


def test_a_500_carries_the_request_id_of_the_last_answer(events_api, server):
    server.fail_next(10, status=500)  # every attempt fails, however many the client makes
    with pytest.raises(ServiceException) as caught:
        events_api.ingest(events=[event()])
    last = server.received_requests[-1]
    assert last.status == 500 and last.request_id is not None
    assert caught.value.request_id == last.request_id
    assert last.request_id in str(caught.value)


def test_without_a_request_id_header_the_attribute_is_none(events_api, server):
    server.fail_next(10, status=500, headers={"X-Request-Id": ""})
    with pytest.raises(ServiceException) as caught:
        events_api.ingest(events=[event()])
    assert caught.value.headers is not None and "X-Request-Id" not in caught.value.headers
    assert caught.value.request_id is None
    assert "Request id" not in str(caught.value)


@pytest.mark.parametrize("name", ["Request-Id", "X-Amzn-RequestId", "x-request-id"])
def test_the_other_spellings_of_the_header_are_read_too(events_api, server, name):
    headers = {name: "abc-123"} if name.lower() == "x-request-id" else {"X-Request-Id": "", name: "abc-123"}
    server.fail_next(1, status=400, headers=headers)
    with pytest.raises(BadRequestException) as caught:
        events_api.ingest(events=[event()])
    assert caught.value.request_id == "abc-123"


def test_a_2xx_that_breaks_the_contract_carries_its_request_id(events_api, server):
    server.fail_next(10, status=202, body={"accepted": 5, "duplicates": 0, "rejected": 0, "batch_id": "b"})
    with pytest.raises(InvalidResponseError) as caught:
        events_api.ingest(events=[event()])
    sent = server.received_requests[-1].request_id
    assert sent is not None and caught.value.request_id == sent
    assert f"Request id: {sent}\n" in str(caught.value)


def test_no_answer_means_no_request_id(events_api, server):
    server.drop_next(10)
    with pytest.raises(ApiConnectionError) as caught:
        events_api.ingest(events=[event()])
    assert caught.value.request_id is None
    assert server.received_requests[-1].status is None and server.received_requests[-1].request_id is None


def test_an_exception_built_by_hand_has_no_request_id():
    assert ApiException(status=500, reason="x").request_id is None


def test_the_debug_log_names_each_answer_s_request_id_never_the_key(events_api, server, caplog):
    server.fail_next(1, status=400)
    with caplog.at_level(logging.DEBUG, logger="openmonetize.rest"), pytest.raises(BadRequestException):
        events_api.ingest(events=[event()])
    sent = server.received_requests[-1].request_id
    answered = [r.getMessage() for r in caplog.records if "answered" in r.getMessage()]
    assert answered and answered[-1].endswith(f"answered 400 request_id={sent}")
    assert API_KEY not in caplog.text


def test_delivery_failures_carry_the_refusing_answer_s_request_id(server):
    failures: list[DeliveryFailure] = []
    om = OpenMonetize(api_key=API_KEY, base_url=server.url, on_error=failures.append, flush_interval=0.05)
    try:
        server.fail_next(1, status=400)
        om.track_token_usage(customer_id="cust_1", feature_id="chat", provider="openai", model="gpt-4o",
                             input_tokens=1, output_tokens=1)
        assert om.flush(10) is False
    finally:
        om.shutdown(10)
    [failure] = failures
    sent = server.received_requests[-1].request_id
    assert failure.kind == "rejected" and sent is not None and failure.request_id == sent
    assert f"[request {sent}]" in str(failure)


def test_a_pause_notice_carries_the_request_id_too(server):
    failures: list[DeliveryFailure] = []
    reported = threading.Event()

    def on_error(failure: DeliveryFailure) -> None:
        failures.append(failure)
        reported.set()

    om = OpenMonetize(api_key=API_KEY, base_url=server.url, on_error=on_error, flush_interval=0.05)
    try:
        server.fail_next(1, status=401)
        om.track_token_usage(customer_id="cust_1", feature_id="chat", provider="openai", model="gpt-4o",
                             input_tokens=1, output_tokens=1)
        assert reported.wait(10)
    finally:
        om.shutdown(0)
    assert failures[0].kind == "paused" and failures[0].request_id == "req_1"
