"""The numbers every answer reports, and the fixed content (reply text, audio, image) it carries.

Usage: every answer of an endpoint carries the numbers in ``USAGE[endpoint]``, streamed or
not. Each field has its own odd value, so a field mapped to the wrong place shows. Keys are
the provider's wire names, flattened (``cached_tokens`` lives in ``prompt_tokens_details``
on the wire). How each provider counts, which is what a tracker must get right:

- OpenAI-style chat: ``prompt_tokens`` includes ``cached_tokens``; ``completion_tokens``
  includes ``reasoning_tokens``; ``total_tokens = prompt_tokens + completion_tokens``.
  Streams report usage only when the request sets ``stream_options.include_usage``: then
  every chunk has ``"usage": null`` and one last chunk, with ``"choices": []``, has it.
  OpenRouter also honours ``{"usage": {"include": true}}`` and sends an SSE comment line
  (``: OPENROUTER PROCESSING``) first, as it does.
- Groq: non-stream answers as OpenAI plus timings (``queue_time`` ...); streams ignore
  ``stream_options`` and put usage in the final chunk (the one with ``finish_reason``) under
  ``x_groq.usage``, as Groq does.
- OpenAI Responses: ``input_tokens`` includes ``cached_tokens``; ``output_tokens`` includes
  ``reasoning_tokens``. Streams carry usage only in ``response.completed``.
- Embeddings: ``total_tokens == prompt_tokens``; vectors honour ``encoding_format``
  (the openai SDK asks for ``base64`` float32 by default) and ``dimensions`` (default 8).
- Anthropic: ``input_tokens`` excludes both cache counts (total input is the sum of the
  three). Streams: ``message_start`` carries the input counts and a preliminary
  ``output_tokens`` of 1; ``message_delta`` carries CUMULATIVE totals (input counts again,
  and the final ``output_tokens``), so adding the two double counts.
- Gemini: ``totalTokenCount = promptTokenCount + candidatesTokenCount + thoughtsTokenCount``;
  ``promptTokenCount`` includes ``cachedContentTokenCount``. Each streamed chunk carries
  RUNNING totals (``candidatesTokenCount`` grows 98, 195, 293; the others repeat), so the
  last chunk has the final numbers and summing chunks overcounts.
"""

from __future__ import annotations

import base64

USAGE: dict[str, dict[str, int | float]] = {
    # POST /openai/v1/chat/completions: usage.{prompt_tokens, completion_tokens, total_tokens},
    # usage.prompt_tokens_details.cached_tokens, usage.completion_tokens_details.reasoning_tokens
    "openai.chat": {
        "prompt_tokens": 1203,  # all input, cached included
        "cached_tokens": 512,  # part of prompt_tokens served from the prompt cache
        "completion_tokens": 341,  # all output, reasoning included
        "reasoning_tokens": 128,  # part of completion_tokens spent on hidden reasoning
        "total_tokens": 1544,  # prompt_tokens + completion_tokens
    },
    # POST /openai/v1/responses: usage.{input_tokens, output_tokens, total_tokens},
    # usage.input_tokens_details.{cached_tokens, cache_write_tokens},
    # usage.output_tokens_details.reasoning_tokens
    "openai.responses": {
        "input_tokens": 1311,  # all input, cached included
        "cached_tokens": 640,  # part of input_tokens read from the prompt cache
        "cache_write_tokens": 83,  # part of input_tokens written to the prompt cache
        "output_tokens": 457,  # all output, reasoning included
        "reasoning_tokens": 192,  # part of output_tokens spent on reasoning
        "total_tokens": 1768,  # input_tokens + output_tokens
    },
    # POST /openai/v1/responses with built-in tools: how many output items of each kind the answer has
    # (one `tools` entry of type web_search*, file_search, code_interpreter or image_generation each)
    "openai.responses.tools": {
        "web_search_call": 3, "file_search_call": 2, "code_interpreter_call": 1, "image_generation_call": 4,
    },
    # POST /openai/v1/embeddings: usage.{prompt_tokens, total_tokens}
    "openai.embeddings": {"prompt_tokens": 37, "total_tokens": 37},
    # POST /openai/v1/images/{generations,edits,variations} with a gpt-image model: usage.{input_tokens,
    # output_tokens, total_tokens}, usage.input_tokens_details.{text_tokens, image_tokens} (input_*),
    # usage.output_tokens_details.{text_tokens, image_tokens} (output_*); the same numbers whatever `n`
    # is (a stream's every `*.completed` event carries them: one event per image). DALL-E: no usage.
    "openai.images": {
        "input_tokens": 83,  # input_text_tokens + input_image_tokens
        "input_text_tokens": 29,
        "input_image_tokens": 54,
        "output_tokens": 4271,  # output_text_tokens + output_image_tokens
        "output_text_tokens": 111,
        "output_image_tokens": 4160,
        "total_tokens": 4354,
    },
    # POST /openai/v1/audio/transcriptions with whisper-1: usage {"type": "duration", "seconds"}, and
    # `duration` in verbose_json
    "openai.transcriptions.duration": {"seconds": 41.5},
    # POST /openai/v1/audio/transcriptions with any other model (gpt-4o-transcribe...): usage {"type":
    # "tokens", input_tokens, output_tokens, total_tokens, input_token_details.{audio_tokens, text_tokens}};
    # a stream carries it in its final transcript.text.done event
    "openai.transcriptions.tokens": {
        "input_tokens": 212,  # audio_tokens + text_tokens (the prompt)
        "audio_tokens": 197,
        "text_tokens": 15,
        "output_tokens": 33,
        "total_tokens": 245,
    },
    # POST /openai/v1/audio/translations (whisper-1): no usage; verbose_json's `duration`
    "openai.translations": {"duration": 27.25},
    # POST /openrouter/api/v1/chat/completions: OpenAI's fields plus usage.cost (credits, USD)
    "openrouter.chat": {
        "prompt_tokens": 1427,
        "cached_tokens": 384,
        "completion_tokens": 263,
        "reasoning_tokens": 96,
        "total_tokens": 1690,
        "cost": 0.00123,  # what OpenRouter charged for the call
    },
    # POST /openrouter/api/v1/embeddings
    "openrouter.embeddings": {"prompt_tokens": 29, "total_tokens": 29, "cost": 0.0000058},
    # POST /groq/openai/v1/chat/completions: usage (non-stream) or x_groq.usage (stream)
    "groq.chat": {
        "prompt_tokens": 1151,
        "cached_tokens": 256,
        "completion_tokens": 219,
        "reasoning_tokens": 64,
        "total_tokens": 1370,
        "queue_time": 0.0213,  # seconds; Groq's timings, not tokens
        "prompt_time": 0.0457,
        "completion_time": 0.1371,
        "total_time": 0.1828,  # prompt_time + completion_time
    },
    # POST /azure/openai/deployments/{deployment}/chat/completions: OpenAI's chat fields
    "azure.chat": {
        "prompt_tokens": 1187,
        "cached_tokens": 448,
        "completion_tokens": 311,
        "reasoning_tokens": 0,
        "total_tokens": 1498,
    },
    # POST /gateway-same-id/v1/chat/completions: consistent numbers, one response id for every call
    "gateway-same-id.chat": {
        "prompt_tokens": 911, "cached_tokens": 128, "completion_tokens": 173, "reasoning_tokens": 32,
        "total_tokens": 1084,
    },
    # POST /gateway-cached-above-prompt/v1/chat/completions: cached_tokens > prompt_tokens (inconsistent)
    "gateway-cached-above-prompt.chat": {
        "prompt_tokens": 500, "cached_tokens": 600, "completion_tokens": 120, "reasoning_tokens": 0,
        "total_tokens": 620,
    },
    # POST /gateway-reasoning-above-completion/v1/chat/completions: reasoning_tokens > completion_tokens
    "gateway-reasoning-above-completion.chat": {
        "prompt_tokens": 400, "cached_tokens": 0, "completion_tokens": 100, "reasoning_tokens": 150,
        "total_tokens": 500,
    },
    # POST /gateway-null-usage/v1/chat/completions: "usage": null (no entry here)
    # POST /anthropic/v1/messages: usage.*
    "anthropic.messages": {
        "input_tokens": 1089,  # uncached input only
        "cache_creation_input_tokens": 233,  # input written to the cache (billed extra)
        "cache_read_input_tokens": 1473,  # input read from the cache (billed less)
        "output_tokens": 367,  # final total; a stream's message_start says 1
    },
    # POST /gemini/v1/models/{model}:generateContent and :streamGenerateContent: usageMetadata.*
    "gemini.generateContent": {
        "promptTokenCount": 1277,  # all input, cached included
        "cachedContentTokenCount": 703,  # part of promptTokenCount served from the cache
        "candidatesTokenCount": 293,  # visible output, thoughts excluded
        "thoughtsTokenCount": 157,  # thinking output, billed as output
        "totalTokenCount": 1727,  # prompt + candidates + thoughts
    },
}

#: the audio bytes every /audio/speech answer carries (TTS bills the input's characters: no usage)
SPEECH_AUDIO = bytes(range(256)) * 8
#: the PNG (1x1, one orange pixel) every image answer carries, base64-encoded as b64_json / bytesBase64Encoded
IMAGE_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP438DwHwAGgAJ/EEwb4QAAAABJRU5ErkJggg==")

REPLY_TEXT = "Hello from fake"
REPLY_CHUNKS = ("Hello", " from", " fake")  # what a stream sends, in order
