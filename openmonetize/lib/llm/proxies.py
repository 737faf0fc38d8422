"""Transparent proxies: a wrapped client, its tracked methods, and the streams they return.

The proxies are `wrapt.ObjectProxy`s, so `isinstance`, attribute access, `with`, `close()`,
`with_raw_response` and everything else behave as on the object underneath; only the methods in the
route table (`routes.py`) and the stream protocol methods are intercepted. Nothing here raises into
the caller: an error in our own bookkeeping is logged and the provider's answer is returned as is.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import replace
from types import CoroutineType, TracebackType
from typing import Any, Protocol

import wrapt

from openmonetize.lib.llm.routes import CLIENT_COPIES, Method, Routes
from openmonetize.lib.llm.usage import Observation, PlainCounts, Tally

logger = logging.getLogger("openmonetize.llm")

#: How a call ended. Anything but "completed" with the provider's final usage is recorded as partial.
COMPLETED, CLOSED, ERROR, ABANDONED = "completed", "closed", "error", "abandoned"


class Recording(Protocol):
    """One call being billed (`tracker.Call`)."""

    def record(self, observation: Observation, end: str = COMPLETED) -> None:
        """Queue the call's one usage event (later calls do nothing); never raises."""

    def record_counts(self, counts: PlainCounts) -> None:
        """`record` of a completed call whose answer is nothing but these counts (`Method.counts`)."""


class Recorder(Protocol):
    """One wrap (`tracker.Billing`): a call starts when the method is called, so who pays is fixed then.

    A recorder may also offer `record_plain(now_ns, request, counts)`: `start(request, now_ns).record_counts(
    counts)` for a call that began at `now_ns` and answered nothing but `counts` (the proxies then read the
    call's instant before it, and start a `Recording` only for an answer that needs one)."""

    def start(self, request: Mapping[str, Any]) -> Recording: ...


class TrackedClient(wrapt.ObjectProxy[Any]):
    # A provider client (or one of its resources) with the billed methods intercepted.
    #
    # Made by `tracked_client`, as a subclass per route table with a `_Routed` descriptor per routed name:
    # the first access makes the child (tracked resource or method) and keeps it as the proxy's own
    # attribute, which later accesses find before the descriptor, in one lookup and no Python frame.
    #
    # Its attributes are read by the C lookup every Python object has (`object.__getattribute__`), not
    # wrapt's, which costs about 2.5 us a level in a real call: `client.chat.completions.create` (three
    # levels) took 8.8 us through wrapt's lookup and properties, 3.0 through this one, 1.0 on the
    # unwrapped client (bench/llm_overhead.py --parts). It finds the same things: the proxy's own
    # attributes (the children, `_self_*`), then wrapt's descriptors (`__class__`, `__wrapped__`...) and
    # `__module__`, which wrapt keeps on the proxy; a name the proxy lacks reaches `__getattr__`, the
    # client's own, as through wrapt. wrapt's one special case on lookup, `__doc__`, is the property below.

    __getattribute__ = object.__getattribute__

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        """The wrapped object's docstring, as wrapt answers it."""
        return self.__wrapped__.__doc__  # type: ignore[no-any-return]

    def __init__(self, wrapped: Any, routes: Routes, recorder: Recorder, root: Routes) -> None:
        super().__init__(wrapped)
        self._self_routes = routes
        self._self_recorder = recorder
        self._self_root = root

    def __getattr__(self, name: str) -> Any:
        """A name the proxy does not have: a routed one met for the first time, or the client's own."""
        route = self._self_routes.get(name)
        if route is None and not (name in CLIENT_COPIES and self._self_routes is self._self_root):
            return getattr(self.__wrapped__, name)
        return self._self_child(name, route)

    def _self_child(self, name: str, route: Routes | Method | None) -> Any:
        """The routed name's child, made now and kept on the proxy (AttributeError: the client lacks it)."""
        target = getattr(self.__wrapped__, name)
        child: Any
        if isinstance(route, Method):
            child = _tracked_method(target, route, self._self_recorder)
        elif route is None:  # with_options(...) / copy(...): a new client, tracked the same way
            child = _rewrapping(target, self._self_root, self._self_recorder)
        else:
            child = tracked_client(target, route, self._self_recorder, self._self_root)
        if name.isidentifier():
            # the class has this name (a `_Routed`), so the proxy's setattr keeps the value on the proxy (in
            # its own instance dict, never the client's), where attribute lookup finds it before the descriptor
            setattr(self, name, child)
        return child

    def __enter__(self) -> Any:
        entered = self.__wrapped__.__enter__()
        return self if entered is self.__wrapped__ else entered

    async def __aenter__(self) -> Any:
        entered = await self.__wrapped__.__aenter__()
        return self if entered is self.__wrapped__ else entered

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


class _Routed:
    """A routed name on a `TrackedClient` class. A non-data descriptor (no `__set__`): once the first
    access has made the child and kept it on the proxy, attribute lookup finds the proxy's own value first
    and never calls this again."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, proxy: TrackedClient | None, owner: type | None = None) -> Any:
        if proxy is None:
            return self
        return proxy._self_child(self.name, proxy._self_routes.get(self.name))


#: the TrackedClient subclass for each set of routed names (route tables are module constants: few)
_CLASSES: dict[frozenset[str], type[TrackedClient]] = {}


def tracked_client(wrapped: Any, routes: Routes, recorder: Recorder, root: Routes) -> TrackedClient:
    """`wrapped` with the methods in `routes` billed through `recorder` (`root`: the client's whole table)."""
    names = frozenset(name for name in (*routes, *(CLIENT_COPIES if routes is root else ())) if name.isidentifier())
    kind = _CLASSES.get(names)
    if kind is None:
        kind = _CLASSES[names] = type("TrackedClient", (TrackedClient,), {
            "__slots__": (), "__module__": __name__, **{name: _Routed(name) for name in names},
        })
    return kind(wrapped, routes, recorder, root)


def _rewrapping(target: Callable[..., Any], root: Routes, recorder: Recorder) -> Callable[..., Any]:
    @functools.wraps(target)
    def copy(*args: Any, **kwargs: Any) -> Any:
        return tracked_client(target(*args, **kwargs), root, recorder, root)

    return copy


def _tracked_method(target: Callable[..., Any], method: Method, recorder: Recorder) -> Callable[..., Any]:
    """The method with billing added: same signature, same return value, same exceptions."""
    # `_ask_for_usage`'s first test, made once: most calls (not streamed) need not call it
    asks_always = method.asks_for_usage and method.streams != "when_asked"
    asks_when_streamed = method.asks_for_usage and method.streams == "when_asked"
    start = recorder.start
    if inspect.iscoroutinefunction(target):

        @functools.wraps(target)
        async def tracked_async(*args: Any, **kwargs: Any) -> Any:
            hide = (asks_always or (asks_when_streamed and kwargs.get("stream") is True)) \
                and _ask_for_usage(method, kwargs)
            call = start(kwargs)
            return _observe(await target(*args, **kwargs), method, kwargs, hide, call)

        return tracked_async

    # `_observe`'s most common case, made here without its frame: the answer is the response, billed now
    read, counts_of = method.read, method.counts
    answers = read is not None and not method.raw and method.streams in ("never", "when_asked")
    never_streams = method.streams == "never"
    record_plain = getattr(recorder, "record_plain", None) if answers and counts_of is not None else None
    if record_plain is not None:
        assert counts_of is not None and read is not None
        return _tracked_plain(target, method, recorder, record_plain, counts_of, read)

    @functools.wraps(target)
    def tracked(*args: Any, **kwargs: Any) -> Any:
        hide = (asks_always or (asks_when_streamed and kwargs.get("stream") is True)) \
            and _ask_for_usage(method, kwargs)
        call = start(kwargs)
        result = target(*args, **kwargs)
        if isinstance(result, CoroutineType):  # an async method behind a sync decorator (the SDKs have some)
            return _observe_when_done(result, method, kwargs, hide, call)
        if answers and (never_streams or kwargs.get("stream") is not True):
            try:
                counts = counts_of(result) if counts_of is not None else None
                if counts is not None:
                    call.record_counts(counts)
                else:
                    call.record(read(result, kwargs))  # type: ignore[misc]
            except Exception:
                logger.exception(_UNTRACKED)
            return result
        return _observe(result, method, kwargs, hide, call)

    return tracked


def _tracked_plain(target: Callable[..., Any], method: Method, recorder: Recorder,
                   record_plain: Callable[[int, dict[str, Any], PlainCounts], None],
                   counts_of: Callable[[Any], PlainCounts | None],
                   read: Callable[[Any, Mapping[str, Any]], Observation]) -> Callable[..., Any]:
    """`_tracked_method`'s sync method for a recorder with `record_plain` and a method whose answers can be
    counts (`Method.counts`): a call that is not streamed is billed without a `Recording` when its answer
    is nothing but counts; its instant is read before the call, as `start` would read it. (Who pays is
    the same read before or after: a sync call runs in its caller's context.) 4.4 us less than a `Recording`
    started and recorded, timed alone right after a real call (bench/llm_overhead.py --parts)."""
    asks_always = method.asks_for_usage and method.streams != "when_asked"
    asks_when_streamed = method.asks_for_usage and method.streams == "when_asked"
    start, time_ns = recorder.start, time.time_ns
    never_streams = method.streams == "never"

    @functools.wraps(target)
    def tracked(*args: Any, **kwargs: Any) -> Any:
        streamed = not never_streams and kwargs.get("stream") is True
        hide = (asks_always or (asks_when_streamed and streamed)) and _ask_for_usage(method, kwargs)
        if streamed:  # the Recording outlives this call
            call = start(kwargs)
            result = target(*args, **kwargs)
            if isinstance(result, CoroutineType):
                return _observe_when_done(result, method, kwargs, hide, call)
            return _observe(result, method, kwargs, hide, call)
        now_ns = time_ns()
        result = target(*args, **kwargs)
        if isinstance(result, CoroutineType):  # an async method behind a sync decorator (the SDKs have some)
            return _observe_when_done(result, method, kwargs, hide, start(kwargs, now_ns))  # type: ignore[call-arg]
        try:
            counts = counts_of(result)
            if counts is not None:
                record_plain(now_ns, kwargs, counts)
            else:
                start(kwargs, now_ns).record(read(result, kwargs))  # type: ignore[call-arg]
        except Exception:
            logger.exception(_UNTRACKED)
        return result

    return tracked


async def _observe_when_done(
    pending: Coroutine[Any, Any, Any], method: Method, kwargs: dict[str, Any], hide: bool, call: Recording,
) -> Any:
    return _observe(await pending, method, kwargs, hide, call)


def _ask_for_usage(method: Method, kwargs: dict[str, Any]) -> bool:
    """Request stream usage where the API only sends it when asked; True if the caller had not asked."""
    if not method.asks_for_usage or (method.streams == "when_asked" and kwargs.get("stream") is not True):
        return False
    options = kwargs.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    kwargs["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


_UNTRACKED = "openmonetize: could not track this LLM call; the response is returned untouched"


def _observe(result: Any, method: Method, kwargs: dict[str, Any], hide: bool, call: Recording) -> Any:
    try:
        if method.raw:
            if not hasattr(type(result), "parse"):
                return TrackedRawResponseManager(result, method, kwargs, hide, call)
            if method.binary:  # the response arrived (a failed one raised): bill it now, parsed or not
                assert method.read is not None
                call.record(method.read(result, kwargs))
                return result
            return TrackedRawResponse(result, method, kwargs, hide, call)
        streams = method.streams
        if streams == "never" or (streams == "when_asked" and kwargs.get("stream") is not True):
            assert method.read is not None
            call.record(method.read(result, kwargs))
            return result
        if streams == "manager":
            return TrackedStreamManager(result, method, hide, call)
        assert method.tally is not None
        tally = method.tally(hide)
        tally.begin(result, kwargs)
        return _stream_proxy(result)(result, tally, call.record)
    except Exception:
        logger.exception(_UNTRACKED)
        return result


class _StreamBase(wrapt.ObjectProxy[Any]):
    """What sync and async streams share: the tally and recording exactly once."""

    def __init__(self, wrapped: Any, tally: Tally, on_end: Callable[[Observation, str], None] | None) -> None:
        super().__init__(wrapped)
        self._self_tally = tally
        self._self_on_end = on_end

    def _self_observe(self, item: Any) -> bool:
        try:
            self._self_tally.items += 1
            return self._self_tally.observe(item)
        except Exception:
            logger.exception("openmonetize: could not read usage from a stream item; passing it on")
            return False

    def _self_end(self, how: str) -> None:
        on_end, self._self_on_end = self._self_on_end, None
        tally = self._self_tally
        if on_end is None or (how == ERROR and tally.items == 0):
            return  # a stream that failed before anything arrived is a provider error: nothing to bill
        on_end(tally.seen, COMPLETED if tally.complete else how)

    def close(self) -> Any:
        self._self_end(CLOSED)
        return self.__wrapped__.close()

    def __del__(self) -> None:
        if hasattr(self, "_self_on_end"):  # not when __init__ failed half-way
            self._self_end(ABANDONED)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


class TrackedStream(_StreamBase):
    """A sync stream (`openai.Stream`, `anthropic.Stream`, Gemini's generator): recorded when it ends."""

    def __iter__(self) -> Iterator[Any]:
        return self._self_iterate()

    def _self_iterate(self) -> Iterator[Any]:
        try:
            for item in self.__wrapped__:
                if not self._self_observe(item):
                    yield item
        except GeneratorExit:  # the caller broke out of the loop
            self._self_end(CLOSED)
            raise
        except BaseException:
            self._self_end(ERROR)
            raise
        self._self_end(COMPLETED)

    def __next__(self) -> Any:
        while True:
            try:
                item = self.__wrapped__.__next__()
            except StopIteration:
                self._self_end(COMPLETED)
                raise
            except BaseException:
                self._self_end(ERROR)
                raise
            if not self._self_observe(item):
                return item

    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Any:
        self._self_end(ERROR if exc_type is not None else CLOSED)
        return self.__wrapped__.__exit__(exc_type, exc, tb)


class TrackedAsyncStream(_StreamBase):
    """An async stream (`openai.AsyncStream`, `anthropic.AsyncStream`, Gemini's async generator)."""

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._self_aiterate()

    async def _self_aiterate(self) -> AsyncIterator[Any]:
        try:
            async for item in self.__wrapped__:
                if not self._self_observe(item):
                    yield item
        except GeneratorExit:
            self._self_end(CLOSED)
            raise
        except BaseException:
            self._self_end(ERROR)
            raise
        self._self_end(COMPLETED)

    async def __anext__(self) -> Any:
        while True:
            try:
                item = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                self._self_end(COMPLETED)
                raise
            except BaseException:
                self._self_end(ERROR)
                raise
            if not self._self_observe(item):
                return item

    def aclose(self) -> Any:
        self._self_end(CLOSED)
        return self.__wrapped__.aclose()

    async def __aenter__(self) -> Any:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Any:
        self._self_end(ERROR if exc_type is not None else CLOSED)
        return await self.__wrapped__.__aexit__(exc_type, exc, tb)


class TrackedDualStream(TrackedStream, TrackedAsyncStream):
    """A stream that is both iterable and async-iterable (LiteLLM's `CustomStreamWrapper`, whatever call made it)."""


def _stream_proxy(stream: Any) -> type[_StreamBase]:
    kind = type(stream)
    if hasattr(kind, "__anext__"):
        return TrackedDualStream if hasattr(kind, "__next__") else TrackedAsyncStream
    return TrackedStream


class TrackedStreamManager(wrapt.ObjectProxy[Any]):
    """The SDKs' `.stream()` context managers: recorded from the SDK's own snapshot when the block exits.

    The snapshot is what the SDK accumulated whichever way the caller read the stream (iterating,
    `text_stream`, `get_final_message()`), so reading it at exit sees every path.
    """

    def __init__(self, wrapped: Any, method: Method, hide: bool, call: Recording) -> None:
        super().__init__(wrapped)
        self._self_method = method
        self._self_hide = hide
        self._self_call = call
        self._self_stream: Any = None

    def _self_view(self, stream: Any) -> Any:
        self._self_stream = stream
        tally = self._self_method.tally
        if not self._self_hide or tally is None:
            return stream
        try:  # only to hide the usage chunk the caller did not ask for; recording happens at exit
            return _stream_proxy(stream)(stream, tally(True), None)
        except Exception:
            logger.exception("openmonetize: could not wrap this stream; it is returned untouched")
            return stream

    def _self_record(self, exc_type: type[BaseException] | None) -> None:
        try:
            assert self._self_method.snapshot is not None
            observation, complete = self._self_method.snapshot(self._self_stream)
            end = COMPLETED if complete else (ERROR if exc_type is not None else CLOSED)
            self._self_call.record(observation, end)
        except Exception:
            logger.exception("openmonetize: could not track this LLM stream")

    def __enter__(self) -> Any:
        return self._self_view(self.__wrapped__.__enter__())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Any:
        self._self_record(exc_type)
        return self.__wrapped__.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Any:
        return self._self_view(await self.__wrapped__.__aenter__())

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Any:
        self._self_record(exc_type)
        return await self.__wrapped__.__aexit__(exc_type, exc, tb)


class TrackedRawResponse(wrapt.ObjectProxy[Any]):
    """`with_raw_response` answers: recorded when the caller parses them, once, as the parsed call would be.

    `parse()` is where the SDK turns the body into the response (or stream); reading only headers or
    `.text` leaves the call untracked, as documented.
    """

    def __init__(self, wrapped: Any, method: Method, kwargs: dict[str, Any], hide: bool, call: Recording) -> None:
        super().__init__(wrapped)
        self._self_call = (replace(method, raw=False), kwargs, hide, call)
        self._self_parsed: Any = _UNPARSED

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        if self._self_parsed is not _UNPARSED:
            return self._self_parsed
        parsed = self.__wrapped__.parse(*args, **kwargs)
        if inspect.iscoroutine(parsed):  # AsyncAPIResponse.parse
            return self._self_parse_later(parsed)
        self._self_parsed = _observe(parsed, *self._self_call)
        return self._self_parsed

    async def _self_parse_later(self, pending: Coroutine[Any, Any, Any]) -> Any:
        self._self_parsed = _observe(await pending, *self._self_call)
        return self._self_parsed


_UNPARSED = object()


class TrackedRawResponseManager(wrapt.ObjectProxy[Any]):
    """`with_streaming_response` answers: a context manager around the raw response."""

    def __init__(self, wrapped: Any, method: Method, kwargs: dict[str, Any], hide: bool, call: Recording) -> None:
        super().__init__(wrapped)
        self._self_call = (method, kwargs, hide, call)

    def __enter__(self) -> Any:
        return self._self_track(self.__wrapped__.__enter__())

    async def __aenter__(self) -> Any:
        return self._self_track(await self.__wrapped__.__aenter__())

    def _self_track(self, response: Any) -> Any:
        method, kwargs, hide, call = self._self_call
        try:
            if method.binary:  # read with iter_bytes() / stream_to_file(), never parsed: bill on arrival
                assert method.read is not None
                call.record(method.read(response, kwargs))
                return response
            return TrackedRawResponse(response, method, kwargs, hide, call)
        except Exception:
            logger.exception(_UNTRACKED)
            return response
