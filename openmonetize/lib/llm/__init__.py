"""Automatic LLM usage tracking: `create_llm_tracker(...).wrap(client=..., customer_id=...)`.

- `tracker`: `create_llm_tracker`, `LLMTracker`, and how a call becomes a `TokenUsageEvent`.
- `proxies`: the transparent proxies around clients, methods and streams.
- `routes`: which methods of which provider SDK are billed.
- `usage`: reading usage from responses and streams (the accounting table in docs/guides/llm.md).
"""

from openmonetize.lib.llm.tracker import LLMTracker, create_llm_tracker

__all__ = ["LLMTracker", "create_llm_tracker"]
