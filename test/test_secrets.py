"""The API key never shows up in logs, debug output, reprs or exception text."""

from __future__ import annotations

import logging

import pytest
from conftest import API_KEY

from openmonetize import ApiClient, CustomEvent, EventsApi
from openmonetize.configuration import Configuration
from openmonetize.exceptions import ApiException


def event() -> CustomEvent:
    return CustomEvent(customer_id="c", feature_id="f", unit_type="pages", quantity=1)


def test_key_absent_from_debug_output_logs_reprs_and_errors(server, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    config = Configuration(host=server.url)
    config.api_key["bearerAuth"] = API_KEY
    config.debug = True
    config.max_retries = 0  # the 500 below is the answer
    try:
        with ApiClient(config) as client:
            api = EventsApi(client)
            api.ingest(events=[event()])
            server.fail_next(1, status=500)
            with pytest.raises(ApiException) as exc:
                api.ingest(events=[event()])
            texts = [repr(config), str(config.to_debug_report()), repr(client), repr(api), str(exc.value),
                     repr(exc.value)]
    finally:
        config.debug = False
    out, err = capfd.readouterr()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    # debug mode did log the request, with the credential redacted
    assert "POST" in logged and "<redacted>" in logged
    for text in [out, err, logged, *texts]:
        assert API_KEY not in text


def test_auth_header_is_bearer_from_api_key_mapping(server):
    config = Configuration(host=server.url)
    config.api_key["bearerAuth"] = API_KEY
    assert config.auth_settings()["bearerAuth"]["value"] == f"Bearer {API_KEY}"
    with ApiClient(config) as client:
        assert EventsApi(client).ingest(events=[event()]).accepted == 1
