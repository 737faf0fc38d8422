"""A fake LLM provider server, so usage-tracking code can be tested and benchmarked against the real SDKs.

The real provider client libraries (openai, anthropic, google-genai, groq) are pointed at
it on loopback; it answers like each provider's HTTP API does, with fixed, documented
token usage, so a test can assert that a wrapper records exactly what the provider
reported, over real sockets, without network access or mocks::

    with FakeLLMServer() as fake:
        client = openai.OpenAI(api_key="sk-fake", base_url=fake.base_url("openai"), max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o", messages=[...])
        assert reply.usage.prompt_tokens == USAGE["openai.chat"]["prompt_tokens"]

Endpoints (``base_url(provider)`` gives what to pass to the SDK):

- ``openai``: ``POST {base}/chat/completions``, ``/responses``, ``/embeddings``,
  ``/images/generations`` (JSON), ``/images/edits`` and ``/images/variations`` (multipart uploads),
  ``/audio/transcriptions`` and ``/audio/translations`` (multipart), ``/audio/speech`` (answers audio
  bytes, :data:`SPEECH_AUDIO`)
- ``openrouter``: ``POST {base}/chat/completions``, ``/embeddings`` (OpenAI's shape plus
  ``provider`` and ``usage.cost``)
- ``groq``: ``POST {base}/openai/v1/chat/completions`` (the groq SDK appends that path)
- ``anthropic``: ``POST {base}/v1/messages``
- ``gemini``: ``POST {base}/{version}/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse`` (google-genai 3.x uses version ``v1``; any ``v1*`` works)
- ``vertex``: ``POST {base}/{version}/publishers/google/models/{model}:predict`` (express mode) or
  ``.../projects/{p}/locations/{l}/publishers/...``: Imagen, what google-genai's ``generate_images``,
  ``edit_image`` and ``upscale_image`` call on ``genai.Client(vertexai=True, api_key=...,
  http_options=types.HttpOptions(base_url=base_url("vertex")))`` (an API key: no Google credentials)
- ``azure``: ``POST {base}/openai/deployments/{deployment}/chat/completions?api-version=...``, what
  ``openai.AzureOpenAI(azure_endpoint=base_url("azure"), api_version=...)`` calls (OpenAI's shape)
- OpenAI-compatible gateways that bend the rules, each ``POST {base}/chat/completions`` in OpenAI's
  shape: ``gateway-same-id`` answers the same response id (``chatcmpl-gateway``) to every call;
  ``gateway-cached-above-prompt`` reports more cached tokens than prompt tokens;
  ``gateway-reasoning-above-completion`` more reasoning than completion tokens;
  ``gateway-null-usage`` answers ``"usage": null`` (and streams no usage chunk, even when asked)

Usage: every answer of an endpoint carries the numbers in ``USAGE[endpoint]``, streamed or
not; :mod:`.usage` says how each provider counts, which is what a tracker must get right. What
each endpoint answers beyond the shared rules below is documented in the module that builds it:
:mod:`.openai` (chat, Responses, embeddings, images, audio, OpenRouter, Groq, Azure, the gateways),
:mod:`.anthropic`, :mod:`.gemini` (Vertex predict too), :mod:`.multipart` (uploads).

Every stream sends exactly three content chunks (``"Hello"``, ``" from"``, ``" fake"``)
before its final parts; the first chat chunk carries the assistant role too (OpenAI sends the
role in a chunk of its own, with empty content, first). When the request asks for JSON output for a schema (OpenAI
``response_format``/``text.format`` ``json_schema``, Anthropic ``output_config.format``,
Gemini ``responseSchema``/``responseJsonSchema``), the text is instead a JSON value valid for
that schema (split in three for streams), so the SDKs' ``parse`` helpers succeed.
Tool calls: a non-streamed chat request (OpenAI, OpenRouter, Groq) that offers ``tools`` and has no
``tool`` message yet is answered with a call of its first function tool (arguments valid for its
``parameters`` schema, ``finish_reason: "tool_calls"``, the usual usage); once a ``tool`` message is
in the conversation the answer is text again, so an agent's tool loop makes exactly two requests.

Models: answers report the requested model as :func:`reported_model` maps it: OpenAI's
generation endpoints add a date (``gpt-4o`` -> ``gpt-4o-2024-08-06``) and Anthropic adds one
(``claude-haiku-4-5`` -> ``claude-haiku-4-5-20251001``) unless the name already ends in a
date, as their APIs report dated snapshots; embeddings, OpenRouter, Groq and Gemini echo
the name unchanged. Ids (``chatcmpl-``, ``resp_``, ``msg_``, ``gen-``, Gemini
``responseId``) are built from the server's request sequence number: deterministic and
different for every request of a server's lifetime (``reset()`` does not reuse them).
OpenAI and Groq answers name a request id in ``x-request-id``, Anthropic's in ``request-id``.

Faults: ``fail_next`` answers with the provider's own error body, so each SDK raises its
own exception type. The openai, anthropic and groq SDKs retry 5xx twice by default, each
retry consuming one queued failure; construct clients with ``max_retries=0`` in tests.
google-genai does not retry unless ``HttpOptions.retry_options`` is set.
``cut_next_stream`` ends a streamed body mid-way: streams use chunked transfer encoding,
so the client sees an incomplete body and raises during iteration (openai:
``APIConnectionError``; anthropic and google-genai: ``httpx2.RemoteProtocolError``, or
``aiohttp.ClientPayloadError`` from google-genai's async client when aiohttp is installed; groq:
``httpx.RemoteProtocolError``). No continuation token is ever sent, so google-genai does not
resume a cut stream.

Only the standard library is used (``email`` parses the multipart uploads); nothing is written
to disk, nothing sleeps. JSON answers (and audio, plain text) keep the connection alive
(Content-Length); streams are chunked and keep it alive too. (The
openai SDK's sync ``Stream`` stops reading at ``data: [DONE]``, before the chunked body's end,
so it opens a new connection for every chat stream; its async one drains and reuses it.)
"""

from __future__ import annotations

from .replies import reported_model
from .schema import _example as _example  # test_fake_llm checks the schema examples directly
from .server import FakeLLMServer, RecordedRequest
from .usage import IMAGE_PNG, REPLY_CHUNKS, REPLY_TEXT, SPEECH_AUDIO, USAGE

__all__ = ["IMAGE_PNG", "REPLY_CHUNKS", "REPLY_TEXT", "SPEECH_AUDIO", "USAGE", "FakeLLMServer", "RecordedRequest",
           "reported_model"]
