"""The hand-written layer of openmonetize.

The hand-written packages are `openmonetize/lib/`, `openmonetize/cli/` and `openmonetize/testing/`: the
`openmonetize/...` lines of `.openapi-generator-ignore`, the one list of the boundary (test/test_layout.py
checks that pyproject.toml's ruff and mypy lists and this sentence agree with it). Everything else in the
package is generated from `openapi.yaml` by `./generate.sh` (`.openapi-generator/FILES` lists it) and must
not be edited by hand. The generated models call into
`event_rules` through the spec's `x-sdk-validators` extension, the generated API into `answers` through
`x-sdk-check-answer`, and the generated HTTP layer into `http_deadline` and `body_json`; the package exports
`OpenMonetize`, `DeliveryFailure`, `RetryPolicy`, `SpoolError`, `create_llm_tracker` and `LLMTracker` through
its template.

- `event_ids`: UUIDv7 event ids and default timestamps, from one clock reading.
- `event_rules`: rules a JSON schema cannot express (defaults filled in, cross-field checks, metadata size).
- `event_json`: the hot path's event JSON, written by rules read from the generated models (else the model).
- `client`: `OpenMonetize`, tracking on the caller's thread and the client's lifecycle.
- `delivery`: every delivery decision (`Dispatcher`: clock and transport injected) and the threads that run it.
- `memory_buffer`: where queued events wait without a spool (memory), and the batch a request takes.
- `buffers`: the SQLite spool (with its dead letters), imported only when a spool is configured.
- `spool_format`, `spool_queue`, `spool_writer`: the spool's file layout (a row per group of events), its
  bookkeeping of partly resolved groups, and the thread that commits them (and gives disk space back).
- `retry`: the one retry policy: what an answer means for its events, backoffs, pauses, `Retry-After`.
- `http_deadline`: one deadline for a whole HTTP request (a watchdog that cuts the connection), and transport
  failures as `ApiConnectionError` / `ApiTimeoutError`; called by the generated `rest.py`.
- `body_items`: a list of event models given to `ingest` is taken as it is, not validated again.
- `body_json`: a request body as JSON; `ingest`'s events by orjson when the `orjson` extra is installed (the
  same bytes as pydantic's), else by pydantic; called by the generated `api_client.py`.
- `answers`: which 2xx answers keep the contract (`check_ingest_response`); the rest are `InvalidResponseError`.
- `failures`: `DeliveryFailure`, what `on_error` receives.
- `exit_hooks`: delivery when a process ends without atexit: multiprocessing and billiard children, SIGTERM.
- `llm/`: automatic LLM usage tracking (`create_llm_tracker`): proxies around provider clients.
- `strict_json`: JSON decoding that refuses NaN and Infinity (the local server, `openmonetize send`).

The command line (`openmonetize/cli/`, hand-written too) builds on these.
"""
